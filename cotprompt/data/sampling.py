"""Few-shot sampling and the base-to-new class split of CoOp / CoCoOp."""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import Sequence

from cotprompt.data.records import ImageClassificationDataset, ImageRecord
from cotprompt.errors import DataError

logger = logging.getLogger(__name__)


def _content_key(record: ImageRecord) -> tuple[int, str]:
    """A sort key that depends only on the record's content, not on its position."""
    if record.path is not None:
        return (0, str(record.path))
    assert record.image is not None
    image = record.image
    digest = hashlib.sha1(image.tobytes(), usedforsecurity=False)
    digest.update(f"{image.mode}{image.size}".encode())
    return (1, digest.hexdigest())


def few_shot(
    dataset: ImageClassificationDataset,
    shots: int,
    *,
    seed: int,
    allow_fewer: bool = False,
) -> ImageClassificationDataset:
    """Sample ``shots`` images of every class, reproducibly.

    The images of each class are first sorted by path (in-memory images by a hash of their
    pixels), then sampled with ``random.Random(seed)`` class by class in label order, so the
    result depends only on the seed and the dataset's content, not on record order.

    Args:
        dataset: The full (training) dataset.
        shots: K, images per class (> 0).
        seed: Seed of the sampler.
        allow_fewer: Take all images of classes that have fewer than ``shots`` (with a warning)
            instead of raising.

    Returns:
        A dataset of at most ``shots * C`` records grouped by class, same class names and
        transform.

    Raises:
        DataError: ``shots`` is not a positive integer, or some classes have fewer than
            ``shots`` images and ``allow_fewer`` is false (the classes and their counts are named).
    """
    if isinstance(shots, bool) or not isinstance(shots, int) or shots <= 0:
        raise DataError(f"shots must be a positive integer, got {shots!r}")
    by_class: list[list[ImageRecord]] = [[] for _ in range(dataset.num_classes)]
    for record in dataset.records:
        by_class[record.label].append(record)
    short = {
        dataset.class_names[c]: len(items) for c, items in enumerate(by_class) if len(items) < shots
    }
    if short:
        message = f"{len(short)} class(es) have fewer than {shots} images: {short}"
        if not allow_fewer:
            raise DataError(message + " (pass allow_fewer=True to take all their images)")
        logger.warning("%s; taking all of their images", message)
    rng = random.Random(seed)
    chosen: list[ImageRecord] = []
    for items in by_class:
        items = sorted(items, key=_content_key)
        chosen.extend(items if len(items) <= shots else rng.sample(items, shots))
    return ImageClassificationDataset(chosen, dataset.class_names, dataset.transform)


def base_new_split(class_names: Sequence[str]) -> tuple[list[int], list[int]]:
    """Split the labels into base and new classes, exactly as CoCoOp's ``subsample_classes``.

    The labels ``0..n-1`` (sorted) are cut at ``m = math.ceil(n / 2)``: base = ``labels[:m]``,
    new = ``labels[m:]``; with an odd number of classes the base half has one more class.

    Args:
        class_names: The C class names, index = label (only their number is used).

    Returns:
        ``(base_labels, new_labels)``.

    Raises:
        DataError: Fewer than two classes.
    """
    n = len(class_names)
    if n < 2:
        raise DataError(f"a base-to-new split needs at least two classes, got {n}")
    labels = list(range(n))
    m = math.ceil(n / 2)
    return labels[:m], labels[m:]


def subsample_classes(
    dataset: ImageClassificationDataset,
    labels: Sequence[int],
    *,
    relabel: bool = True,
) -> ImageClassificationDataset:
    """Keep only the records of some classes.

    Args:
        dataset: The dataset to filter.
        labels: The classes to keep (unique labels of ``dataset``).
        relabel: Relabel the kept classes ``0..len(labels)-1`` in the order of ``labels``, with
            the matching class names (as CoCoOp does for base and new classes). When false, labels
            and class names are kept as they are.

    Returns:
        The filtered dataset, same transform.

    Raises:
        DataError: ``labels`` is empty, holds duplicates or labels out of range, or the kept
            classes have no records.
    """
    keep = [int(label) for label in labels]
    if not keep:
        raise DataError("subsample_classes needs at least one label; got none")
    bad = [label for label in keep if not 0 <= label < dataset.num_classes]
    if bad:
        raise DataError(f"labels {bad} are outside 0..{dataset.num_classes - 1}")
    if len(set(keep)) != len(keep):
        raise DataError(f"labels must be unique, got {keep}")
    new_label = {old: new for new, old in enumerate(keep)}
    kept = [r for r in dataset.records if r.label in new_label]
    if not kept:
        names = [dataset.class_names[label] for label in keep]
        raise DataError(f"the selected classes have no images: {names}")
    if not relabel:
        return ImageClassificationDataset(kept, dataset.class_names, dataset.transform)
    records = [ImageRecord(path=r.path, label=new_label[r.label], image=r.image) for r in kept]
    names = [dataset.class_names[label] for label in keep]
    return ImageClassificationDataset(records, names, dataset.transform)
