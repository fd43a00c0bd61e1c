"""The research code's few-shot sampler and base/new classes, image for image; and what a sweep
runner needs to record and evaluate a run.

The research code (CoOp / CoCoOp on Dassl) seeds Python's ``random`` with the run's seed
(``dassl.utils.set_random_seed``) before it builds the dataset, then, with no other draw in
between:

1. ``train = generate_fewshot_dataset(train, num_shots=k)``;
2. ``val = generate_fewshot_dataset(val, num_shots=min(k, 4))`` (not for ImageNet, which has
   no validation split);
3. ``subsample_classes(train, val, test, subsample="all" | "base" | "new")``.

``generate_fewshot_dataset`` groups the records by label in order of first appearance (a
``defaultdict(list)``) and, label after label, takes ``random.sample(items, k)`` when the label
has at least ``k`` images, else all of them in order. ``subsample_classes`` sorts the labels of
the training split, keeps the first ``ceil(n / 2)`` ("base") or the rest ("new"), relabelled
``0..`` in that order, in every split.

Here the draws come from a private ``random.Random(seed)``, the same generator (Mersenne
Twister, same seeding) as the module-level one after ``random.seed(seed)``, so the picks are the
research code's without touching the global generator. They are the research code's picks
whenever the records are in the research code's order: always for the datasets read from split
files (the order is the file's); for the ImageNet training folders only with
``load_dataset("imagenet", root, listing="os")`` on the same copy of the files (the research code
lists each class folder with ``os.listdir``, whose order depends on the file system and the copy;
cotprompt lists them sorted by default, the same on every machine but not the research code's).

Seeds start at 1: the research code's ``train.py`` sets the seed only ``if args.seed:`` (its
default, -1, means "unseeded"), so seed 0 runs unseeded and has no research picks to reproduce;
:func:`research_few_shot` refuses it.

The API a sweep runner uses:

- :func:`research_few_shot`: a run's K-shot training (and validation) images;
- :func:`research_class_labels`: the labels of the ``"base"`` / ``"new"`` classes, in their new
  label order (to cut any split, or the class names, to a subset);
- :func:`research_test_split`: the test split of a subset, as the research code evaluates it;
- :func:`training_image_list`: the training images as a result records them, relative to
  ``$DATA``.

Source: KaiyangZhou/Dassl.pytorch ``dassl/data/datasets/base_dataset.py``,
``dassl/utils/tools.py``; KaiyangZhou/CoOp ``train.py``, ``datasets/oxford_pets.py``
(``subsample_classes``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from cotprompt.data.records import ImageClassificationDataset, ImageRecord
from cotprompt.data.research.base import ResearchDataset
from cotprompt.data.sampling import base_new_split, subsample_classes
from cotprompt.errors import ConfigError, DataError

ClassSubset = Literal["all", "base", "new"]
"""Which classes a split keeps: all, the base half or the new half (CoCoOp's protocol)."""

CLASS_SUBSETS: tuple[ClassSubset, ...] = ("all", "base", "new")

VAL_SHOTS = 4
"""The research code's cap on validation images per class: ``min(k, 4)``."""


def sample_per_label(
    split: ImageClassificationDataset, shots: int, rng: random.Random
) -> ImageClassificationDataset:
    """Dassl's ``generate_fewshot_dataset`` on one split, drawing from ``rng``.

    Args:
        split: The split, in the research code's record order.
        shots: K, images per label (> 0).
        rng: The generator; advanced by one ``sample`` per label with at least K images.

    Returns:
        The picked records, label after label in order of first appearance; same class names
        and transform.
    """
    groups: dict[int, list[ImageRecord]] = {}
    for record in split.records:
        groups.setdefault(record.label, []).append(record)
    picked: list[ImageRecord] = []
    for items in groups.values():
        picked.extend(rng.sample(items, shots) if len(items) >= shots else items)
    return ImageClassificationDataset(picked, split.class_names, split.transform)


def research_class_labels(
    train: ImageClassificationDataset | Sequence[int], classes: ClassSubset
) -> list[int]:
    """The labels a class subset keeps, in their new label order (CoOp's
    ``subsample_classes``): the sorted labels present in ``train``, cut at ``ceil(n / 2)``.

    Label ``labels[i]`` of the full dataset becomes label ``i`` of the subset, and its class
    name is ``class_names[labels[i]]``.

    Args:
        train: The training split (or its labels) the research code cuts the classes from: the
            few-shot training split of the run, or the full one (the same labels unless a class
            has no training image).
        classes: ``"all"``, ``"base"`` or ``"new"``.

    Raises:
        DataError: ``classes`` is unknown, or ``base``/``new`` with fewer than two classes.
    """
    if classes not in CLASS_SUBSETS:
        raise DataError(f"classes must be one of {list(CLASS_SUBSETS)}, got {classes!r}")
    labels = train.labels if isinstance(train, ImageClassificationDataset) else train
    present = sorted(set(labels))
    if classes == "all":
        return present
    base, new = base_new_split([str(label) for label in present])
    return [present[i] for i in (base if classes == "base" else new)]


def _subsample(split: ImageClassificationDataset, labels: list[int]) -> ImageClassificationDataset:
    if labels == list(range(split.num_classes)):
        return split
    return subsample_classes(split, labels)


def _check_arguments(dataset: ResearchDataset, shots: int, seed: int) -> None:
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise DataError(f"shots must be a positive integer, got {shots!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 1:
        raise ConfigError(
            f"seed must be an integer >= 1, got {seed!r}: the research code seeds only a non-zero "
            "seed (train.py: 'if args.seed:'), so seed 0 runs unseeded and has no research picks"
        )
    if dataset.train is None:
        raise DataError(f"{dataset.name}: has no training split (a test-only dataset)")


def research_few_shot(
    dataset: ResearchDataset,
    shots: int,
    seed: int,
    *,
    classes: ClassSubset = "all",
) -> tuple[ImageClassificationDataset, ImageClassificationDataset | None]:
    """The K-shot training and validation splits the research code picks for ``seed``.

    The picks are the research code's when ``dataset``'s records are in its order: always for
    the split-file datasets; for ImageNet only when read with ``listing="os"`` on the same copy
    of the files (see the module docstring).

    Args:
        dataset: A dataset from a reader of :mod:`cotprompt.data.research` (record order
            matters: it is the research code's).
        shots: K, training images per class (> 0); validation takes ``min(K, 4)``.
        seed: The run's seed (>= 1), as given to the research code (``--seed``).
        classes: ``"all"``, or the ``"base"`` / ``"new"`` half of the classes, chosen after
            sampling and relabelled ``0..`` (class names follow).

    Returns:
        ``(train, val)``: about ``K * C`` training records, grouped by label in order of first
        appearance; ``val`` is ``None`` where the dataset has no validation split (ImageNet).

    Raises:
        ConfigError: ``seed`` is not an integer >= 1 (seed 0 has no research equivalent).
        DataError: ``shots`` is invalid, the dataset has no training split, or ``classes`` is
            unknown.
    """
    _check_arguments(dataset, shots, seed)
    assert dataset.train is not None
    rng = random.Random(seed)
    train = sample_per_label(dataset.train, shots, rng)
    val = None
    if dataset.val is not None:
        val = sample_per_label(dataset.val, min(shots, VAL_SHOTS), rng)
    labels = research_class_labels(train, classes)
    train = _subsample(train, labels)
    if val is not None:
        val = _subsample(val, labels)
    return train, val


def research_test_split(
    dataset: ResearchDataset, classes: ClassSubset = "all"
) -> ImageClassificationDataset:
    """The test split on all, base or new classes, as the research code evaluates it.

    Base and new are cut from the labels of the full training split
    (:func:`research_class_labels`) and relabelled ``0..`` with their class names; for a
    test-only dataset only ``"all"`` applies.

    Raises:
        DataError: ``classes`` is unknown, or ``base``/``new`` on a test-only dataset.
    """
    if classes not in CLASS_SUBSETS:
        raise DataError(f"classes must be one of {list(CLASS_SUBSETS)}, got {classes!r}")
    if classes == "all":
        return dataset.test
    if dataset.train is None:
        raise DataError(
            f"{dataset.name}: base/new classes need a training split (a test-only dataset)"
        )
    return _subsample(dataset.test, research_class_labels(dataset.train, classes))


def training_image_list(
    dataset: ResearchDataset,
    records: ImageClassificationDataset | Sequence[ImageRecord],
) -> list[str]:
    """The training images of a run as its result records them, in order.

    Args:
        dataset: The dataset they come from (its ``root`` is ``$DATA``).
        records: The training split (or its records).

    Returns:
        Each image's path relative to ``dataset.root`` with ``/`` separators
        (``"caltech-101/101_ObjectCategories/face/image_0274.jpg"``), as
        :meth:`ResearchDataset.relative_path` gives it: paths are compared as written, symbolic
        links not followed, so a ``$DATA/<dataset>`` that links elsewhere still gives
        ``"<dataset>/..."``. An image outside ``root`` (a user's dataset named by an absolute
        path) keeps its absolute path, links not resolved either.

    Raises:
        DataError: A record is an in-memory image, without a path.
    """
    items = records.records if isinstance(records, ImageClassificationDataset) else records
    base = os.path.abspath(dataset.root)
    out: list[str] = []
    for record in items:
        if record.path is None:
            raise DataError(f"{dataset.name}: an in-memory image has no path to record")
        path = os.path.abspath(record.path)  # not resolved: a linked folder stays where it is
        try:
            inside = os.path.commonpath([base, path]) == base
        except ValueError:  # another drive
            inside = False
        out.append(dataset.relative_path(record) if inside else Path(path).as_posix())
    return out
