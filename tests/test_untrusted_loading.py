"""A shared artifact, Hub repository or config file never makes cotprompt run code.

Every place a file could point a loader at gets a pickle whose ``__reduce__`` creates a marker
file: a local checkpoint beside the config, an ``hf-hub:`` repository on the test Hub server (the
artifact's own repository), a ``local-dir:`` folder, and a training config file; with and without
the free-form ``extra`` arguments that would switch open_clip's ``weights_only`` off. The marker
must never appear and each refusal is one line. The caller's explicit opt-in (``allow_pickle``)
still loads a benign pickle; NaN weights and a missing checksum are refused by every entry point.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from test_hub import hf_home, hub  # noqa: F401 - fixtures: the test Hub server

from cotprompt import CoTPipeline
from cotprompt.artifact.format import CONFIG_NAME, WEIGHTS_NAME, file_sha256
from cotprompt.backbones import OpenCLIPBackbone, OpenCLIPBackboneConfig
from cotprompt.errors import ArtifactError, ConfigError, CotpromptError, UnsafeSettingError
from cotprompt.hub import check_artifact, pull, push_folder

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["cat", "dog", "bird"]
TINY = {"model_name": "cotprompt-tiny", "pretrained": None}


class _Marker:
    """Unpickling this object creates the file ``path`` (stands for arbitrary code)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def write_marker_pickle(path: Path, marker: Path, *, zip_format: bool = True) -> Path:
    """A checkpoint that writes ``marker`` when unpickled (torch.save zip or raw pickle)."""
    payload = {"state_dict": {"x": torch.zeros(1)}, "boom": _Marker(marker)}
    if zip_format:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    return path


def tiny_state() -> dict[str, torch.Tensor]:
    backbone = OpenCLIPBackbone(OpenCLIPBackboneConfig(**TINY, init_seed=7))
    return {k: v.clone() for k, v in backbone.model.state_dict().items()}


def save_tiny_pipeline(folder: Path, tiny_backbone: OpenCLIPBackbone) -> Path:
    pipeline = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES,
                                      device="cpu")
    return pipeline.save_pretrained(folder)


def edit_config(folder: Path, change: Any) -> None:
    path = folder / CONFIG_NAME
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def set_backbone(folder: Path, **options: Any) -> None:
    edit_config(folder, lambda c: c["backbone"]["config"].update(options))


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert "\n" not in message, message
    return message


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cotprompt", *args], capture_output=True,
                          text=True, timeout=180, cwd=REPO_ROOT)


