"""Relative backbone paths in a config file start from the file's folder; artifacts record
absolute paths (issue 12, item 9)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

from cotprompt import CoTPipeline
from cotprompt.artifact.format import CONFIG_NAME
from cotprompt.backbones import TINY_MODEL, OpenCLIPBackbone, OpenCLIPBackboneConfig
from cotprompt.cli.app import main
from cotprompt.pipeline.config_files import load_pipeline_config

CLASSES = ("cat", "dog")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``project/``: ``weights/tiny.safetensors`` (cotprompt-tiny, init_seed 7), a few images
    in ``data/train/<class>/`` and ``config.yaml`` naming both by relative paths."""
    root = tmp_path_factory.mktemp("project")
    (root / "weights").mkdir()
    backbone = OpenCLIPBackbone(
        OpenCLIPBackboneConfig(model_name=TINY_MODEL, pretrained=None, init_seed=7)
    )
    state = {k: v.clone().contiguous() for k, v in backbone.model.state_dict().items()}
    save_file(state, str(root / "weights" / "tiny.safetensors"))
    rng = np.random.default_rng(0)
    for name in CLASSES:
        folder = root / "data" / "train" / name
        folder.mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    config = {
        "backbone": {"name": "open_clip", "config": {
            "model_name": TINY_MODEL, "pretrained": "weights/tiny.safetensors"}},
        "tuner": {"name": "coop", "config": {"n_ctx": 2}},
        "training": {"epochs": 1, "batch_size": 4, "progress": False, "augment": False},
        "data": {"format": "folder", "train": "data/train", "shots": None},
        "output": "artifact",
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return root


def test_train_config_run_from_elsewhere_finds_its_weights(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["train", "--config", str(project / "config.yaml"), "-q"]) == 0
    artifact = project / "artifact"  # `output` is relative to the config file too
    record = json.loads((artifact / CONFIG_NAME).read_text())
    weights = project / "weights" / "tiny.safetensors"
    assert record["backbone"]["config"]["pretrained"] == str(weights)
    # the artifact loads from any working directory, with the file's weights
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    loaded = CoTPipeline.from_pretrained(artifact)
    expected = OpenCLIPBackbone(
        OpenCLIPBackboneConfig(model_name=TINY_MODEL, pretrained=None, init_seed=7)
    )
    torch.testing.assert_close(loaded.backbone.model.state_dict()["text_projection"],
                               expected.model.state_dict()["text_projection"])


def test_load_pipeline_config_resolves_against_the_file_folder(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = project / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"backbone": {"name": "open_clip", "config": {
        "model_name": "local-dir:models/clip", "pretrained": "tiny.safetensors",
        "cache_dir": "cache"}}}), encoding="utf-8")
    options = load_pipeline_config(path).backbone.config
    assert options == {"model_name": f"local-dir:{project / 'models' / 'clip'}",
                       "pretrained": str(project / "tiny.safetensors"),
                       "cache_dir": str(project / "cache")}
    # the same mapping from the caller's code is the caller's: relative to the working directory
    mapping = yaml.safe_load(path.read_text())
    assert load_pipeline_config(mapping).backbone.config["pretrained"] == "tiny.safetensors"
    # a pipeline built from the file finds its weights
    path.write_text(yaml.safe_dump({"backbone": {"name": "open_clip", "config": {
        "model_name": TINY_MODEL, "pretrained": "weights/tiny.safetensors"}}}), encoding="utf-8")
    pipeline = CoTPipeline.from_config(path, class_names=list(CLASSES))
    assert pipeline.backbone.config.pretrained == str(project / "weights" / "tiny.safetensors")


def test_config_validation_makes_relative_paths_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = OpenCLIPBackboneConfig(model_name="local-dir:clip", pretrained="w/x.safetensors")
    assert config.pretrained == str(tmp_path / "w" / "x.safetensors")
    assert config.model_name == f"local-dir:{tmp_path / 'clip'}"
    home = OpenCLIPBackboneConfig(pretrained="~/x.safetensors").pretrained
    assert home is not None and Path(home).is_absolute()
    # open_clip tags and names are not paths
    for tag in ("openai", "laion2b_s34b_b88k", None):
        assert OpenCLIPBackboneConfig(pretrained=tag).pretrained == tag
    assert OpenCLIPBackboneConfig(model_name="ViT-B-16").model_name == "ViT-B-16"
    absolute = str(tmp_path / "y.safetensors")
    assert OpenCLIPBackboneConfig(pretrained=absolute).pretrained == absolute


def test_relative_training_folders_resolve_against_the_config_file(tmp_path, monkeypatch):
    from cotprompt.pipeline.config_files import load_pipeline_config

    folder = tmp_path / "configs"
    folder.mkdir()
    path = folder / "c.yaml"
    path.write_text("training: {checkpoint_dir: ckpt, feature_cache_dir: /abs/cache}\n")
    monkeypatch.chdir(tmp_path)
    config = load_pipeline_config(path)
    assert config.training.checkpoint_dir == str(folder / "ckpt")
    assert config.training.feature_cache_dir == "/abs/cache"


def test_a_config_file_that_is_not_utf8_is_named(tmp_path):
    from cotprompt.errors import ConfigError
    from cotprompt.pipeline.config_files import load_pipeline_config

    path = tmp_path / "c.yaml"
    path.write_bytes(b"training: {epochs: 1}\n# \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"c\.yaml is not UTF-8"):
        load_pipeline_config(path)
