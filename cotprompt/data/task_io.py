"""Small helpers shared by the task readers: JSON files, image lists, image-only datasets."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from cotprompt.data.records import ImageClassificationDataset, ImageRecord, Transform
from cotprompt.errors import DataError

logger = logging.getLogger("cotprompt.tasks._io")  # the logger name it has always had

MissingImages = Literal["error", "skip"]


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file; any failure is a :class:`DataError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {str(path)!r} does not exist")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DataError(f"{what} {str(path)!r} is not valid JSON: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {what} {str(path)!r}: {exc}") from exc


def require(mapping: Any, key: str, where: str) -> Any:
    """``mapping[key]``, or a :class:`DataError` saying what is malformed where."""
    if not isinstance(mapping, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(mapping).__name__}")
    if key not in mapping:
        raise DataError(f"{where}: missing key {key!r}")
    return mapping[key]


def missing_files(paths: Sequence[Path]) -> list[int]:
    """Indices of ``paths`` that are not files."""
    return [i for i, path in enumerate(paths) if not path.is_file()]


def report_missing(
    paths: Sequence[Path], policy: MissingImages, what: str
) -> set[int]:
    """Check that every image file exists.

    Returns:
        Indices of missing files (to drop) when ``policy == "skip"``; empty otherwise.

    Raises:
        DataError: Files are missing and ``policy == "error"`` (up to 10 are named).
    """
    if policy not in ("error", "skip"):
        raise DataError(f"missing_images must be 'error' or 'skip', got {policy!r}")
    bad = missing_files(paths)
    if not bad:
        return set()
    shown = ", ".join(repr(str(paths[i])) for i in bad[:10])
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    if policy == "error":
        raise DataError(
            f"{len(bad)} of {len(paths)} image file(s) of {what} do not exist: {shown}{more}; "
            "check the image root, or pass missing_images='skip'"
        )
    logger.warning("%s: skipping %d missing image file(s): %s%s", what, len(bad), shown, more)
    return set(bad)


def image_dataset(records: Sequence[ImageRecord], transform: Transform | None
                  ) -> ImageClassificationDataset:
    """The images as a one-class classification dataset: what the trainer's image encoding and
    feature cache read (the label is unused)."""
    return ImageClassificationDataset(
        [ImageRecord(r.path, 0, r.image) for r in records], ["image"], transform
    )


class PixelList(Dataset):
    """``dataset[i]`` = ``transform(records[i].load())``, a ``[3, H, W]`` tensor."""

    def __init__(self, records: Sequence[ImageRecord], transform: Transform) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.records[index].load())

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """``[b, 3, H, W]`` pixels of the records at ``indices``."""
        return torch.stack([self[i] for i in indices])
