"""What the readers of the research layouts share: checked paths, folder listings, class names.

Every check raises a one-line :class:`~cotprompt.errors.DataError` that names the dataset and
the file or folder at fault.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from cotprompt.data.records import ImageClassificationDataset, ImageRecord
from cotprompt.data.sources import IMAGE_EXTENSIONS
from cotprompt.errors import DataError

logger = logging.getLogger(__name__)

Listing = Literal["sorted", "os"]
"""Order of the images of a class folder: ``"sorted"`` by file name (the same on every
machine), or ``"os"``, the order ``os.listdir`` gives, which is what the research code uses
(``dassl.utils.listdir_nohidden``) and differs between file systems and copies."""

LISTINGS: tuple[Listing, ...] = ("sorted", "os")


def require_dir(path: Path, dataset: str, what: str = "folder") -> Path:
    """``path`` when it is a folder.

    Raises:
        DataError: ``"<dataset>: <what> <path> is missing"`` (or is not a folder).
    """
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "is missing"
        raise DataError(f"{dataset}: {what} {str(path)!r} {state}")
    return path


def require_file(path: Path, dataset: str, what: str = "file") -> Path:
    """``path`` when it is a file.

    Raises:
        DataError: ``"<dataset>: <what> <path> is missing"`` (or is not a file).
    """
    if not path.is_file():
        state = "is not a file" if path.exists() else "is missing"
        raise DataError(f"{dataset}: {what} {str(path)!r} {state}")
    return path


def read_lines(path: Path, dataset: str) -> list[tuple[int, str]]:
    """``(line number, stripped text)`` of every non-blank line of a UTF-8 text file.

    Raises:
        DataError: The file is missing or not UTF-8 text.
    """
    require_file(path, dataset)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{dataset}: {str(path)!r} is not UTF-8 text ({exc.reason})") from exc
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def display_name(name: str) -> str:
    """A research class name as its prompts spell it: every ``_`` read as a space (the research
    trainers format each prompt with ``name.replace("_", " ")``)."""
    return name.replace("_", " ")


def check_class_names(names: Sequence[str], dataset: str, source: Path) -> list[str]:
    """The class names, checked non-blank and unique (after :func:`display_name`).

    Raises:
        DataError: Naming ``source`` and the blank or repeated name.
    """
    out = [display_name(n) for n in names]
    if not out:
        raise DataError(f"{dataset}: {str(source)!r} names no classes")
    seen: dict[str, int] = {}
    for label, name in enumerate(out):
        if not name.strip():
            raise DataError(f"{dataset}: {str(source)!r} gives class {label} a blank name")
        if name in seen:
            raise DataError(
                f"{dataset}: {str(source)!r} names classes {seen[name]} and {label} both {name!r}"
            )
        seen[name] = label
    return out


def class_folders(folder: Path, dataset: str, *, ignored: Iterable[str] = ()) -> list[str]:
    """The sorted names of the visible sub-folders of ``folder`` (files are not classes).

    Raises:
        DataError: ``folder`` is missing or holds no class folder.
    """
    require_dir(folder, dataset)
    skip = set(ignored)
    names = sorted(
        e.name
        for e in os.scandir(folder)
        if not e.name.startswith(".") and e.name not in skip and e.is_dir()
    )
    if not names:
        raise DataError(f"{dataset}: {str(folder)!r} holds no class folders")
    return names


def folder_images(folder: Path, dataset: str, listing: Listing) -> list[Path]:
    """The images directly in a class folder, hidden files skipped, in ``listing`` order.

    Files whose suffix is not an image suffix (``IMAGE_EXTENSIONS``) are skipped with a
    warning; the research code would list them and fail on reading them.

    Raises:
        DataError: The folder is missing or holds no image (``"class folder ... has no images"``),
            or ``listing`` is unknown.
    """
    if listing not in LISTINGS:
        raise DataError(f"listing must be one of {list(LISTINGS)}, got {listing!r}")
    require_dir(folder, dataset, "class folder")
    names = [
        e.name
        for e in os.scandir(folder)
        if not e.name.startswith(".") and e.is_file()
    ]
    if listing == "sorted":
        names.sort()
    images = [n for n in names if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
    if len(images) != len(names):
        logger.warning(
            "%s: skipping %d file(s) that are not images in %s",
            dataset,
            len(names) - len(images),
            folder,
        )
    if not images:
        raise DataError(f"{dataset}: class folder {str(folder)!r} has no images")
    return [folder / n for n in images]


def check_images_exist(records: Sequence[ImageRecord], dataset: str, source: Path) -> None:
    """Every record's file exists (the research code asserts it for each image).

    Raises:
        DataError: Naming how many images ``source`` lists that are missing, and the first.
    """
    missing = [r.path for r in records if r.path is not None and not os.path.isfile(r.path)]
    if missing:
        raise DataError(
            f"{dataset}: {len(missing)} image(s) listed in {str(source)!r} are missing, "
            f"the first {str(missing[0])!r}"
        )


def check_every_class(
    split: ImageClassificationDataset, dataset: str, source: Path, split_name: str
) -> None:
    """Every class has an image in ``split`` (the research code takes its class names from the
    training split, so a class without training images would shift the names).

    Raises:
        DataError: Naming the first class without images and ``source``.
    """
    counts = split.class_counts()
    empty = [split.class_names[c] for c, k in enumerate(counts) if k == 0]
    if empty:
        raise DataError(
            f"{dataset}: class {empty[0]!r} has no images in the {split_name} split of "
            f"{str(source)!r} ({len(empty)} class(es) without images)"
        )

