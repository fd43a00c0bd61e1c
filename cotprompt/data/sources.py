"""Readers that build :class:`ImageClassificationDataset` objects from common layouts.

- :func:`from_folder`: one folder per class (``root/<class>/*.jpg``).
- :func:`from_csv`: a CSV manifest of image paths and labels.
- :func:`from_coop_split`: CoOp's ``split_zhou_<Dataset>.json`` split files.
- :func:`digits_dataset`: scikit-learn's bundled 8x8 digits, an offline demo dataset.

Readers check the layout, not the image files (use :func:`~cotprompt.data.verify_images`).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cotprompt.data.records import ImageClassificationDataset, ImageRecord
from cotprompt.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
)
"""File suffixes :func:`from_folder` reads as images (compared case-insensitively)."""

DIGIT_NAMES: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _normalise_extensions(extensions: Sequence[str]) -> set[str]:
    return {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}


def list_image_files(
    folder: str | Path, extensions: Sequence[str] = IMAGE_EXTENSIONS
) -> list[Path]:
    """The image files in ``folder`` and its sub-folders, sorted by path: the one folder-listing
    rule of cotprompt (:func:`from_folder`, ``cotprompt predict FOLDER``...).

    A file is listed when its suffix is one of ``extensions`` (case-insensitive). Hidden entries,
    whose name starts with ``.`` (``.ipynb_checkpoints/``, ``.DS_Store``, macOS's ``._x.jpg``),
    are skipped at any depth below ``folder``, and hidden folders are not entered. Symbolic
    links are followed (a link cycle is entered once).

    Args:
        folder: The folder to list.
        extensions: File suffixes read as images.

    Returns:
        The files, sorted by path (possibly none).

    Raises:
        DataError: ``folder`` does not exist or is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"image folder {str(root)!r} {what}")
    exts = _normalise_extensions(extensions)
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for current, dirs, files in os.walk(root, followlinks=True):
        stat = os.stat(current)
        if (stat.st_dev, stat.st_ino) in seen:  # a symbolic link back up the tree
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        base = Path(current)
        for name in files:
            if name.startswith(".") or Path(name).suffix.lower() not in exts:
                continue
            if (base / name).is_file():
                found.append(base / name)
            elif (base / name).is_symlink():  # a link to nothing: said, not silently dropped
                logger.warning("skipping %s: a symbolic link to a missing file", base / name)
    return sorted(found)


def from_folder(
    root: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> ImageClassificationDataset:
    """Read a folder-per-class layout, ``root/<class>/**/<image>``.

    Classes are the sub-folders of ``root`` sorted by folder name (label = position); the class
    name is the folder name with ``_`` read as a space. The images of a class are those that
    :func:`list_image_files` finds in its folder (recursively, sorted by path); hidden files and
    folders are ignored.

    Args:
        root: The folder holding one sub-folder per class.
        class_names: Optional names to use instead of the folder names, one per class folder in
            sorted folder order.
        extensions: File suffixes read as images (case-insensitive).

    Returns:
        The dataset, without a transform.

    Raises:
        DataError: ``root`` is missing or not a folder, has no class folders, a class folder
            holds no images (all such folders are named), or ``class_names`` has the wrong length.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"dataset folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise DataError(f"dataset path {str(root)!r} is not a folder")
    exts = _normalise_extensions(extensions)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _visible(p))
    if not folders:
        loose = [
            p for p in root.iterdir() if _visible(p) and p.is_file() and p.suffix.lower() in exts
        ]
        hint = (
            f" ({len(loose)} image(s) lie directly in it; put each class in its own sub-folder)"
            if loose
            else ""
        )
        raise DataError(
            f"dataset folder {str(root)!r} has no class sub-folders{hint}; "
            "expected root/<class>/<image>"
        )
    if class_names is not None and len(class_names) != len(folders):
        raise DataError(
            f"class_names has {len(class_names)} entries but {str(root)!r} has "
            f"{len(folders)} class folders: {[p.name for p in folders]}"
        )
    records: list[ImageRecord] = []
    empty: list[str] = []
    for label, folder in enumerate(folders):
        files = list_image_files(folder, extensions)
        if not files:
            empty.append(folder.name)
        records.extend(ImageRecord(path=p, label=label) for p in files)
    if empty:
        raise DataError(
            f"{len(empty)} class folder(s) in {str(root)!r} hold no images with extensions "
            f"{sorted(exts)}: {empty}"
        )
    names = (
        list(class_names)
        if class_names is not None
        else [p.name.replace("_", " ") for p in folders]
    )
    return ImageClassificationDataset(records, names)


def _parse_int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def from_csv(
    path: str | Path,
    *,
    root: str | Path | None = None,
    path_column: str = "path",
    label_column: str = "label",
    class_names: Sequence[str] | None = None,
) -> ImageClassificationDataset:
    """Read a CSV manifest with one row per image.

    The label column holds either class names or integer class indices (then ``class_names`` is
    required). With class-name labels and no ``class_names``, the classes are the distinct names
    sorted alphabetically; with ``class_names``, every name must be one of them.

    Args:
        path: The CSV file (UTF-8, with a header row).
        root: Folder that relative image paths are resolved against; default: the CSV's folder.
        path_column: Header of the image path column.
        label_column: Header of the label column.
        class_names: Class names, index = label.

    Returns:
        The dataset, without a transform, rows in file order.

    Raises:
        DataError: The file is missing or empty, a column is missing (the available columns are
            listed), a cell is empty, integer labels come without ``class_names`` or are out of
            range, or a class name is not in ``class_names``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV manifest {str(path)!r} does not exist")
    base = Path(root) if root is not None else path.parent
    try:
        rows = _read_csv_rows(path, path_column, label_column)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"CSV manifest {str(path)!r} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} "
            f"at offset {exc.start}); save it as UTF-8"
        ) from exc
    except csv.Error as exc:
        raise DataError(f"CSV manifest {str(path)!r} is malformed: {exc}") from exc
    if not rows:
        raise DataError(f"CSV manifest {str(path)!r} has a header but no rows")
    return _csv_dataset(path, base, rows, label_column, class_names)