def assert_cli_refused(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture
def saved(tmp_path: Path, tiny_backbone: OpenCLIPBackbone) -> Path:
    return save_tiny_pipeline(tmp_path / "artifact", tiny_backbone)


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any use of Python's unpickler (torch.load included, even weights_only) fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a file was unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)


# -- a local checkpoint beside the config ------------------------------------------------------


@pytest.mark.parametrize("name", ["clip.pt", "clip.bin", "clip", "clip.NPZ", "clip.Npy",
                                  "clip.safetensors"])
@pytest.mark.parametrize("zip_format", [True, False], ids=["torch-zip", "raw-pickle"])
@pytest.mark.parametrize("extra", [{}, {"weights_only": False}], ids=["plain", "extra"])
def test_local_pickle_named_by_an_artifact_never_runs(saved: Path, tmp_path: Path, name: str,
                                                      zip_format: bool, extra: dict,
                                                      no_unpickling: None) -> None:
    marker = tmp_path / "pwned"
    evil = write_marker_pickle(tmp_path / name, marker, zip_format=zip_format)
    set_backbone(saved, pretrained=str(evil), extra=extra)
    with pytest.raises(CotpromptError) as caught:
        CoTPipeline.from_pretrained(saved)
    message = one_line(caught.value)
    if extra:
        assert "extra" in message
    elif name.endswith((".npz", ".npy")):  # upper case: open_clip would torch.load it
        assert "numpy" in message
    else:  # by content: a pickle named .safetensors or .NPZ is still a pickle
        assert "pickle" in message and "--allow-pickle" in message
    if extra:  # the Hub's check refuses it too, without building anything
        with pytest.raises(UnsafeSettingError, match="extra"):
            check_artifact(saved)
    assert not marker.exists()


def test_predict_on_such_an_artifact_fails_in_one_line(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = write_marker_pickle(saved / "clip.pt", marker)
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(image)
    for extra in ({}, {"weights_only": False}):
        set_backbone(saved, pretrained=str(evil), extra=extra)
        proc = run_cli("predict", str(saved), str(image), "--json")
        assert_cli_refused(proc, "extra" if extra else "pickle")
        assert not marker.exists()


def test_caller_only_settings_in_an_artifact_are_refused(saved: Path) -> None:
    set_backbone(saved, allow_pickle=True)
    with pytest.raises(UnsafeSettingError, match="only the caller may set"):
        CoTPipeline.from_pretrained(saved)
    with pytest.raises(UnsafeSettingError, match="allow_pickle"):
        check_artifact(saved)


def test_lm_generator_trust_remote_code_in_an_artifact_is_refused(saved: Path) -> None:
    def use_lm(config: dict) -> None:
        config["generator"] = {"name": "lm", "package": "cotprompt",
                               "config": {"model": "evil/remote-code", "trust_remote_code": True}}

    edit_config(saved, use_lm)
    with pytest.raises(UnsafeSettingError, match=r"trust_remote_code.*--trust-remote-code"):
        CoTPipeline.from_pretrained(saved)


def test_machine_local_folders_of_an_artifact_are_ignored(saved: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "their-machine"
    edit_config(saved, lambda c: c["training"].update(checkpoint_dir=str(elsewhere / "ckpt"),
                                                      feature_cache_dir=str(elsewhere / "fc")))
    set_backbone(saved, cache_dir=str(elsewhere / "cache"))
    loaded = CoTPipeline.from_pretrained(saved)
    assert loaded.training.checkpoint_dir is None
    assert loaded.training.feature_cache_dir is None
    assert loaded.backbone.config.cache_dir is None
    assert not elsewhere.exists()


def _tiny_model_cfg() -> dict:
    return json.loads((REPO_ROOT / "cotprompt" / "backbones" / "model_configs" /
                       "cotprompt-tiny.json").read_text())


@pytest.mark.parametrize(("text_cfg", "needle"), [
    ({"hf_tokenizer_name": "x", "tokenizer_kwargs": {"trust_remote_code": True}},
     "trust_remote_code"),
    ({"hf_model_name": "attacker/payload"}, "Hugging Face text tower"),
])
def test_local_dir_model_config_cannot_reach_code(saved: Path, tmp_path: Path, text_cfg: dict,
                                                  needle: str, no_unpickling: None) -> None:
    folder = tmp_path / "clip-dir"
    folder.mkdir()
    config = _tiny_model_cfg()
    config["text_cfg"].update(text_cfg)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    save_file(tiny_state(), str(folder / "open_clip_model.safetensors"))
    set_backbone(saved, model_name=f"local-dir:{folder}", pretrained=None)
    with pytest.raises(ConfigError) as caught:
        CoTPipeline.from_pretrained(saved)
    assert needle in one_line(caught.value)


@pytest.mark.parametrize("pickle_name", ["open_clip_pytorch_model.pth",
                                         "open_clip_pytorch_model.bin"])
def test_local_dir_refuses_the_pickle_open_clip_would_prefer(
        saved: Path, tmp_path: Path, pickle_name: str, no_unpickling: None) -> None:
    # open_clip ranks open_clip_pytorch_model.* above other .safetensors names
    folder = tmp_path / "clip-dir"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": _tiny_model_cfg()}))
    save_file(tiny_state(), str(folder / "model.safetensors"))
    write_marker_pickle(folder / pickle_name, tmp_path / "pwned")
    set_backbone(saved, model_name=f"local-dir:{folder}", pretrained=None)
    with pytest.raises(ConfigError, match=rf"{pickle_name}, are not safetensors"):
        CoTPipeline.from_pretrained(saved)


@pytest.mark.parametrize(("change", "needle"), [
    (lambda cfg: cfg["text_cfg"].update(vocab_size=100), "does not run as a CLIP model"),
    (lambda cfg: cfg["vision_cfg"].update(output_tokens=True), "does not run as a CLIP model"),
])
def test_local_dir_architectures_that_cannot_run_fail_in_one_line(
        saved: Path, tmp_path: Path, change: Any, needle: str) -> None:
    folder = tmp_path / "clip-dir"
    folder.mkdir()
    config = _tiny_model_cfg()
    change(config)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    set_backbone(saved, model_name=f"local-dir:{folder}", pretrained=None)
    with pytest.raises(ConfigError) as caught:
        CoTPipeline.from_pretrained(saved)
    assert needle in one_line(caught.value)


def test_oversized_tuner_options_are_refused_before_allocating(saved: Path) -> None:
    edit_config(saved, lambda c: c["tuner"]["config"].update(n_ctx=10**8))
    with pytest.raises(ConfigError, match="n_ctx"):
        CoTPipeline.from_pretrained(saved)


def test_local_dir_with_pickle_weights_is_refused(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "clip-dir"
    folder.mkdir()
    config = json.loads((Path(__file__).parents[1] / "cotprompt" / "backbones" /
                         "model_configs" / "cotprompt-tiny.json").read_text())
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    write_marker_pickle(folder / "open_clip_pytorch_model.bin", marker)
    set_backbone(saved, model_name=f"local-dir:{folder}")
    with pytest.raises(ConfigError) as caught:
        CoTPipeline.from_pretrained(saved)
    assert "pickle" in one_line(caught.value)
    assert not marker.exists()
    # the same folder with safetensors weights loads
    (folder / "open_clip_pytorch_model.bin").unlink()
    state = tiny_state()
    save_file(state, str(folder / "open_clip_model.safetensors"))
    loaded = CoTPipeline.from_pretrained(saved)
    torch.testing.assert_close(loaded.backbone.model.state_dict()["text_projection"],
                               state["text_projection"])


def test_records_carry_no_machine_local_folders(tmp_path: Path) -> None:
    backbone = OpenCLIPBackbone(OpenCLIPBackboneConfig(**TINY, cache_dir=str(tmp_path / "c")))
    pipeline = CoTPipeline.for_method("coop", backbone=backbone, class_names=CLASSES,
                                      device="cpu")
    folder = pipeline.save_pretrained(tmp_path / "a")
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert "cache_dir" not in config["backbone"]["config"]
    assert "checkpoint_dir" not in config["training"]
    assert config["backbone"]["quick_gelu"] is True  # what was built (cotprompt-tiny)
    # a backbone differing only in its cache folder is the same backbone
    other = OpenCLIPBackbone(OpenCLIPBackboneConfig(**TINY, cache_dir=str(tmp_path / "d")))
    CoTPipeline.from_pretrained(folder, backbone=other)


def test_malformed_records_are_refused_before_building(saved: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("the backbone was built")

    monkeypatch.setattr(OpenCLIPBackbone, "__init__", no_build)
    cases = [
        (lambda c: c.update(metrics="x"), "metrics"),
        (lambda c: c["chain"].update(steps="x"), "malformed prompt chain"),
        (lambda c: c["task"].update(labels=["a", "b", "c"]), "differ"),
        (lambda c: c["task"].update(kind=3), "task.kind"),
        (lambda c: c["backbone"]["config"].update(init_seed=10**30), "init_seed"),
        (lambda c: c["backbone"]["config"].update(precision="evil"), "precision"),
        (lambda c: c["weights"].update(sha256=5), "checksum"),
    ]
    for change, needle in cases:
        original = (saved / CONFIG_NAME).read_text()
        edit_config(saved, change)
        for check in (CoTPipeline.from_pretrained, check_artifact):
            with pytest.raises(CotpromptError) as caught:
                check(saved)
            assert needle in one_line(caught.value), caught.value
        (saved / CONFIG_NAME).write_text(original)


def test_fit_checks_its_folders_before_training(tmp_path: Path,
                                                tiny_backbone: OpenCLIPBackbone) -> None:
    from PIL import Image

    from cotprompt.data import ImageClassificationDataset
    from cotprompt.data.records import ImageRecord

    records = []
    for label, name in enumerate(CLASSES):
        path = tmp_path / f"{name}.png"
        Image.new("RGB", (32, 32), "white").save(path)
        records.append(ImageRecord(path=path, label=label))
    train = ImageClassificationDataset(records, CLASSES)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    pipeline = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES,
                                      device="cpu")
    for option in ("checkpoint_dir", "feature_cache_dir"):
        with pytest.raises(ConfigError, match=r"cannot write to the .*a-file"):
            pipeline.fit(train, training={"epochs": 1, option: str(blocker / "sub"),
                                          "checkpoint_every": 1, "progress": False})


# -- the caller's opt-in ------------------------------------------------------------------------


def test_pickle_checkpoint_needs_the_callers_opt_in(saved: Path, tmp_path: Path) -> None:
    state = tiny_state()
    path = tmp_path / "benign.pt"
    torch.save(state, path)
    with pytest.raises(ConfigError, match=r"pickle-based.*allow_pickle=True"):
        OpenCLIPBackbone(OpenCLIPBackboneConfig(model_name="cotprompt-tiny", pretrained=str(path)))
    backbone = OpenCLIPBackbone(OpenCLIPBackboneConfig(
        model_name="cotprompt-tiny", pretrained=str(path), allow_pickle=True))
    torch.testing.assert_close(backbone.model.state_dict()["text_projection"],
                               state["text_projection"])
    assert "allow_pickle" not in backbone.spec()["config"]  # a trust decision is never saved

    with pytest.raises(ConfigError, match="allow_pickle=True in code"):
        CoTPipeline.for_method("coop", model_name="cotprompt-tiny", pretrained=str(path))
    built = CoTPipeline.for_method("coop", model_name="cotprompt-tiny", pretrained=str(path),
                                   allow_pickle=True)
    torch.testing.assert_close(built.backbone.model.state_dict()["text_projection"],
                               state["text_projection"])

    set_backbone(saved, pretrained=str(path))
    with pytest.raises(ConfigError, match="pickle"):
        CoTPipeline.from_pretrained(saved)
    loaded = CoTPipeline.from_pretrained(saved, allow_pickle=True)
    torch.testing.assert_close(loaded.backbone.model.state_dict()["text_projection"],
                               state["text_projection"])


def test_cli_opt_in_loads_a_pickle_backbone(saved: Path, tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "benign.pt"
    torch.save(tiny_state(), path)
    set_backbone(saved, pretrained=str(path))
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), "green").save(image)
    assert_cli_refused(run_cli("predict", str(saved), str(image)), "--allow-pickle")
    proc = run_cli("predict", str(saved), str(image), "--json", "--allow-pickle")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["label"] in CLASSES


def test_from_config_file_is_untrusted_and_the_caller_can_opt_in(tmp_path: Path) -> None:
    path = tmp_path / "benign.pt"
    torch.save(tiny_state(), path)
    config = tmp_path / "pipeline.yaml"
    backbone = {"name": "open_clip", "config": {"model_name": "cotprompt-tiny",
                                                "pretrained": str(path)}}
    config.write_text(json.dumps({"backbone": {**backbone, "config": {
        **backbone["config"], "allow_pickle": True}}}))
    with pytest.raises(UnsafeSettingError, match="only the caller may set"):
        CoTPipeline.from_config(config, class_names=CLASSES)
    # a training config (with its data and output sections) also describes the pipeline
    config.write_text(json.dumps({"backbone": backbone, "data": {"format": "digits"},
                                  "output": "out"}))
    with pytest.raises(ConfigError, match="pickle"):
        CoTPipeline.from_config(config, class_names=CLASSES)
    pipeline = CoTPipeline.from_config(config, class_names=CLASSES, allow_pickle=True)
    assert pipeline.class_names == CLASSES


def test_training_config_file_cannot_opt_in(tmp_path: Path) -> None:
    from PIL import Image

    marker = tmp_path / "pwned"
    evil = write_marker_pickle(tmp_path / "clip.pt", marker)
    for name in CLASSES:
        (tmp_path / "train" / name).mkdir(parents=True)
        Image.new("RGB", (32, 32), "white").save(tmp_path / "train" / name / "a.png")
    data = {"format": "folder", "train": str(tmp_path / "train"), "shots": 1}
    cases = [
        ({"pretrained": str(evil)}, "pickle"),
        ({"pretrained": str(evil), "allow_pickle": True}, "only the caller may set"),
        ({"pretrained": str(evil), "extra": {"weights_only": False}}, "extra"),
    ]
    for options, needle in cases:
        config = {"backbone": {"name": "open_clip",
                               "config": {"model_name": "cotprompt-tiny", **options}},
                  "data": data}
        path = tmp_path / "train.yaml"
        path.write_text(json.dumps(config))
        assert_cli_refused(run_cli("train", "--config", str(path)), needle)
    assert not marker.exists()


# -- the Hub ------------------------------------------------------------------------------------


def _tiny_open_clip_config() -> bytes:
    config = json.loads((REPO_ROOT / "cotprompt" / "backbones" / "model_configs" /
                         "cotprompt-tiny.json").read_text())
    return json.dumps({"model_cfg": config}).encode()


@pytest.mark.parametrize("extra", [{}, {"weights_only": False}], ids=["plain", "extra"])
def test_hf_hub_backbone_with_pickle_weights_never_runs(
    hub: Any, saved: Path, tmp_path: Path, extra: dict  # noqa: F811 - fixture
) -> None:
    marker = tmp_path / "pwned"
    repo = "alice/evil-prompts"
    hub.create_repo(repo)
    evil = write_marker_pickle(tmp_path / "evil.bin", marker)
    # the artifact's own repository also carries an open_clip model whose weights are a pickle
    hub.commit_files(repo, {"open_clip_config.json": _tiny_open_clip_config(),
                            "open_clip_pytorch_model.bin": evil.read_bytes()})
    set_backbone(saved, model_name=f"hf-hub:{repo}", pretrained=None, extra=extra)
    if extra:  # push checks what it uploads: an attacker commits the files by other means
        with pytest.raises(UnsafeSettingError, match="extra"):
            push_folder(saved, repo, token="tok-alice")
    hub.commit_files(repo, {p.name: p.read_bytes() for p in saved.iterdir()})
    with pytest.raises(CotpromptError) as caught:
        CoTPipeline.from_pretrained(repo)
    message = one_line(caught.value)
    assert ("extra" in message) if extra else ("open_clip_model.safetensors" in message)
    if extra:
        with pytest.raises(UnsafeSettingError, match="extra"):
            pull(repo)
    assert not marker.exists()


def test_hf_hub_backbone_with_safetensors_loads(hub: Any, saved: Path) -> None:  # noqa: F811
    repo = "alice/clip-safe"
    hub.create_repo(repo)
    state = tiny_state()
    weights = Path(saved.parent / "w.safetensors")
    save_file(state, str(weights))
    hub.commit_files(repo, {"open_clip_config.json": _tiny_open_clip_config(),
                            "open_clip_model.safetensors": weights.read_bytes(),
                            "open_clip_pytorch_model.bin": b"never read"})
    set_backbone(saved, model_name=f"hf-hub:{repo}", pretrained=None)
    loaded = CoTPipeline.from_pretrained(saved)
    torch.testing.assert_close(loaded.backbone.model.state_dict()["text_projection"],
                               state["text_projection"])


# -- weights checks shared by every entry point -------------------------------------------------


def _poison(folder: Path, name: str = "tuner.ctx") -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(folder / WEIGHTS_NAME))
    key = next(k for k in sorted(tensors) if k.startswith(name))
    tensors[key][0, 0] = float("nan")
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    edit_config(folder, lambda c: c["weights"].update(sha256=file_sha256(folder / WEIGHTS_NAME)))


def test_nan_weights_are_refused_everywhere(saved: Path, tmp_path: Path) -> None:
    _poison(saved)
    with pytest.raises(ArtifactError, match=r"NaN or Inf values in tuner\.ctx"):
        CoTPipeline.from_pretrained(saved)
    with pytest.raises(ArtifactError, match=r"NaN or Inf values in tuner\.ctx"):
        check_artifact(saved)
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (32, 32), "blue").save(image)
    assert_cli_refused(run_cli("predict", str(saved), str(image), "--json"), "NaN")


def test_missing_checksum_is_refused_by_every_entry_point(saved: Path) -> None:
    edit_config(saved, lambda c: c["weights"].pop("sha256"))
    for check in (CoTPipeline.from_pretrained, check_artifact):
        with pytest.raises(ArtifactError, match="records no weights checksum"):
            check(saved)


def test_pull_never_replaces_a_users_own_readme(hub: Any, saved: Path,  # noqa: F811
                                                tmp_path: Path) -> None:
    repo = "alice/prompts"
    push_folder(saved, repo, token="tok-alice")
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "README.md").write_text("MY OWN PROJECT README")
    with pytest.raises(ArtifactError, match=r"holds a README\.md but no cotprompt artifact"):
        pull(repo, local_dir=mine)
    assert (mine / "README.md").read_text() == "MY OWN PROJECT README"
    assert sorted(p.name for p in mine.iterdir()) == ["README.md"]


