"""Every documented backbone precision predicts, evaluates and trains on a CPU (issue 12, item 8).

open_clip's ``fp16`` / ``bf16`` keep the embeddings and layer norms in fp32 and the matmul
weights in half precision; inputs must be cast to the matmul weights' dtype, not to the first
parameter's.
"""

from __future__ import annotations

import typing

import numpy as np
import pytest
import torch
from PIL import Image

from cotprompt import CoTPipeline
from cotprompt.backbones import TINY_MODEL, OpenCLIPBackbone, OpenCLIPBackboneConfig
from cotprompt.backbones import open_clip_backbone as ocb
from cotprompt.data.records import ImageClassificationDataset, ImageRecord
from cotprompt.errors import ConfigError

PRECISIONS = typing.get_args(OpenCLIPBackboneConfig.model_fields["precision"].annotation)
HALF = {"fp16": torch.float16, "pure_fp16": torch.float16, "bf16": torch.bfloat16,
        "pure_bf16": torch.bfloat16}
CLASSES = ["cat", "dog"]


def test_every_documented_precision_is_tested():
    assert set(PRECISIONS) == {"fp32", "fp16", "bf16", "pure_fp16", "pure_bf16", "amp",
                               "amp_bf16", "amp_bfloat16"}


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(4)]


@pytest.fixture(scope="module")
def fp32_logits(images) -> torch.Tensor:
    torch.manual_seed(0)
    pipeline = _pipeline("fp32")
    return pipeline.logits(images).float()


def _pipeline(precision: str) -> CoTPipeline:
    return CoTPipeline.create(
        backbone="open_clip",
        backbone_config={"model_name": TINY_MODEL, "pretrained": None, "precision": precision},
        tuner="cotpt",  # meta-nets and chain links: the most dtype-sensitive tuner
        class_names=CLASSES,
    )


@pytest.mark.parametrize("precision", PRECISIONS)
def test_precision_predicts_evaluates_and_trains(precision, images, fp32_logits):
    torch.manual_seed(0)
    pipeline = _pipeline(precision)
    backbone = pipeline.backbone
    assert backbone.dtype == HALF.get(precision, torch.float32)
    assert backbone.image_dtype == HALF.get(precision, torch.float32)
    # predict (tuned and zero-shot): the same classifier as fp32, up to rounding
    logits = pipeline.logits(images).float()
    assert torch.isfinite(logits).all()
    tolerance = 0.1 if precision in HALF else 1e-4
    torch.testing.assert_close(logits, fp32_logits, atol=tolerance, rtol=0)
    assert pipeline.predict(images[:1], zero_shot=True)[0].label in CLASSES
    # a one-epoch fit and an evaluation
    dataset = ImageClassificationDataset(
        [ImageRecord(None, i % 2, image=image) for i, image in enumerate(images)], CLASSES
    )
    before = {k: v.clone() for k, v in pipeline.model.trainable_state().items()}
    result = pipeline.fit(dataset, training={"epochs": 1, "batch_size": 2, "lr": 0.1,
                                             "progress": False})
    assert np.isfinite(result.history[-1]["loss"])
    after = pipeline.model.trainable_state()
    assert all(v.dtype == torch.float32 for v in after.values())  # tuned tensors stay fp32
    assert any(not torch.equal(before[k], after[k]) for k in before)
    evaluation = pipeline.evaluate(dataset)
    assert 0 <= evaluation.accuracy <= 100


def test_missing_half_kernels_are_one_clear_error(monkeypatch):
    backbone = OpenCLIPBackbone(
        OpenCLIPBackboneConfig(model_name=TINY_MODEL, pretrained=None, precision="fp16")
    )
    monkeypatch.setattr(ocb, "_SUPPORTED", set())

    def no_half_conv(*args, **kwargs):
        raise RuntimeError('"slow_conv2d_cpu" not implemented for \'Half\'')

    monkeypatch.setattr(ocb.F, "conv2d", no_half_conv)
    with pytest.raises(ConfigError) as caught:
        backbone.encode_images(torch.zeros(1, 3, 32, 32))
    message = str(caught.value)
    assert "\n" not in message
    assert "precision 'fp16'" in message and "use precision 'fp32'" in message
    assert "not implemented for 'Half'" in message
