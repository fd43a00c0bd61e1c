"""Three tiny in-memory research datasets of real images for the sweep tests and benchmark, and
the sweep they run; ``python tests/sweep_data.py OUTPUT`` runs that sweep in a process of its
own (the kill-and-resume test kills it).

The datasets are :class:`~cotprompt.data.research.ResearchDataset` objects over the CIFAR-10
images of ``../shared/data/cifar10-mini`` (that folder is their ``$DATA``): four classes each,
6 training, 2 validation and 6 test images per class. ``tiny_mixed`` shares two classes (the
same image files) with the others.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from cotprompt.data.records import ImageClassificationDataset, ImageRecord
from cotprompt.data.research.base import ResearchDataset
from cotprompt.data.sampling import few_shot
from cotprompt.errors import ConfigError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ROOT = SHARED_DATA / "cifar10-mini"

TINY: dict[str, list[str]] = {
    "tiny_vehicles": ["airplane", "automobile", "ship", "truck"],
    "tiny_animals": ["cat", "dog", "deer", "horse"],
    "tiny_mixed": ["bird", "frog", "airplane", "cat"],
    "tiny_vehicles_sub": ["ship", "truck"],  # a subset of tiny_vehicles' classes (as ImageNet-A)
}
TEMPLATE = "a photo of a {}."

#: The sweep of the tests: base-to-new, 4 methods (zero-shot, 3 trained) x 2 seeds x 3 datasets.
DATASETS = ("tiny_vehicles", "tiny_animals", "tiny_mixed")
METHODS = ("zsclip", "coop", "cocoop", "cotpt")
SEEDS = (1, 2)
SHOTS = 2
SWEEP_OPTIONS: dict[str, Any] = {
    "model_name": "cotprompt-tiny", "pretrained": None, "training": {"epochs": 2},
    "progress": False,
}


def load_dataset(name: str, root: Path) -> ResearchDataset:
    """A tiny dataset by name (``root``: ``cifar10-mini``)."""
    if name not in TINY:
        raise ConfigError(f"unknown dataset {name!r}")
    classes = TINY[name]

    def split(folder: str, start: int, count: int) -> ImageClassificationDataset:
        records = [ImageRecord(Path(root) / folder / name_ / f"{i:04d}.jpg", label)
                   for label, name_ in enumerate(classes) for i in range(start, start + count)]
        return ImageClassificationDataset(records, classes)

    return ResearchDataset(name=name, root=Path(root), class_names=list(classes),
                           train=split("train", 0, 6), val=split("train", 40, 2),
                           test=split("test", 0, 6), template=TEMPLATE)


def sample(dataset: ResearchDataset, shots: int, *, seed: int
           ) -> tuple[ImageClassificationDataset, ImageClassificationDataset | None]:
    """A simple few-shot sampler (the sweep tests do not depend on the research sampler)."""
    assert dataset.train is not None and dataset.val is not None
    return (few_shot(dataset.train, shots, seed=seed),
            few_shot(dataset.val, min(shots, 2), seed=seed))


def slow_sample(dataset: ResearchDataset, shots: int, *, seed: int
                ) -> tuple[ImageClassificationDataset, ImageClassificationDataset | None]:
    """:func:`sample`, a quarter of a second later (each run lasts long enough to be killed
    in the middle)."""
    time.sleep(0.25)
    return sample(dataset, shots, seed=seed)


def specs() -> list[Any]:
    from cotprompt.experiments.protocols import base2new

    return base2new(DATASETS, METHODS, SEEDS, SHOTS)


def main(output: str) -> None:
    """Run the tests' sweep into ``output`` (slowly), as the kill-and-resume test does."""
    from cotprompt.experiments.runner import run_sweep

    torch.set_num_threads(1)  # as the tests run (the same numbers as the reference sweep)
    run_sweep(specs(), data_root=ROOT, output=output, load_dataset=load_dataset,
              sample=slow_sample, **SWEEP_OPTIONS)


if __name__ == "__main__":
    main(sys.argv[1])