@pytest.mark.parametrize("card", [b"---\n[broken: yaml\n---\ntext\n", b"---\n- a list\n---\n",
                                  b"\xff\xfe not utf-8"])
def test_save_keeps_a_readme_that_is_not_a_card(tmp_path: Path,
                                                tiny_backbone: OpenCLIPBackbone,
                                                card: bytes) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "README.md").write_bytes(card)
    save_tiny_pipeline(folder, tiny_backbone)
    assert (folder / "README.md").read_bytes() == card
    assert CoTPipeline.from_pretrained(folder).class_names == CLASSES


DEEP = "[" * 100_000 + "]" * 100_000  # deeper than Python's parsers go


def test_a_deeply_nested_artifact_config_is_refused_in_one_line(
        saved: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cotprompt.cli.app import main

    (saved / CONFIG_NAME).write_text(DEEP)
    for check in (CoTPipeline.from_pretrained, check_artifact):
        with pytest.raises(ArtifactError, match="cannot read") as caught:
            check(saved)
        assert str(saved / CONFIG_NAME) in one_line(caught.value)
    capsys.readouterr()
    assert main(["interpret", str(saved)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"error: cannot read {saved}"), errors


def _read_deep(kind: str, tmp_path: Path) -> Any:
    from cotprompt.cli._common.overrides import Override
    from cotprompt.data.sources import from_coop_split
    from cotprompt.data.task_io import read_json
    from cotprompt.experiments.results import read_result
    from cotprompt.generators.descriptions import load_descriptions
    from cotprompt.pipeline.config_files import read_mapping

    path = tmp_path / ("config.yaml" if kind == "yaml config" else "file.json")
    path.write_text(DEEP)
    readers = {
        "json config": lambda: read_mapping(path),
        "yaml config": lambda: read_mapping(path),
        "results.json": lambda: read_result(path),
        "task file": lambda: read_json(path, "task file"),
        "descriptions": lambda: load_descriptions(path),
        "coop split": lambda: from_coop_split(path, tmp_path),
        "checkpoint": lambda: _load_deep_checkpoint(path, tmp_path),
        "--set value": lambda: Override(f"{tmp_path.name}={DEEP}"),
    }
    return readers[kind]()


def _load_deep_checkpoint(path: Path, tmp_path: Path) -> Any:
    from cotprompt.training.checkpoint import META_FILE, load_checkpoint

    path.rename(tmp_path / META_FILE)
    weight = torch.zeros(1, requires_grad=True)
    return load_checkpoint(tmp_path, {"w": weight}, torch.optim.SGD([weight], lr=0.1), "fp")


@pytest.mark.parametrize(("kind", "error"), [
    ("json config", ConfigError), ("yaml config", ConfigError), ("results.json", CotpromptError),
    ("task file", CotpromptError), ("descriptions", ConfigError), ("coop split", CotpromptError),
    ("checkpoint", CotpromptError), ("--set value", ConfigError),
])
def test_deeply_nested_json_and_yaml_files_are_refused_in_one_line(
        tmp_path: Path, kind: str, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        _read_deep(kind, tmp_path)
    assert str(tmp_path if kind != "--set value" else tmp_path.name) in one_line(caught.value)
    assert len(str(caught.value)) < 1000


def test_a_deeply_nested_local_dir_model_config_is_refused(saved: Path, tmp_path: Path) -> None:
    folder = tmp_path / "clip-dir"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(DEEP)
    set_backbone(saved, model_name=f"local-dir:{folder}", pretrained=None)
    with pytest.raises(ConfigError, match=r"cannot read open_clip_config\.json") as caught:
        CoTPipeline.from_pretrained(saved)
    one_line(caught.value)


def test_a_deeply_nested_generation_cache_is_ignored(tmp_path: Path) -> None:
    from cotprompt.generators.lm_cache import GenerationCache

    meta = {"model": "m", "seed": 0}
    path = GenerationCache(tmp_path, meta).path
    path.write_text(DEEP)
    assert GenerationCache(tmp_path, meta).entries == {}
