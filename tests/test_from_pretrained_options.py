"""``from_pretrained``'s huggingface_hub / PEFT options (``cache_dir``, ``local_files_only``,
``force_download``, ``subfolder``), its ``precision`` override, and the backbone match check
(only what changes the model is compared).

Hub tests use the real ``huggingface_hub`` client against the local test server of
``tests/test_hub.py`` (its fixtures are reused here).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import test_hub
import torch
from huggingface_hub import constants as hf_constants
from PIL import Image
from test_hub import ALICE, LABELS, assert_same_weights, make_pipeline

from cotprompt import CoTPipeline
from cotprompt.artifact.format import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from cotprompt.backbones import TINY_MODEL, OpenCLIPBackbone, OpenCLIPBackboneConfig
from cotprompt.errors import ArtifactError, ConfigError

hf_home = test_hub.hf_home  # fixtures: huggingface_hub home under tmp_path, and the Hub server
hub = test_hub.hub

TINY = {"model_name": TINY_MODEL, "pretrained": None}


def tiny(**options: object) -> OpenCLIPBackbone:
    return OpenCLIPBackbone(OpenCLIPBackboneConfig(**TINY, **options))  # type: ignore[arg-type]


def with_config(backbone: OpenCLIPBackbone, **changes: object) -> OpenCLIPBackbone:
    """``backbone`` describing itself with other options (for the match check, which reads only
    ``spec()``); the weights are shared."""
    other = copy.copy(backbone)
    other.config = backbone.config.model_copy(update=changes)
    return other


@pytest.fixture
def pipeline(tiny_backbone: OpenCLIPBackbone) -> CoTPipeline:
    return make_pipeline(tiny_backbone, seed=3)


@pytest.fixture
def saved(pipeline: CoTPipeline, tmp_path: Path) -> Path:
    return pipeline.save_pretrained(tmp_path / "saved")


def resolve_requests(server: object) -> list[tuple[str, str]]:
    return [(m, p) for m, p, _ in server.requests if "/resolve/" in p]  # type: ignore[attr-defined]


# -- the saved config and the backbone match check ---------------------------------------------


def test_a_saved_artifact_carries_no_open_clip_cache_dir(tmp_path: Path) -> None:
    clip_cache = tmp_path / "trainer-home" / "open_clip-cache"
    backbone = tiny(cache_dir=str(clip_cache))
    pipeline = CoTPipeline.for_method("coop", backbone=backbone, class_names=LABELS,
                                      device="cpu")
    folder = pipeline.save_pretrained(tmp_path / "a")
    text = (folder / CONFIG_NAME).read_text()
    assert "cache_dir" not in json.loads(text)["backbone"]["config"]
    assert str(clip_cache) not in text and "trainer-home" not in text
    assert "cache_dir" not in backbone.spec()["config"]
    # loading builds the backbone with the loading machine's default, not the trainer's folder
    assert CoTPipeline.from_pretrained(folder).backbone.config.cache_dir is None


def test_a_backbone_differing_only_in_cache_dir_is_accepted(saved: Path, pipeline: CoTPipeline,
                                                            tiny_backbone, tmp_path: Path) -> None:
    other = with_config(tiny_backbone, cache_dir=str(tmp_path / "elsewhere"))
    assert_same_weights(CoTPipeline.from_pretrained(saved, backbone=other), pipeline)
    # an older record carrying the trainer's cache_dir: still the same backbone
    config = json.loads((saved / CONFIG_NAME).read_text())
    config["backbone"]["config"]["cache_dir"] = "/home/trainer/.cache/open_clip"
    (saved / CONFIG_NAME).write_text(json.dumps(config))
    assert_same_weights(CoTPipeline.from_pretrained(saved, backbone=other), pipeline)


def test_a_backbone_at_another_precision_is_accepted_with_an_info_log(
        saved: Path, pipeline: CoTPipeline, caplog: pytest.LogCaptureFixture) -> None:
    bf16 = tiny(precision="bf16")
    with caplog.at_level(logging.INFO, logger="cotprompt.pipeline"):
        loaded = CoTPipeline.from_pretrained(saved, backbone=bf16, device="cpu")
    assert loaded.backbone is bf16
    assert_same_weights(loaded, pipeline)
    assert all(v.dtype == torch.float32 for v in loaded.model.trainable_state().values())
    infos = [r for r in caplog.records if r.levelno == logging.INFO and "bf16" in r.getMessage()]
    assert infos and "fp32" in infos[0].getMessage()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8))
    assert torch.isfinite(loaded.logits([image]).float()).all()  # the prompts run at bf16


@pytest.mark.parametrize("changes", [{"init_seed": 1}, {"pretrained": "openai"},
                                     {"model_name": "ViT-B-16"}])
def test_a_backbone_that_changes_the_model_is_refused(saved: Path, tiny_backbone,
                                                      changes: dict) -> None:
    key = next(iter(changes))
    with pytest.raises(ArtifactError, match=f"differs.*{key}"):
        CoTPipeline.from_pretrained(saved, backbone=with_config(tiny_backbone, **changes))


def test_precision_override_builds_the_saved_backbone_at_that_precision(
        saved: Path, pipeline: CoTPipeline, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="cotprompt.pipeline"):
        loaded = CoTPipeline.from_pretrained(saved, precision="bf16", device="cpu")
    assert loaded.backbone.config.precision == "bf16"
    assert loaded.backbone.dtype == torch.bfloat16
    assert_same_weights(loaded, pipeline)
    assert "now run on a bf16" in caplog.text
    assert CoTPipeline.from_pretrained(saved).backbone.config.precision == "fp32"


def test_precision_override_is_validated(saved: Path, tiny_backbone,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="precision='fp8'"):
        CoTPipeline.from_pretrained(saved, precision="fp8")
    with pytest.raises(ConfigError, match="must be a string"):
        CoTPipeline.from_pretrained(saved, precision=16)  # type: ignore[arg-type]
    # with a given backbone, precision must be that backbone's: checked before any fetch
    monkeypatch.setattr("cotprompt.hub.mixin.resolve_artifact", _no_fetch)
    with pytest.raises(ConfigError, match="given backbone is built at 'fp32'"):
        CoTPipeline.from_pretrained("alice/anything", backbone=tiny_backbone, precision="bf16")


def _no_fetch(*args: object, **kwargs: object) -> None:
    raise AssertionError("fetched before the options were checked")


# -- local folders -------------------------------------------------------------------------------


def test_subfolder_of_a_local_folder(pipeline: CoTPipeline, tiny_backbone, tmp_path: Path) -> None:
    pipeline.save_pretrained(tmp_path / "outer" / "prompts" / "pets")
    loaded = CoTPipeline.from_pretrained(tmp_path / "outer", subfolder="prompts/pets",
                                         backbone=tiny_backbone, local_files_only=True)
    assert_same_weights(loaded, pipeline)
    assert loaded.source == {"type": "local",
                             "path": str((tmp_path / "outer" / "prompts" / "pets").resolve())}
    with pytest.raises(ArtifactError, match="no subfolder 'missing'"):
        CoTPipeline.from_pretrained(tmp_path / "outer", subfolder="missing")
    for bad in ("../outer", "/etc", "a/../b", "a\\b"):
        with pytest.raises(ArtifactError, match="relative path"):
            CoTPipeline.from_pretrained(tmp_path / "outer", subfolder=bad)


# -- the Hub -------------------------------------------------------------------------------------


def test_hub_subfolder_fetches_only_its_three_files(hub, pipeline: CoTPipeline, tiny_backbone,
                                                    tmp_path: Path) -> None:
    other = make_pipeline(tiny_backbone, seed=9)
    hub.create_repo("alice/many")
    files: dict[str, bytes] = {}
    for name, item in (("prompts/a", pipeline), ("prompts/b", other)):
        folder = item.save_pretrained(tmp_path / name)
        files.update({f"{name}/{p.name}": p.read_bytes() for p in folder.iterdir()})
    files["prompts/a/modeling.py"] = b"raise SystemExit('ran remote code')"
    commit = hub.commit_files("alice/many", files)
    loaded = CoTPipeline.from_pretrained("alice/many", subfolder="prompts/a",
                                         backbone=tiny_backbone, device="cpu")
    assert_same_weights(loaded, pipeline)
    assert loaded.source is not None
    assert loaded.source["subfolder"] == "prompts/a"
    assert loaded.source["commit"] == commit
    fetched = {path.split("/resolve/", 1)[1].split("/", 1)[1]
               for _, path in resolve_requests(hub)}
    assert fetched == {f"prompts/a/{n}" for n in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)}
    assert_same_weights(CoTPipeline.from_pretrained("alice/many", subfolder="prompts/b/",
                                                    backbone=tiny_backbone), other)
    with pytest.raises(ArtifactError, match="relative path"):
        CoTPipeline.from_pretrained("alice/many", subfolder="../x", backbone=tiny_backbone)
    with pytest.raises(ArtifactError):
        CoTPipeline.from_pretrained("alice/many", subfolder="prompts/c", backbone=tiny_backbone)


def test_cache_dir_is_where_the_files_go(hub, pipeline: CoTPipeline, tiny_backbone,
                                         tmp_path: Path) -> None:
    pipeline.push_to_hub("alice/cached", token=ALICE)
    cache = tmp_path / "my-cache"
    loaded = CoTPipeline.from_pretrained("alice/cached", cache_dir=cache, backbone=tiny_backbone)
    assert_same_weights(loaded, pipeline)
    assert (cache / "models--alice--cached").is_dir()
    assert not (Path(hf_constants.HF_HUB_CACHE) / "models--alice--cached").exists()
    # the cache it filled answers local_files_only; the default cache does not hold it
    requests = len(hub.requests)
    again = CoTPipeline.from_pretrained("alice/cached", cache_dir=str(cache),
                                        local_files_only=True, backbone=tiny_backbone)
    assert_same_weights(again, pipeline)
    with pytest.raises(ArtifactError, match="not in the local cache"):
        CoTPipeline.from_pretrained("alice/cached", local_files_only=True, backbone=tiny_backbone)
    assert len(hub.requests) == requests


def test_local_files_only_never_touches_the_network(hub, pipeline: CoTPipeline, tiny_backbone,
                                                    ) -> None:
    info = pipeline.push_to_hub("alice/offline", token=ALICE)
    commit = hub.commit_files("alice/offline", {f"sub/{n}": hub.file("alice/offline", n).data
                                       for n in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)})
    before = len(hub.requests)
    for kwargs in ({}, {"revision": info.oid}, {"subfolder": "sub"}):
        with pytest.raises(ArtifactError, match="local_files_only"):
            CoTPipeline.from_pretrained("alice/offline", local_files_only=True,
                                        backbone=tiny_backbone, **kwargs)
    assert len(hub.requests) == before
    CoTPipeline.from_pretrained("alice/offline", backbone=tiny_backbone)
    CoTPipeline.from_pretrained("alice/offline", backbone=tiny_backbone, subfolder="sub")
    before = len(hub.requests)
    hub.commit_files("alice/offline", {"other.txt": b"a newer commit the cache has not seen"})
    for kwargs in ({}, {"revision": "main"}, {"revision": commit}, {"subfolder": "sub"}):
        loaded = CoTPipeline.from_pretrained("alice/offline", local_files_only=True,
                                             backbone=tiny_backbone, **kwargs)
        assert_same_weights(loaded, pipeline)
    assert loaded.source is not None and loaded.source["subfolder"] == "sub"
    assert len(hub.requests) == before


def test_force_download_fetches_again(hub, pipeline: CoTPipeline, tiny_backbone,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    info = pipeline.push_to_hub("alice/forced", token=ALICE)
    CoTPipeline.from_pretrained("alice/forced", revision=info.oid, backbone=tiny_backbone)
    gets = sum(1 for m, _ in resolve_requests(hub) if m == "GET")
    CoTPipeline.from_pretrained("alice/forced", revision=info.oid, backbone=tiny_backbone)
    assert sum(1 for m, _ in resolve_requests(hub) if m == "GET") == gets  # from the cache
    loaded = CoTPipeline.from_pretrained("alice/forced", revision=info.oid, force_download=True,
                                         backbone=tiny_backbone)
    assert_same_weights(loaded, pipeline)
    assert sum(1 for m, _ in resolve_requests(hub) if m == "GET") >= gets + 2  # config, weights
    before = len(hub.requests)
    with pytest.raises(ArtifactError, match=r"force_download.*local_files_only"):
        CoTPipeline.from_pretrained("alice/forced", force_download=True, local_files_only=True,
                                    backbone=tiny_backbone)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ArtifactError, match=r"force_download.*HF_HUB_OFFLINE"):
        CoTPipeline.from_pretrained("alice/forced", force_download=True, backbone=tiny_backbone)
    assert len(hub.requests) == before


@pytest.mark.parametrize("name", ["", "  "])
def test_an_empty_name_is_refused_not_read_as_the_working_folder(
        name: str, tiny_backbone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a folder that could be mistaken for the artifact
    make_pipeline(tiny_backbone, seed=3).save_pretrained(tmp_path)
    with pytest.raises(ArtifactError, match="the artifact is an empty name"):
        CoTPipeline.from_pretrained(name, backbone=tiny_backbone)
