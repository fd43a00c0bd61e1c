"""Composing pipelines by name, object and config file; predicting on every input kind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
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
    assert_predictions_follow(pipeline.predict(paths, top_k=2), from_paths, k=2)
    assert_predictions_follow(pipeline.predict(pixels, top_k=2), from_paths, k=2)
    every = pipeline.predict(str(paths[0]), top_k=10)  # a top_k above the classes: all of them
    assert_predictions_follow(every, from_paths[:1], k=len(CLASSES))
    assert sum(p for _, p in every[0].top_k) == pytest.approx(1.0, abs=1e-6)

    # zero-shot: the frozen image features against the mean of each label's zero-shot sentences
    backbone = pipeline.backbone
    with torch.no_grad():
        image = F.normalize(backbone.encode_images(pixels).float(), dim=-1)
        text = torch.stack([
            F.normalize(F.normalize(backbone.encode_texts(list(sentences)).float(), dim=-1)
                        .mean(0), dim=-1)
            for sentences in pipeline.chain.zero_shot
        ])
        expected = backbone.logit_scale.float() * image @ text.t()
    zero_shot_logits = pipeline.logits(paths, zero_shot=True)
    torch.testing.assert_close(zero_shot_logits, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(zero_shot_logits, from_paths)  # not the prompted classifier
    assert_predictions_follow(pipeline.predict(paths, zero_shot=True), zero_shot_logits, k=1)


def assert_predictions_follow(predictions, logits, k):
    """One prediction per row of ``logits``, in order: its ``k`` most likely labels by softmax
    probability, most likely first, the first being the label, index and score."""
    probabilities = logits.softmax(-1)
    assert len(predictions) == len(logits)
    for prediction, row in zip(predictions, probabilities, strict=True):
        ranked = row.argsort(descending=True)[:k].tolist()
        assert [label for label, _ in prediction.top_k] == [CLASSES[i] for i in ranked]
        assert [p for _, p in prediction.top_k] == pytest.approx(row[ranked].tolist(), rel=1e-6)
        assert (prediction.label, prediction.index) == (CLASSES[ranked[0]], ranked[0])
        assert prediction.score == prediction.top_k[0][1]


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
