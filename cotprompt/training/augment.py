"""Training samples whose augmentation is a function of (seed, epoch, sample index).

A running random stream makes a sample's crop depend on everything drawn before it: on the
batches already done (a resumed run draws other crops than the uninterrupted one), on the
DataLoader workers that happened to load it, and on the number of processes. Here every sample
is transformed under torch's (CPU), Python's and NumPy's global generators forked and seeded from
``(seed, epoch, index)`` (:func:`~cotprompt.training.seeding.seeded_global_rng`), ``index``
being the sample's position in the training set. Any transform that draws from those generators
(torchvision's ``RandomResizedCrop`` and ``RandomHorizontalFlip``, as the ``open_clip`` backbone's
training transform; a plugin backbone's) is then reproducible without changes, in the main
process or in a worker, and the generators' states outside the call are left as they were.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset

from cotprompt.data.records import ImageClassificationDataset
from cotprompt.training.seeding import derive_seed, seeded_global_rng


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of the augmentation of sample ``index`` in ``epoch`` (0-based)."""
    return derive_seed(seed, "augment", epoch, index)


class EpochSamples(Dataset):
    """``samples[(epoch, index)]`` is ``(transform(image), label)`` of record ``index``.

    Args:
        dataset: The training images (their own transform is not used).
        transform: Applied to each RGB PIL image.
        seed: The run's seed.
        random: Whether ``transform`` draws random numbers (augmentation); when false it is
            called as it is.
    """

    def __init__(self, dataset: ImageClassificationDataset, transform: Callable[[Any], Any],
                 seed: int, *, random: bool) -> None:
        self.records = dataset.records
        self.transform = transform
        self.seed = seed
        self.random = random

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, int]:
        epoch, index = key
        record = self.records[index]
        image = record.load()
        if not self.random:
            return self.transform(image), record.label
        with seeded_global_rng(sample_seed(self.seed, epoch, index)):
            return self.transform(image), record.label
