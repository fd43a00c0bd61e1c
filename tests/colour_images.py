"""A tiny in-memory dataset for training tests: each image's dominant colour is its class."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cotprompt.data import ImageClassificationDataset, ImageRecord

CLASSES = ["red", "green", "blue"]


def colour_dataset(per_class: int = 4, seed: int = 0, size: int = 40) -> ImageClassificationDataset:
    """``per_class`` images of each of :data:`CLASSES`, ``size`` pixels square (larger than the
    tiny model's 32, so that the random crop has room)."""
    rng = np.random.default_rng(seed)
    records = []
    for label in range(len(CLASSES)):
        for _ in range(per_class):
            pixels = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
            pixels[..., label] = rng.integers(150, 255, size=(size, size), dtype=np.uint8)
            records.append(ImageRecord(path=None, label=label, image=Image.fromarray(pixels)))
    return ImageClassificationDataset(records, CLASSES)
