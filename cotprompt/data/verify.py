"""Checking a dataset's image files up front: :func:`verify_images` decodes each image once."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from cotprompt.data.records import ImageClassificationDataset, ImageRecord
from cotprompt.errors import DataError

__all__ = ["verify_images"]

logger = logging.getLogger("cotprompt.data.images")  # the logger name it has always logged under


def _check(record: ImageRecord) -> str | None:
    """The error message for ``record``, or ``None`` when it loads."""
    try:
        record.load()
    except DataError as exc:
        return str(exc)
    return None


def verify_images(
    dataset: ImageClassificationDataset,
    *,
    on_error: Literal["raise", "skip"] = "raise",
    num_workers: int = 1,
) -> ImageClassificationDataset:
    """Decode every image of ``dataset`` once, to find missing and corrupt files up front.

    Args:
        dataset: The dataset to check.
        on_error: ``"raise"``: raise on bad images; ``"skip"``: drop them and log a warning that
            lists them.
        num_workers: Threads used to decode images (decoding releases the GIL).

    Returns:
        ``dataset`` itself when every image is readable, otherwise (``on_error="skip"``) a new
        dataset without the bad records, same class names and transform.

    Raises:
        DataError: ``on_error="raise"`` and some images are unreadable (all are named, up to 20),
            every image is unreadable, or ``on_error`` is not ``"raise"``/``"skip"``.
    """
    if on_error not in ("raise", "skip"):
        raise DataError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    records = dataset.records
    if num_workers > 1:
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            errors = list(pool.map(_check, records))
    else:
        errors = [_check(r) for r in records]
    bad = [msg for msg in errors if msg is not None]
    if not bad:
        return dataset
    listing = "\n  ".join(bad[:20]) + (f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else "")
    if on_error == "raise":
        raise DataError(f"{len(bad)} of {len(records)} image(s) are unreadable:\n  {listing}")
    kept = [r for r, msg in zip(records, errors, strict=True) if msg is None]
    if not kept:
        raise DataError(f"all {len(records)} image(s) are unreadable:\n  {listing}")
    logger.warning("skipping %d unreadable image(s):\n  %s", len(bad), listing)
    return ImageClassificationDataset(kept, dataset.class_names, dataset.transform)
