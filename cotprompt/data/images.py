"""Reading image files, with clear errors for missing, corrupt or truncated files."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from PIL import Image, UnidentifiedImageError

from cotprompt.errors import DataError

if TYPE_CHECKING:
    from cotprompt.data.records import ImageClassificationDataset, ImageRecord

logger = logging.getLogger(__name__)


def load_image(path: str | Path) -> Image.Image:
    """Read an image file fully and return it as an RGB PIL image.

    The pixel data is decoded at once (``Image.load``), so a truncated file fails here rather than
    later inside a data loader.

    Args:
        path: The image file.

    Returns:
        The decoded image, mode ``"RGB"``.

    Raises:
        DataError: The file does not exist, or is not a readable (complete) image; the message
            names the file.
    """
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise DataError(f"cannot read image {str(path)!r}: the path {what}")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except UnidentifiedImageError as exc:
        raise DataError(f"cannot read image {str(path)!r}: not a recognised image format") from exc
    except Image.DecompressionBombError as exc:
        raise DataError(f"cannot read image {str(path)!r}: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {str(path)!r}: corrupt or truncated ({exc})") from exc


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
    from cotprompt.data.records import ImageClassificationDataset

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
