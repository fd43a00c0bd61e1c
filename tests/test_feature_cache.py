"""Frozen image features on disk: hits, misses, stale files, other transforms, corrupt shards,
and the trainer's ``feature_cache_dir``."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from cotprompt.aggregators import MeanAggregator
from cotprompt.data import ImageClassificationDataset, ImageRecord
from cotprompt.generators import RuleBasedGenerator
from cotprompt.model import PromptModel
from cotprompt.training.config import TrainingConfig
from cotprompt.training.feature_cache import FeatureCache, content_key, describe_transform
from cotprompt.training.loop import run_training
from cotprompt.training.trainer import Trainer
from cotprompt.tuners import CoCoOpTuner, CoOpConfig, CoOpTuner
from cotprompt.types import Task

CLASSES = ["red", "green"]


def write_images(folder, count=4, seed=0):
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
        records.append(ImageRecord(path=path, label=i % 2))
    return records


class CountingEncoder:
    """Encodes with the backbone and counts the images it was asked for."""

    def __init__(self, backbone):
        self.backbone = backbone
        self.seen = 0

    def __call__(self, dataset):
        self.seen += len(dataset)
        pixels = torch.stack([dataset[i][0] for i in range(len(dataset))])
        with torch.no_grad():
            return torch.nn.functional.normalize(self.backbone.encode_images(pixels), dim=-1)


def test_hits_misses_and_stale_files(tiny_backbone, tmp_path):
    records = write_images(tmp_path)
    data = ImageClassificationDataset(records, CLASSES, tiny_backbone.image_transform())
    cache = FeatureCache(tmp_path / "cache")
    encoder = CountingEncoder(tiny_backbone)

    first = cache.features(data, tiny_backbone, encoder)
    assert encoder.seen == 4 and cache.last_stats.misses == 4 and cache.last_stats.hits == 0
    expected = CountingEncoder(tiny_backbone)(data)
    torch.testing.assert_close(first, expected)

    again = cache.features(data, tiny_backbone, encoder)  # another run / epoch / method
    assert encoder.seen == 4 and cache.last_stats.hits == 4
    assert torch.equal(again, first)

    subset = data.subset([2, 0])  # another few-shot sample reuses the entries
    torch.testing.assert_close(cache.features(subset, tiny_backbone, encoder), first[[2, 0]])
    assert encoder.seen == 4

    # a file changes on disk: its old entry is stale, the new contents are encoded
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(records[1].path)
    changed = cache.features(data, tiny_backbone, encoder)
    assert encoder.seen == 5
    assert cache.last_stats.stale == 1 and cache.last_stats.misses == 1
    torch.testing.assert_close(changed, CountingEncoder(tiny_backbone)(data))
    assert not torch.allclose(changed[1], first[1])
    torch.testing.assert_close(changed[[0, 2, 3]], first[[0, 2, 3]])


def test_transform_backbone_and_extra_are_part_of_the_key(tiny_backbone, tmp_path):
    records = write_images(tmp_path, count=2)
    cache = FeatureCache(tmp_path / "cache")
    encoder = CountingEncoder(tiny_backbone)
    data = ImageClassificationDataset(records, CLASSES, tiny_backbone.image_transform())
    cache.features(data, tiny_backbone, encoder)
    namespace = cache.last_stats.namespace
    cache.features(data, tiny_backbone, encoder, extra={"precision": "bf16"})
    assert encoder.seen == 4 and cache.last_stats.namespace != namespace

    import torchvision.transforms as T

    flipped = T.Compose([T.RandomHorizontalFlip(p=1.0), tiny_backbone.image_transform()])
    cache.features(data.with_transform(flipped), tiny_backbone, encoder)
    assert encoder.seen == 6
    assert describe_transform(flipped) != describe_transform(tiny_backbone.image_transform())
    assert "0x" not in describe_transform(tiny_backbone.image_transform())
    assert describe_transform(lambda x: x) != describe_transform(lambda x: -x)

    with torch.no_grad():  # other image-encoder weights: other features
        param = next(tiny_backbone.model.visual.parameters())
        saved = param.clone()  # restored bit for bit: the backbone is shared by the session
        param.add_(1.0)
        try:
            cache.features(data, tiny_backbone, encoder)
        finally:
            param.copy_(saved)
    assert encoder.seen == 8


def test_corrupt_shards_are_removed_and_recomputed(tiny_backbone, tmp_path):
    records = write_images(tmp_path, count=2)
    data = ImageClassificationDataset(records, CLASSES, tiny_backbone.image_transform())
    cache = FeatureCache(tmp_path / "cache")
    encoder = CountingEncoder(tiny_backbone)
    first = cache.features(data, tiny_backbone, encoder)
    shards = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(shards) == 1
    shards[0].write_bytes(b"not a safetensors file")
    again = cache.features(data, tiny_backbone, encoder)
    assert cache.last_stats.corrupt == 1 and encoder.seen == 4
    torch.testing.assert_close(again, first)


def test_in_memory_images_and_duplicates(tiny_backbone, tmp_path):
    image = Image.fromarray(np.full((32, 32, 3), 100, dtype=np.uint8))
    other = Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8))
    records = [
        ImageRecord(path=None, label=0, image=image),
        ImageRecord(path=None, label=1, image=other),
        ImageRecord(path=None, label=0, image=image.copy()),  # same contents
    ]
    assert content_key(records[0]) == content_key(records[2]) != content_key(records[1])
    data = ImageClassificationDataset(records, CLASSES, tiny_backbone.image_transform())
    cache = FeatureCache(tmp_path / "cache")
    encoder = CountingEncoder(tiny_backbone)
    features = cache.features(data, tiny_backbone, encoder)
    assert encoder.seen == 2 and features.shape == (3, tiny_backbone.embed_dim)
    torch.testing.assert_close(features[0], features[2])


@pytest.mark.parametrize("tuner_cls", [CoOpTuner, CoCoOpTuner])
def test_trainer_reuses_the_disk_cache_across_runs_and_methods(tiny_backbone, tmp_path, tuner_cls):
    records = write_images(tmp_path, count=4)
    data = ImageClassificationDataset(records, CLASSES)
    chain = RuleBasedGenerator().generate(Task.classification(CLASSES))
    config = TrainingConfig(
        epochs=1,
        batch_size=2,
        augment=False,
        progress=False,
        precision="fp32",
        feature_cache_dir=str(tmp_path / "cache"),
    )

    def run(tuner):
        tuner.bind(tiny_backbone, chain)
        aggregator = MeanAggregator()
        aggregator.bind(chain.num_steps, tiny_backbone.embed_dim)
        trainer = Trainer(PromptModel(tiny_backbone, tuner, aggregator), config)
        transform = tiny_backbone.image_transform()
        plan = trainer.classification_plan(data, eval_transform=transform,
                                           train_transform=transform)
        return run_training(trainer.model, config, trainer.accelerator, plan)

    calls = []
    original = tiny_backbone.encode_images

    def counting(pixels):
        calls.append(len(pixels))
        return original(pixels)

    tiny_backbone.encode_images = counting
    try:
        assert run(CoOpTuner(CoOpConfig(n_ctx=4))).features_cached
        assert sum(calls) == 4
        run(tuner_cls())  # another run, possibly another method: read from disk
        assert sum(calls) == 4
    finally:
        del tiny_backbone.encode_images


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_cache_files_follow_the_umask(tiny_backbone, tmp_path, umask, mode):
    records = write_images(tmp_path)
    data = ImageClassificationDataset(records, CLASSES, tiny_backbone.image_transform())
    previous = os.umask(umask)
    try:
        FeatureCache(tmp_path / "cache").features(data, tiny_backbone,
                                                  CountingEncoder(tiny_backbone))
    finally:
        os.umask(previous)
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert files and {p.stat().st_mode & 0o777 for p in files} == {mode}
