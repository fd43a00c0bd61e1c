"""Converters from other libraries' datasets to :class:`ImageClassificationDataset`.

A Hugging Face ``datasets.Dataset`` (an image and a label column, ``ClassLabel`` names), a
torchvision ``ImageFolder`` / ``VisionDataset`` (with ``classes``) and a list of
``(image, label)`` pairs become an :class:`~cotprompt.data.ImageClassificationDataset` whose
records keep the source order: in-memory images as ``ImageRecord(path=None, image=...)``, files
as paths. ``datasets`` and ``torchvision`` are never imported here: their objects are recognised
by their attributes.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cotprompt.data.records import ImageClassificationDataset, ImageRecord
from cotprompt.errors import DataError

__all__ = ["as_classification_dataset", "convert_if_foreign", "from_hf_dataset", "from_pairs",
           "from_torchvision"]


def _is_pil(obj: object) -> bool:
    return any(cls.__module__.startswith("PIL.") and cls.__name__ == "Image"
               for cls in type(obj).__mro__)


def _record(image: Any, label: int, where: str) -> ImageRecord:
    """A record for a PIL image, a path, or a Hugging Face ``Image(decode=False)`` dict."""
    if isinstance(image, (str, Path)):
        return ImageRecord(path=Path(image), label=label)
    if _is_pil(image):
        return ImageRecord(path=None, label=label, image=image)
    if isinstance(image, Mapping) and ("path" in image or "bytes" in image):
        if image.get("bytes") is not None:
            from PIL import Image

            return ImageRecord(path=None, label=label,
                               image=Image.open(io.BytesIO(image["bytes"])))
        if image.get("path"):
            return ImageRecord(path=Path(image["path"]), label=label)
    raise DataError(f"{where}: expected a PIL image or an image file path, got "
                    f"{type(image).__name__}")


def _label_index(label: Any, names: list[str] | None, where: str) -> int:
    if isinstance(label, str):
        if names is None or label not in names:
            raise DataError(f"{where}: label {label!r} is not one of the class names")
        return names.index(label)
    try:
        return int(label)
    except (TypeError, ValueError):
        raise DataError(f"{where}: a label must be an int or a class name, got "
                        f"{type(label).__name__}") from None


def _names_for(labels: Sequence[Any], class_names: Sequence[str] | None,
               converter: str) -> list[str]:
    """The class names: given, or the sorted distinct string labels."""
    if class_names is not None:
        return [str(name) for name in class_names]
    if labels and all(isinstance(label, str) for label in labels):
        return sorted(set(labels))
    raise DataError(f"integer labels need their class names: call {converter}(..., "
                    "class_names=[...])")


def _build(pairs: Iterable[tuple[Any, Any]], names: list[str],
           what: str) -> ImageClassificationDataset:
    records = [_record(image, _label_index(label, names, f"{what} item {i}"), f"{what} item {i}")
               for i, (image, label) in enumerate(pairs)]
    return ImageClassificationDataset(records, names)


def from_pairs(pairs: Iterable[tuple[Any, Any]],
               class_names: Sequence[str] | None = None) -> ImageClassificationDataset:
    """A dataset from ``(image, label)`` pairs, in their order.

    Args:
        pairs: Images (PIL images or file paths) with labels: class indices (then
            ``class_names`` is required) or class names.
        class_names: Class names, index = label. Without it the labels must be strings and the
            classes are their sorted distinct values.

    Raises:
        DataError: A pair that is not ``(image, label)``, integer labels without
            ``class_names``, or a label that is not a class.
    """
    items = list(pairs)
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DataError(f"pairs item {i}: expected an (image, label) pair, got "
                            f"{type(item).__name__}")
    names = _names_for([label for _, label in items], class_names, "from_pairs")
    return _build(items, names, "pairs")


def _hf_names(ds: Any, label_column: str) -> list[str] | None:
    features = getattr(ds, "features", None)
    feature = features.get(label_column) if isinstance(features, Mapping) else None
    names = getattr(feature, "names", None)
    return [str(n) for n in names] if names else None


def from_hf_dataset(ds: Any, image_column: str = "image", label_column: str = "label",
                    class_names: Sequence[str] | None = None) -> ImageClassificationDataset:
    """A dataset from a Hugging Face ``datasets.Dataset``, in row order.

    Args:
        ds: The dataset (``datasets`` need not be imported by cotprompt).
        image_column: The column of images (decoded PIL images, paths, or
            ``Image(decode=False)`` dicts).
        label_column: The column of labels.
        class_names: Class names, index = label; by default the column's ``ClassLabel`` names,
            or the sorted distinct labels when they are strings.

    Raises:
        DataError: A missing column, or labels without class names.
    """
    columns = list(getattr(ds, "column_names", None) or getattr(ds, "features", {}) or [])
    for column in (image_column, label_column):
        if column not in columns:
            raise DataError(f"the dataset has no column {column!r} (columns: {columns}); call "
                            "from_hf_dataset(ds, image_column=..., label_column=...)")
    labels = list(ds[label_column])
    names = (list(class_names) if class_names is not None
             else _hf_names(ds, label_column) or _names_for(labels, None, "from_hf_dataset"))
    return _build(((row[image_column], row[label_column]) for row in ds), names, "dataset row")


def from_torchvision(ds: Any) -> ImageClassificationDataset:
    """A dataset from a torchvision ``ImageFolder`` / ``DatasetFolder`` (file paths from its
    ``samples``; its transform is not applied) or another ``VisionDataset`` with ``classes``
    (its items, which must be PIL images: build it without a ``transform``).

    Raises:
        DataError: No ``classes``, or items that are not (PIL image, int) pairs.
    """
    classes = getattr(ds, "classes", None)
    if not classes:
        raise DataError(f"{type(ds).__name__} has no `classes`; call from_pairs(pairs, "
                        "class_names=[...]) with its (image, label) items")
    samples = getattr(ds, "samples", None)
    if samples is not None:
        pairs: Iterable[tuple[Any, Any]] = ((str(path), target) for path, target in samples)
    else:
        pairs = (ds[i] for i in range(len(ds)))
    try:
        return _build(pairs, [str(c) for c in classes], f"{type(ds).__name__}")
    except DataError as exc:
        raise DataError(f"{exc} (build the torchvision dataset without a transform)") from None


def _is_hf(obj: object) -> bool:
    return (isinstance(getattr(obj, "features", None), Mapping)
            and hasattr(obj, "column_names") and hasattr(obj, "__getitem__"))


def _is_torchvision(obj: object) -> bool:
    return (hasattr(obj, "classes") and hasattr(obj, "__getitem__") and hasattr(obj, "__len__")
            and (hasattr(obj, "samples") or any(c.__module__.startswith("torchvision.")
                                                for c in type(obj).__mro__)))


def _is_pairs(obj: object) -> bool:
    return isinstance(obj, (list, tuple)) and bool(obj) and all(
        isinstance(item, (tuple, list)) and len(item) == 2 for item in obj)


def as_classification_dataset(obj: Any) -> ImageClassificationDataset:
    """``obj`` as an :class:`ImageClassificationDataset`, converted where that is unambiguous.

    An ``ImageClassificationDataset`` is returned as is; a Hugging Face dataset with ``image``
    and ``label`` columns and ``ClassLabel`` names, a torchvision dataset with ``classes`` and a
    list of (image, class name) pairs are converted.

    Raises:
        DataError: Anything else, naming the converter to call.
    """
    if isinstance(obj, ImageClassificationDataset):
        return obj
    if _is_hf(obj):
        columns = list(obj.column_names)
        if "image" not in columns or "label" not in columns or not _hf_names(obj, "label"):
            raise DataError(f"this Hugging Face dataset (columns {columns}) has no image + "
                            "ClassLabel label columns; call from_hf_dataset(ds, image_column=..., "
                            "label_column=..., class_names=...)")
        return from_hf_dataset(obj)
    if _is_torchvision(obj):
        return from_torchvision(obj)
    if _is_pairs(obj):
        if not all(isinstance(label, str) for _, label in obj):
            raise DataError("(image, label) pairs with integer labels need their class names; "
                            "call from_pairs(pairs, class_names=[...])")
        return from_pairs(obj)
    raise DataError(f"cannot use {type(obj).__name__} as an image classification dataset; call "
                    "from_pairs, from_hf_dataset or from_torchvision (cotprompt.data)")


def convert_if_foreign(obj: Any) -> Any:
    """``obj`` converted by :func:`as_classification_dataset` when it is a Hugging Face or
    torchvision dataset or a list of pairs; anything else (cotprompt's own datasets, ``None``)
    as is."""
    if _is_hf(obj) or _is_torchvision(obj) or isinstance(obj, (list, tuple)):
        return as_classification_dataset(obj)
    return obj
