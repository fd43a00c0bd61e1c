"""Save / load round trips and every way a saved artifact can be wrong."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from cotprompt import CoTPipeline
from cotprompt.artifact.format import CONFIG_NAME, WEIGHTS_NAME
from cotprompt.errors import ArtifactError, ConfigError, UnknownComponentError

CLASSES = ["cat", "dog", "sea turtle", "traffic light"]


def make_pipeline(backbone, method="cocoop", **tuner_config):
    pipeline = CoTPipeline.for_method(
        method, backbone=backbone, class_names=CLASSES, tuner_config=tuner_config
    )
    with torch.no_grad():  # distinct, non-initial values
        for param in pipeline.model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.05)
    return pipeline


@pytest.fixture
def pixels():
    return torch.randn(5, 3, 32, 32)


@pytest.mark.parametrize("method", ["coop", "cocoop", "cotpt"])
def test_round_trip_gives_identical_logits(tiny_backbone, tmp_path, pixels, method):
    pipeline = make_pipeline(tiny_backbone, method)
    folder = pipeline.save_pretrained(tmp_path / "artifact")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [CONFIG_NAME, WEIGHTS_NAME, "README.md"]
    )
    loaded = CoTPipeline.from_pretrained(folder)  # rebuilds the backbone from its spec
    torch.testing.assert_close(loaded.logits(pixels), pipeline.logits(pixels), rtol=0, atol=0)
    assert loaded.class_names == CLASSES
    assert loaded.chain == pipeline.chain


def test_config_records_components_and_only_trainable_tensors(tiny_backbone, tmp_path):
    pipeline = make_pipeline(tiny_backbone, "cotpt")
    folder = pipeline.save_pretrained(tmp_path / "a")
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["format_version"] == 1
    assert {config[k]["name"] for k in ("backbone", "generator", "tuner", "aggregator")} == {
        "open_clip",
        "rule-based",
        "cotpt",
        "adaptive",
    }
    assert config["tuner"]["package"] == "cotprompt"
    assert config["task"]["labels"] == CLASSES
    tensors = load_file(str(folder / WEIGHTS_NAME))
    # exactly the model's trainable state, bit for bit: the tuner's context and the adaptive
    # aggregator's controller, and nothing of the frozen backbone
    state = pipeline.model.trainable_state()
    assert set(tensors) == set(state)
    assert {name.split(".")[0] for name in tensors} == {"tuner", "aggregator"}
    for name, value in state.items():
        assert tensors[name].numel() > 0, name
        assert tensors[name].dtype == value.dtype and tensors[name].shape == value.shape, name
        assert torch.equal(tensors[name], value.detach().cpu()), name
    backbone_tensors = {t.data_ptr() for t in pipeline.backbone.state_dict().values()}
    assert not backbone_tensors & {v.data_ptr() for v in state.values()}
    records = config["weights"]["tensors"]
    assert {name: r["shape"] for name, r in records.items()} == {
        name: list(v.shape) for name, v in state.items()
    }
    assert {r["dtype"] for r in records.values()} == {"F32"}  # safetensors' name of float32
    card = (folder / "README.md").read_text()
    assert "library_name: cotprompt" in card and "sea turtle" in card


def test_save_keeps_custom_card_text(tiny_backbone, tmp_path):
    pipeline = make_pipeline(tiny_backbone, "coop")
    folder = pipeline.save_pretrained(tmp_path / "a")
    card = (folder / "README.md").read_text()
    (folder / "README.md").write_text(card + "\n## My notes\nTrained on my cats.\n")
    pipeline.save_pretrained(folder)
    again = (folder / "README.md").read_text()
    assert "Trained on my cats." in again and again.count("cotprompt:generated:start") == 1


def test_failed_save_leaves_previous_artifact_intact(tiny_backbone, tmp_path, monkeypatch, pixels):
    pipeline = make_pipeline(tiny_backbone, "coop")
    folder = pipeline.save_pretrained(tmp_path / "a")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    old_logits = pipeline.logits(pixels)
    with torch.no_grad():
        pipeline.tuner.ctx[0].add_(1.0)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("cotprompt.artifact.format.write_text_atomic", crash)
    with pytest.raises(OSError, match="disk full"):
        pipeline.save_pretrained(folder)
    # nothing was committed: the folder holds the previous artifact, which loads
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    loaded = CoTPipeline.from_pretrained(folder, backbone=tiny_backbone)
    torch.testing.assert_close(loaded.logits(pixels), old_logits, rtol=0, atol=0)


def _edit_config(folder, edit):
    path = folder / CONFIG_NAME
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


@pytest.fixture
def saved(tiny_backbone, tmp_path):
    return make_pipeline(tiny_backbone, "cocoop").save_pretrained(tmp_path / "saved")


def test_newer_format_version_is_refused(saved, tiny_backbone):
    _edit_config(saved, lambda c: c.update(format_version=99, library_version="9.0"))
    with pytest.raises(ArtifactError, match=r"format 99.*pip install -U cotprompt"):
        CoTPipeline.from_pretrained(saved, backbone=tiny_backbone)


def test_component_from_missing_plugin_names_the_package(saved, tiny_backbone):
    def edit(config):
        config["tuner"].update(name="fancy-tuner", package="cotprompt-fancy")

    _edit_config(saved, edit)
    with pytest.raises(
        UnknownComponentError, match=r"fancy-tuner[\s\S]*pip install cotprompt-fancy"
    ):
        CoTPipeline.from_pretrained(saved, backbone=tiny_backbone)


def test_tampered_config_tensor_record_is_refused(saved, tiny_backbone):
    def edit(config):
        config["weights"]["tensors"]["tuner.ctx.0"]["shape"] = [7, 64]

    _edit_config(saved, edit)
    with pytest.raises(ArtifactError, match=r"tuner.ctx.0.*does not match the config's record"):
        CoTPipeline.from_pretrained(saved, backbone=tiny_backbone)


def test_tampered_tuner_config_changes_shapes(saved, tiny_backbone):
    _edit_config(saved, lambda c: c["tuner"]["config"].update(ctx_init=None, n_ctx=8))
    with pytest.raises(
        ArtifactError, match=r"tuner.ctx.0: shape \[4, 64\], the model needs \[8, 64\]"
    ):
        CoTPipeline.from_pretrained(saved, backbone=tiny_backbone)


def test_invalid_component_config_is_refused(saved, tiny_backbone):
    _edit_config(saved, lambda c: c["tuner"]["config"].update(bogus=1))
    with pytest.raises(ConfigError, match="bogus"):
        CoTPipeline.from_pretrained(saved, backbone=tiny_backbone)


def _rewrite_weights(folder, change):
    tensors = load_file(str(folder / WEIGHTS_NAME))
    change(tensors)
    save_file(tensors, str(folder / WEIGHTS_NAME))
    # keep the checksum and the record consistent so that the model's needs refuse the file
    from cotprompt.artifact.format import dtype_name, file_sha256

    record = {name: {"shape": list(t.shape), "dtype": dtype_name(t.dtype)}
              for name, t in sorted(tensors.items())}
    _edit_config(folder, lambda c: c["weights"].update(
        sha256=file_sha256(folder / WEIGHTS_NAME), tensors=record))


def test_wrong_tensor_names_are_refused(saved, tiny_backbone):
    _rewrite_weights(
        saved, lambda t: t.update({"tuner.extra": torch.zeros(2)}) or t.pop("tuner.ctx.0")
    )
    with pytest.raises(
        ArtifactError, match=r"missing tensors: tuner.ctx.0[\s\S]*unexpected tensors: tuner.extra"
    ):
        CoTPipeline.from_pretrained(saved, backbone=tiny_backbone)


def test_wrong_dtype_is_refused(saved, tiny_backbone):
    _rewrite_weights(saved, lambda t: t.update({"tuner.ctx.0": t["tuner.ctx.0"].half()}))
    with pytest.raises(ArtifactError, match=r"tuner.ctx.0: dtype F16, the model needs F32"):
        CoTPipeline.from_pretrained(saved, backbone=tiny_backbone)


def test_truncated_weights_are_refused(saved, tiny_backbone):
    data = (saved / WEIGHTS_NAME).read_bytes()
    (saved / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="checksum"):
        CoTPipeline.from_pretrained(saved, backbone=tiny_backbone)
    _edit_config(saved, lambda c: c["weights"].pop("sha256"))
    with pytest.raises(ArtifactError, match="records no weights checksum"):
        CoTPipeline.from_pretrained(saved, backbone=tiny_backbone)


def test_missing_files_are_reported(saved, tiny_backbone, tmp_path):
    (saved / WEIGHTS_NAME).unlink()
    with pytest.raises(ArtifactError, match=r"prompt_weights.safetensors is missing"):
        CoTPipeline.from_pretrained(saved, backbone=tiny_backbone)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactError, match=r"cotprompt_config.json is missing"):
        CoTPipeline.from_pretrained(empty)
    (empty / CONFIG_NAME).write_text("{not json")
    with pytest.raises(ArtifactError, match="cannot read"):
        CoTPipeline.from_pretrained(empty)


def test_mismatching_backbone_is_refused(saved):
    from cotprompt.backbones import OpenCLIPBackbone, OpenCLIPBackboneConfig

    other = OpenCLIPBackbone(
        OpenCLIPBackboneConfig(model_name="cotprompt-tiny", pretrained=None, init_seed=5)
    )
    with pytest.raises(ArtifactError, match="differs from the one the prompts were trained for"):
        CoTPipeline.from_pretrained(saved, backbone=other)


def test_unified_context_transfers_to_new_classes(saved, tiny_backbone, pixels):
    pipeline = CoTPipeline.from_pretrained(saved, backbone=tiny_backbone)
    trained_logits = pipeline.logits(pixels)
    new_classes = ["bicycle", "cat", "mountain"]
    pipeline.set_classes(new_classes)
    assert pipeline.class_names == new_classes
    logits = pipeline.logits(pixels)
    assert logits.shape == (5, 3)
    # the learnt context is applied to each label alone: "cat" scores as it did among the
    # classes it was saved with
    torch.testing.assert_close(logits[:, 1], trained_logits[:, CLASSES.index("cat")],
                               rtol=1e-5, atol=1e-5)
    predictions = pipeline.predict(pixels)
    assert [p.label for p in predictions] == [new_classes[i] for i in logits.argmax(-1).tolist()]


def test_class_specific_context_refuses_new_classes(tiny_backbone, tmp_path):
    pipeline = make_pipeline(tiny_backbone, "coop", class_specific=True)
    folder = pipeline.save_pretrained(tmp_path / "csc")
    loaded = CoTPipeline.from_pretrained(folder, backbone=tiny_backbone)
    with pytest.raises(ConfigError, match=r"class-specific context .* cannot be applied"):
        loaded.set_classes(["bicycle", "cat", "mountain"])


def test_saving_without_classes_is_refused(tiny_backbone, tmp_path):
    pipeline = CoTPipeline.for_method("coop", backbone=tiny_backbone)
    with pytest.raises(ConfigError, match="no classes yet"):
        pipeline.save_pretrained(tmp_path / "x")


def test_missing_generator_plugin_does_not_block_loading(saved, tiny_backbone, pixels, tmp_path):
    """Artifacts store the generated chain: the generator is only needed for new labels."""
    original = CoTPipeline.from_pretrained(saved, backbone=tiny_backbone)

    def edit(config):
        config["generator"].update(name="llm-writer", package="cotprompt-llm", config={"x": 1})

    _edit_config(saved, edit)
    loaded = CoTPipeline.from_pretrained(saved, backbone=tiny_backbone)
    torch.testing.assert_close(loaded.logits(pixels), original.logits(pixels), rtol=0, atol=0)
    with pytest.raises(
        ConfigError, match=r"needs the generator 'llm-writer' \(package 'cotprompt-llm'\)"
    ):
        loaded.set_classes(["bicycle", "mountain"])
    resaved = loaded.save_pretrained(tmp_path / "again")
    config = json.loads((resaved / CONFIG_NAME).read_text())
    assert config["generator"] == {
        "name": "llm-writer",
        "package": "cotprompt-llm",
        "config": {"x": 1},
    }
