"""Tests of few-shot sampling and the base-to-new class split."""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import pytest
from PIL import Image

from cotprompt.data import (
    ImageClassificationDataset,
    ImageRecord,
    base_new_split,
    digits_dataset,
    few_shot,
    subsample_classes,
)
from cotprompt.errors import DataError

NAMES = ["apple", "bee", "cow", "duck", "eel"]


def _dataset(counts: list[int], transform: object = None) -> ImageClassificationDataset:
    """Path records (files need not exist: sampling never opens them), ``counts[c]`` per class."""
    records = [
        ImageRecord(Path(f"/data/{NAMES[c]}/{i:03d}.jpg"), c)
        for c, n in enumerate(counts)
        for i in range(n)
    ]
    return ImageClassificationDataset(records, NAMES[: len(counts)], transform)  # type: ignore[arg-type]


def _paths(dataset: ImageClassificationDataset) -> list[str]:
    return [str(r.path) for r in dataset.records]


# --- few_shot -------------------------------------------------------------------------------


def test_few_shot_takes_k_per_class_from_the_dataset() -> None:
    def transform(image: Image.Image) -> Image.Image:
        return image

    dataset = _dataset([20, 30, 25], transform)
    sampled = few_shot(dataset, 4, seed=1)
    assert sampled.class_counts() == [4, 4, 4]
    assert sampled.class_names == dataset.class_names and sampled.transform is transform
    assert set(sampled.records) <= set(dataset.records)
    assert len(set(sampled.records)) == 12
    for record in sampled.records:  # every record keeps its own class
        assert record.path is not None and record.path.parent.name == NAMES[record.label]


def test_few_shot_reproducible_and_seed_dependent() -> None:
    dataset = _dataset([20, 30, 25])
    first = _paths(few_shot(dataset, 4, seed=1))
    assert first == _paths(few_shot(dataset, 4, seed=1))
    assert first != _paths(few_shot(dataset, 4, seed=2))


def test_few_shot_independent_of_record_order() -> None:
    dataset = _dataset([20, 30, 25])
    shuffled = list(dataset.records)
    random.Random(0).shuffle(shuffled)
    reordered = ImageClassificationDataset(shuffled, dataset.class_names)
    assert _paths(few_shot(reordered, 5, seed=3)) == _paths(few_shot(dataset, 5, seed=3))


def test_few_shot_in_memory_images_independent_of_order() -> None:
    train = digits_dataset(image_size=8)["train"]
    reversed_train = ImageClassificationDataset(train.records[::-1], train.class_names)
    a = few_shot(train, 2, seed=0)
    b = few_shot(reversed_train, 2, seed=0)
    assert a.class_counts() == [2] * 10
    assert [r.image.tobytes() for r in a.records if r.image] == [
        r.image.tobytes() for r in b.records if r.image
    ]


def test_few_shot_all_images_when_class_has_exactly_k() -> None:
    dataset = _dataset([3, 10])
    sampled = few_shot(dataset, 3, seed=0)
    assert sorted(_paths(sampled))[:3] == [f"/data/apple/{i:03d}.jpg" for i in range(3)]


def test_few_shot_too_few_images_names_classes() -> None:
    dataset = _dataset([10, 2, 16, 0])
    with pytest.raises(
        DataError,
        match=r"2 class\(es\) have fewer than 4 images: \{'bee': 2, 'duck': 0\}.*allow_fewer=True",
    ):
        few_shot(dataset, 4, seed=0)


def test_few_shot_allow_fewer_takes_all_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    dataset = _dataset([10, 2, 16])
    with caplog.at_level(logging.WARNING, logger="cotprompt.data.sampling"):
        sampled = few_shot(dataset, 4, seed=0, allow_fewer=True)
    assert sampled.class_counts() == [4, 2, 4]
    assert "have fewer than 4 images: {'bee': 2}" in caplog.text


@pytest.mark.parametrize("shots", [0, -1, 1.5, True, "4"])
def test_few_shot_bad_shots(shots: object) -> None:
    with pytest.raises(DataError, match="shots must be a positive integer"):
        few_shot(_dataset([5]), shots, seed=0)  # type: ignore[arg-type]


# --- base_new_split -------------------------------------------------------------------------


def test_base_new_split_even_and_odd() -> None:
    assert base_new_split(NAMES[:4]) == ([0, 1], [2, 3])
    assert base_new_split(NAMES) == ([0, 1, 2], [3, 4])  # ceil(5 / 2) = 3 base classes
    assert base_new_split(["a", "b"]) == ([0], [1])


@pytest.mark.parametrize("n", [2, 3, 10, 37, 100, 101, 397])
def test_base_new_split_matches_cocoop_rule(n: int) -> None:
    base, new = base_new_split([f"c{i}" for i in range(n)])
    assert len(base) == math.ceil(n / 2)
    assert base + new == list(range(n))


@pytest.mark.parametrize("names", [[], ["only"]])
def test_base_new_split_needs_two_classes(names: list[str]) -> None:
    with pytest.raises(DataError, match=f"at least two classes, got {len(names)}"):
        base_new_split(names)


# --- subsample_classes ----------------------------------------------------------------------


def test_subsample_classes_relabels_in_given_order() -> None:
    dataset = _dataset([2, 3, 1, 4])
    new = subsample_classes(dataset, [3, 1])
    assert new.class_names == ["duck", "bee"]
    assert new.class_counts() == [4, 3]
    for record in new.records:
        assert record.path is not None and record.path.parent.name == new.class_names[record.label]


def test_subsample_classes_without_relabel() -> None:
    dataset = _dataset([2, 3, 1, 4])
    kept = subsample_classes(dataset, [3, 1], relabel=False)
    assert kept.class_names == dataset.class_names
    assert kept.class_counts() == [0, 3, 0, 4]


def test_subsample_classes_base_and_new_cover_dataset() -> None:
    dataset = _dataset([2, 3, 1, 4, 5])
    base_labels, new_labels = base_new_split(dataset.class_names)
    base = subsample_classes(dataset, base_labels)
    new = subsample_classes(dataset, new_labels)
    assert base.class_names == ["apple", "bee", "cow"] and new.class_names == ["duck", "eel"]
    assert new.labels == [0] * 4 + [1] * 5
    assert len(base) + len(new) == len(dataset)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([], "at least one label"),
        ([0, 7], r"labels \[7\] are outside 0\.\.2"),
        ([-1], r"labels \[-1\] are outside"),
        ([1, 1], r"labels must be unique, got \[1, 1\]"),
        ([2], r"the selected classes have no images: \['cow'\]"),
    ],
)
def test_subsample_classes_errors(labels: list[int], message: str) -> None:
    dataset = _dataset([2, 3, 0])
    with pytest.raises(DataError, match=message):
        subsample_classes(dataset, labels)
