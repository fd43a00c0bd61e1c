"""Composing pipelines by name, object and config file; predicting on every input kind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cotprompt import CoTPipeline, PipelineConfig
from cotprompt.backbones import TINY_MODEL
from cotprompt.errors import ConfigError, DataError, UnknownComponentError
from cotprompt.generators import RuleBasedGenerator
from cotprompt.tuners import CoCoOpTuner

CLASSES = ["cat", "dog", "bird"]
TINY = {"model_name": TINY_MODEL, "pretrained": None}


def test_create_by_names_and_objects(tiny_backbone):
    by_name = CoTPipeline.create(
        backbone="open_clip",
        backbone_config=TINY,
        tuner="cotpt",
        generator_config={"preset": "cot"},
        aggregator="attention",
        class_names=CLASSES,
    )
    assert by_name.chain.num_steps == 3 and by_name.class_names == CLASSES
    by_object = CoTPipeline.create(
        backbone=tiny_backbone,
        generator=RuleBasedGenerator(),
        tuner=CoCoOpTuner(),
        class_names=CLASSES,
    )
    assert by_object.tuner.image_conditioned
    with pytest.raises(ConfigError, match="only used with a tuner name"):
        CoTPipeline.create(backbone=tiny_backbone, tuner=CoCoOpTuner(), tuner_config={"n_ctx": 2})


def test_unknown_names_suggest_close_matches(tiny_backbone):
    with pytest.raises(UnknownComponentError, match=r"unknown tuner 'cocop'[\s\S]*'cocoop'"):
        CoTPipeline.create(backbone=tiny_backbone, tuner="cocop")
    with pytest.raises(ConfigError, match="did you mean 'cotpt'"):
        CoTPipeline.for_method("cotp", backbone=tiny_backbone)
    with pytest.raises(ConfigError, match="n_ctxx"):
        CoTPipeline.create(backbone=tiny_backbone, tuner="coop", tuner_config={"n_ctxx": 3})


def test_from_config_file(tmp_path):
    config = {
        "backbone": {"name": "open_clip", "config": TINY},
        "tuner": {"name": "cocoop", "config": {"ctx_init": "a photo of"}},
        "aggregator": {"name": "mean"},
        "training": {"epochs": 2},
    }
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(config))
    pipeline = CoTPipeline.from_config(path, class_names=CLASSES)
    assert pipeline.tuner.n_ctx == 3 and pipeline.training.epochs == 2
    yaml_path = tmp_path / "pipeline.yaml"
    yaml_path.write_text("tuner:\n  name: coop\ntraining:\n  epochs: -1\n")
    with pytest.raises(ConfigError, match=r"training.epochs"):
        CoTPipeline.from_config(yaml_path)
    with pytest.raises(ConfigError, match="does not exist"):
        CoTPipeline.from_config(tmp_path / "missing.yaml")
    assert PipelineConfig().tuner.name == "coop"


@pytest.fixture(scope="module")
def pipeline(tiny_backbone):
    return CoTPipeline.for_method("cocoop", backbone=tiny_backbone, class_names=CLASSES)


def test_predict_accepts_paths_pil_images_and_tensors(pipeline, tmp_path):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)) for _ in range(3)]
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    from_paths = pipeline.logits(paths)
    torch.testing.assert_close(pipeline.logits(images), from_paths)
    transform = pipeline.backbone.image_transform()
    pixels = torch.stack([transform(image) for image in images])
    torch.testing.assert_close(pipeline.logits(pixels), from_paths)
    predictions = pipeline.predict(paths, top_k=2)
    assert len(predictions) == 3
    first = predictions[0]
    assert first.label == CLASSES[int(from_paths[0].argmax())] and len(first.top_k) == 2
    assert first.score == pytest.approx(float(from_paths[0].softmax(-1).max()))
    assert pipeline.predict(str(paths[0]), top_k=10)[0].top_k[-1][0] in CLASSES
    zero_shot = pipeline.predict(paths, zero_shot=True)
    assert len(zero_shot) == 3


def test_predict_rejects_bad_inputs(pipeline, tmp_path):
    with pytest.raises(DataError, match=r"missing\.jpg"):
        pipeline.predict([tmp_path / "missing.jpg"])
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match=r"corrupt\.jpg"):
        pipeline.predict([corrupt])
    with pytest.raises(DataError, match=r"\[B, 3, H, W\]"):
        pipeline.predict(torch.zeros(2, 32, 32))
    with pytest.raises(DataError, match="no images"):
        pipeline.predict([])
    with pytest.raises(DataError, match="cannot read an image from a int"):
        pipeline.predict([1, 2])


def test_predict_before_classes_is_refused(tiny_backbone):
    pipeline = CoTPipeline.for_method("coop", backbone=tiny_backbone)
    with pytest.raises(ConfigError, match="no classes yet"):
        pipeline.predict(torch.zeros(1, 3, 32, 32))


@pytest.mark.skipif(not hasattr(__import__("typing"), "get_overloads"), reason="Python >= 3.11")
def test_predict_is_typed_by_on_bad_image():
    import inspect
    import typing

    kinds = {}
    for overload in typing.get_overloads(CoTPipeline.predict):
        signature = inspect.signature(overload)
        kinds[str(signature.parameters["on_bad_image"].annotation).replace('"', "'")] = (
            str(signature.return_annotation), signature.parameters["on_bad_image"].default
        )
    assert kinds == {
        "Literal['error']": ("list[Prediction]", ...),  # the default call
        "Literal['skip']": ("list[Prediction | None]", inspect.Parameter.empty),
    }
    implementation = inspect.signature(CoTPipeline.predict).parameters["on_bad_image"]
    assert implementation.annotation.replace('"', "'") == "Literal['error', 'skip']"
    assert implementation.default == "error"