def _read_csv_rows(
    path: Path, path_column: str, label_column: str
) -> list[tuple[int, str, str]]:
    """``(line, image path, label)`` of every row of a CSV manifest."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        if not columns:
            raise DataError(f"CSV manifest {str(path)!r} is empty (no header row)")
        reader.fieldnames = columns
        missing = [c for c in (path_column, label_column) if c not in columns]
        if missing:
            raise DataError(
                f"CSV manifest {str(path)!r} has no column(s) {missing}; "
                f"available columns: {columns}"
            )
        rows: list[tuple[int, str, str]] = []
        for row in reader:
            file = (row.get(path_column) or "").strip()
            label = (row.get(label_column) or "").strip()
            if not file or not label:
                column = path_column if not file else label_column
                raise DataError(
                    f"CSV manifest {str(path)!r}, line {reader.line_num}: empty {column!r} cell"
                )
            rows.append((reader.line_num, file, label))
    return rows


def _csv_dataset(
    path: Path,
    base: Path,
    rows: list[tuple[int, str, str]],
    label_column: str,
    class_names: Sequence[str] | None,
) -> ImageClassificationDataset:
    """The dataset of a manifest's rows (labels checked against ``class_names``)."""
    as_int = [_parse_int(label) for _, _, label in rows]
    if all(v is not None for v in as_int):
        if class_names is None:
            raise DataError(
                f"CSV manifest {str(path)!r} has integer labels in {label_column!r}; pass "
                "class_names to name the classes"
            )
        names = list(class_names)
        labels = [int(v) for v in as_int if v is not None]
        bad = [
            (line, v)
            for (line, _, _), v in zip(rows, labels, strict=True)
            if not 0 <= v < len(names)
        ]
        if bad:
            raise DataError(
                f"CSV manifest {str(path)!r}: label(s) outside 0..{len(names) - 1} "
                f"({len(names)} class names) at (line, label) {bad[:10]}"
            )
    else:
        names = list(class_names) if class_names is not None else sorted({r[2] for r in rows})
        index = {name: i for i, name in enumerate(names)}
        unknown = [(line, label) for line, _, label in rows if label not in index]
        if unknown:
            raise DataError(
                f"CSV manifest {str(path)!r}: class name(s) not in class_names at (line, label) "
                f"{unknown[:10]}; class_names: {names}"
            )
        labels = [index[label] for _, _, label in rows]
    records = [
        ImageRecord(path=base / file, label=label)
        for (_, file, _), label in zip(rows, labels, strict=True)
    ]
    return ImageClassificationDataset(records, names)


def _coop_items(split: str, items: Any, where: str) -> list[tuple[str, int, str]]:
    """Validate the ``[[relpath, label, classname], ...]`` list of one split."""
    if not isinstance(items, list):
        raise DataError(f"{where}: split {split!r} must be a list, got {type(items).__name__}")
    if not items:
        raise DataError(f"{where}: split {split!r} is empty")
    out: list[tuple[str, int, str]] = []
    for i, item in enumerate(items):
        ok = (
            isinstance(item, (list, tuple))
            and len(item) == 3
            and isinstance(item[0], str)
            and item[0]
            and isinstance(item[1], int)
            and not isinstance(item[1], bool)
            and item[1] >= 0
            and isinstance(item[2], str)
            and item[2].strip()
        )
        if not ok:
            raise DataError(
                f"{where}: split {split!r}, item {i} must be [relative_path, label >= 0, "
                f"class_name], got {item!r}"
            )
        out.append((item[0], item[1], item[2].replace("_", " ")))
    return out


