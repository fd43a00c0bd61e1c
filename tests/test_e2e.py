"""End to end on real images (../shared/data/cifar10-mini): few-shot training of CoOp, CoCoOp and
CoT-PT on the small random-weight backbone clearly beats the untuned (zero-shot) pipeline on the
training classes, and the saved artifact reproduces the predictions.

No pretrained CLIP can be downloaded here, so the backbone is random: absolute accuracies are low,
and AdamW with a higher learning rate replaces CoOp's SGD recipe (tuned for pretrained CLIP)."""

from __future__ import annotations

import pytest
import torch

from cotprompt import CoTPipeline
from cotprompt.data import few_shot, from_folder, subsample_classes

SETTINGS = {
    # method: (classes, shots, epochs, batch size)
    "coop": (10, 16, 60, 32),
    "cocoop": (10, 16, 60, 32),
    "cotpt": (5, 8, 40, 20),
}


@pytest.fixture(scope="module")
def cifar(shared_data):
    root = shared_data / "cifar10-mini"
    return from_folder(root / "train"), from_folder(root / "test")


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_tuned_beats_zero_shot_and_round_trips(method, cifar, tiny_backbone, tmp_path):
    num_classes, shots, epochs, batch_size = SETTINGS[method]
    train_all, test_all = cifar
    labels = list(range(num_classes))
    train = few_shot(subsample_classes(train_all, labels), shots, seed=1)
    test = subsample_classes(test_all, labels)
    pipeline = CoTPipeline.for_method(
        method,
        backbone=tiny_backbone,
        training=dict(
            optimizer="adamw",
            lr=0.01,
            weight_decay=0.0,
            warmup_epochs=0,
            scheduler="constant",
            epochs=epochs,
            batch_size=batch_size,
            augment=False,
            progress=False,
            seed=1,
        ),
    )
    result = pipeline.fit(train)
    assert result.features_cached
    assert result.history[-1]["loss"] < result.history[0]["loss"]

    zero_shot_train = pipeline.evaluate(train, zero_shot=True).accuracy
    tuned_train = pipeline.evaluate(train).accuracy
    zero_shot_test = pipeline.evaluate(test, zero_shot=True).accuracy
    tuned_test = pipeline.evaluate(test, split="test").accuracy
    chance = 100 / num_classes
    assert tuned_train >= max(2 * zero_shot_train, zero_shot_train + 10), (
        tuned_train,
        zero_shot_train,
    )
    assert tuned_train >= chance + 10
    assert tuned_test >= zero_shot_test + 5, (tuned_test, zero_shot_test)

    pipeline.save_pretrained(tmp_path / method)
    loaded = CoTPipeline.from_pretrained(tmp_path / method, backbone=tiny_backbone)
    images = [record.path for record in test.records[:: max(1, len(test) // 12)]]
    torch.testing.assert_close(loaded.logits(images), pipeline.logits(images), rtol=0, atol=0)
    assert loaded.metrics["test"]["accuracy"] == pytest.approx(tuned_test)
