"""A user's own data as a :class:`ResearchDataset`, for the registry's generic entries
``folder:PATH``, ``csv:PATH`` and ``split:PATH``.

- **folder**: ``PATH/test/<class>/<image>`` and optionally ``PATH/train/...`` and
  ``PATH/val/...`` (:func:`~cotprompt.data.from_folder` each); every split holds the same class
  folders.
- **csv**: one CSV manifest with columns ``path`` and ``label`` (class names) and optionally
  ``split`` (``train``, ``val`` or ``test``; without it every row is a test image); image paths
  are relative to the CSV's folder (:func:`~cotprompt.data.from_csv`); classes are the distinct
  names, sorted.
- **split**: a file in the research code's split format (``{"train", "val", "test"}`` lists of
  ``[image path, label, class name]``; ``train`` and ``test`` required) with image paths relative
  to ``image_root``, by default the file's folder.

Records keep file (or sorted path) order, so :func:`research_few_shot` samples them as the
research code would a dataset of that order. The zero-shot template is ``"a photo of a {}."``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from cotprompt.data.records import ImageClassificationDataset
from cotprompt.data.research.base import ResearchDataset
from cotprompt.data.research.layout import check_images_exist, require_dir, require_file
from cotprompt.data.sources import from_coop_split, from_csv, from_folder
from cotprompt.errors import DataError

TEMPLATE = "a photo of a {}."
"""The zero-shot template of a user's dataset."""

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


def _dataset(
    name: str, root: Path, splits: dict[str, ImageClassificationDataset], source: Path
) -> ResearchDataset:
    if "test" not in splits:
        raise DataError(f"{name}: {str(source)!r} has no test split")
    return ResearchDataset(
        name=name,
        root=Path(root),
        class_names=list(splits["test"].class_names),
        train=splits.get("train"),
        val=splits.get("val"),
        test=splits["test"],
        template=TEMPLATE,
    )


def read_folder_dataset(path: Path, *, root: Path, name: str | None = None) -> ResearchDataset:
    """A dataset from ``PATH/{train,val,test}/<class>/<image>`` (``test`` required).

    Args:
        path: The folder holding the split folders.
        root: The ``$DATA`` folder recorded as :attr:`ResearchDataset.root`.
        name: The dataset's name; default ``"folder:<path>"``.

    Returns:
        The dataset; class names are the class folder names, ``_`` read as a space.

    Raises:
        DataError: ``path`` or its ``test`` folder is missing, a split's class folders differ
            from the test split's, or a class folder has no images (naming the folder).
    """
    path = Path(path)
    name = name or f"folder:{path}"
    require_dir(path, name, "dataset folder")
    require_dir(path / "test", name, "test folder")
    splits = {s: from_folder(path / s) for s in SPLIT_NAMES if (path / s).is_dir()}
    names = splits["test"].class_names
    for split, data in splits.items():
        if data.class_names != names:
            odd = sorted(set(data.class_names) ^ set(names))
            raise DataError(
                f"{name}: {str(path / split)!r} and {str(path / 'test')!r} hold different class "
                f"folders ({len(odd)} differ, the first {odd[0]!r})"
            )
    return _dataset(name, root, splits, path / "test")


def _split_column(path: Path) -> list[str] | None:
    """The ``split`` cell of every row, or ``None`` when there is no such column."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "split" not in columns:
            return None
        reader.fieldnames = columns
        cells: list[str] = []
        for row in reader:
            cell = (row.get("split") or "").strip()
            if cell not in SPLIT_NAMES:
                raise DataError(
                    f"CSV manifest {str(path)!r}, line {reader.line_num}: split must be one of "
                    f"{list(SPLIT_NAMES)}, got {cell!r}"
                )
            cells.append(cell)
    return cells


def read_csv_dataset(path: Path, *, root: Path, name: str | None = None) -> ResearchDataset:
    """A dataset from a CSV manifest with columns ``path``, ``label`` and optionally ``split``.

    Args:
        path: The CSV file (UTF-8 with a header row).
        root: The ``$DATA`` folder recorded as :attr:`ResearchDataset.root`.
        name: The dataset's name; default ``"csv:<path>"``.

    Returns:
        The dataset, rows in file order within each split.

    Raises:
        DataError: The file is missing or malformed (see :func:`~cotprompt.data.from_csv`), a
            ``split`` cell is not ``train``, ``val`` or ``test``, no row is a test image, or a
            listed image is missing (each message names the file).
    """
    path = Path(path)
    name = name or f"csv:{path}"
    require_file(path, name, "CSV manifest")
    data = from_csv(path)
    try:
        column = _split_column(path)
    except csv.Error as exc:
        raise DataError(f"CSV manifest {str(path)!r} is malformed: {exc}") from exc
    check_images_exist(data.records, name, path)
    if column is None:
        return _dataset(name, root, {"test": data}, path)
    splits: dict[str, ImageClassificationDataset] = {}
    for split in SPLIT_NAMES:
        indices = [i for i, cell in enumerate(column) if cell == split]
        if indices:
            splits[split] = data.subset(indices)
    return _dataset(name, root, splits, path)


def read_split_dataset(
    path: Path,
    *,
    root: Path,
    image_root: Path | None = None,
    name: str | None = None,
) -> ResearchDataset:
    """A dataset from a split file in the research code's format.

    Args:
        path: The split file.
        root: The ``$DATA`` folder recorded as :attr:`ResearchDataset.root`.
        image_root: The folder the file's image paths are relative to; default the file's
            folder.
        name: The dataset's name; default ``"split:<path>"``.

    Returns:
        The dataset (``val`` ``None`` when the file has none), in file order.

    Raises:
        DataError: The file or image folder is missing, the JSON is malformed, ``train`` or
            ``test`` is missing, or a listed image is missing (each message names the file).
    """
    path = Path(path)
    name = name or f"split:{path}"
    require_file(path, name, "split file")
    image_root = Path(image_root) if image_root is not None else path.parent
    require_dir(image_root, name, "image folder")
    splits = from_coop_split(path, image_root)
    for split in ("train", "test"):
        if split not in splits:
            raise DataError(f"{name}: split file {str(path)!r} has no {split!r} split")
    kept = {s: splits[s] for s in SPLIT_NAMES if s in splits}
    for data in kept.values():
        check_images_exist(data.records, name, path)
    return _dataset(name, root, kept, path)