def from_coop_split(
    split_json: str | Path, image_root: str | Path
) -> dict[str, ImageClassificationDataset]:
    """Read a CoOp split file (``split_zhou_<Dataset>.json``).

    The file maps split names to lists of ``[relative_path, label, class_name]``; paths are
    relative to ``image_root`` (for example ``<data>/oxford_pets/images``). Class names are taken
    from the (label, class name) pairs of all splits, with ``_`` read as a space.

    Args:
        split_json: The split file.
        image_root: Folder that the relative image paths start from.

    Returns:
        ``{split_name: dataset}`` (usually ``"train"``, ``"val"``, ``"test"``), every split
        with the same class names.

    Raises:
        DataError: The file or folder is missing, the JSON is malformed, a label maps to two class
            names (or a name to two labels), or some labels in ``0..max`` never occur.
    """
    split_json = Path(split_json)
    image_root = Path(image_root)
    where = f"CoOp split file {str(split_json)!r}"
    if not split_json.is_file():
        raise DataError(f"{where} does not exist")
    if not image_root.is_dir():
        raise DataError(f"image root {str(image_root)!r} for {where} is not a folder")
    try:
        data = json.loads(split_json.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise DataError(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise DataError(f"{where} must hold an object like {{'train': [...], 'test': [...]}}")
    splits = {str(name): _coop_items(str(name), items, where) for name, items in data.items()}

    names_of: dict[int, tuple[str, str]] = {}  # label -> (class name, split where first seen)
    for split, items in splits.items():
        for _, label, name in items:
            seen = names_of.setdefault(label, (name, split))
            if seen[0] != name:
                raise DataError(
                    f"{where}: label {label} is named {seen[0]!r} (split {seen[1]!r}) and "
                    f"{name!r} (split {split!r})"
                )
    n = max(names_of) + 1
    gaps = [label for label in range(n) if label not in names_of]
    if gaps:
        raise DataError(
            f"{where}: labels must be 0..{n - 1} without gaps; missing label(s) {gaps[:20]}"
        )
    class_names = [names_of[label][0] for label in range(n)]
    labels_of: dict[str, int] = {}
    for label, name in enumerate(class_names):
        if name in labels_of:
            raise DataError(
                f"{where}: class name {name!r} is used by labels {labels_of[name]} and {label}"
            )
        labels_of[name] = label
    return {
        split: ImageClassificationDataset(
            [ImageRecord(path=image_root / rel, label=label) for rel, label, _ in items],
            class_names,
        )
        for split, items in splits.items()
    }


def digits_dataset(*, image_size: int = 32) -> dict[str, ImageClassificationDataset]:
    """scikit-learn's bundled handwritten digits (1797 images, no download), as RGB images.

    Each 8x8 grey image (values 0..16) is scaled to 0..255, upscaled to ``image_size`` with
    nearest-neighbour sampling and converted to RGB (white digit on black). Classes are
    ``"zero"`` .. ``"nine"``. The split is deterministic and stratified: in each class, the first
    two thirds of the images (in scikit-learn's order, rounded down) are ``"train"``, the rest
    ``"test"`` (1195 / 602 images).

    Args:
        image_size: Side of the square output images, in pixels (>= 1).

    Returns:
        ``{"train": dataset, "test": dataset}`` of in-memory images, without a transform.

    Raises:
        DataError: ``image_size`` is not a positive integer.
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    digits = load_digits()
    pixels = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    targets = [int(t) for t in digits.target]
    splits: dict[str, list[ImageRecord]] = {"train": [], "test": []}
    for label in range(len(DIGIT_NAMES)):
        indices = [i for i, t in enumerate(targets) if t == label]
        n_train = (2 * len(indices)) // 3
        for rank, i in enumerate(indices):
            image = Image.fromarray(pixels[i])
            image = image.resize((image_size, image_size), Image.Resampling.NEAREST)
            record = ImageRecord(path=None, label=label, image=image.convert("RGB"))
            splits["train" if rank < n_train else "test"].append(record)
    logger.debug(
        "digits: %d train / %d test images of %d px",
        len(splits["train"]),
        len(splits["test"]),
        image_size,
    )
    return {
        name: ImageClassificationDataset(records, list(DIGIT_NAMES))
        for name, records in splits.items()
    }
