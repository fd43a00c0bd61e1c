"""Image records and the in-memory classification dataset built from them."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch.utils.data import Dataset

from cotprompt.data.images import load_image, to_rgb
from cotprompt.errors import DataError

if TYPE_CHECKING:
    from PIL import Image

Transform = Callable[["Image.Image"], Any]
"""A callable that turns an RGB PIL image into a model input (usually a ``[3, H, W]`` tensor)."""


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One labelled image, either a file on disk or an in-memory PIL image.

    Records are hashable; two records are equal when they have the same label and the same path
    or, for in-memory records, the very same image object.

    Args:
        path: Path of the image file, or ``None`` for an in-memory image.
        label: Class index (into the dataset's ``class_names``).
        image: The in-memory image when ``path`` is ``None``.
    """

    path: Path | None
    label: int
    image: Image.Image | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.path is None and self.image is None:
            raise DataError("an image record needs a file path or an in-memory image")
        if self.path is not None and not isinstance(self.path, Path):
            object.__setattr__(self, "path", Path(self.path))
        if isinstance(self.label, bool) or not isinstance(self.label, numbers.Integral):
            raise DataError(f"record label must be an int, got {self.label!r} ({self.describe()})")
        object.__setattr__(self, "label", int(self.label))

    def _key(self) -> tuple[Path | None, int, int | None]:
        return (self.path, self.label, id(self.image) if self.path is None else None)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageRecord):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def describe(self) -> str:
        """A short human-readable name for messages: the path, or ``"<in-memory image>"``."""
        return str(self.path) if self.path is not None else "<in-memory image>"

    def load(self) -> Image.Image:
        """The image as RGB, as a viewer shows it (:func:`~cotprompt.data.images.load_image`
        for a file, :func:`~cotprompt.data.images.to_rgb` for the in-memory image).

        Raises:
            DataError: The file is missing, is not a readable image, or cannot be shown.
        """
        if self.path is not None:
            return load_image(self.path)
        assert self.image is not None
        return to_rgb(self.image)


class ImageClassificationDataset(Dataset):
    """A list of labelled images with their class names.

    ``dataset[i]`` returns ``(x, label)`` where ``x`` is ``transform(rgb_pil_image)`` (usually a
    tensor ``[3, H, W]``) or the RGB PIL image itself when there is no transform.

    Args:
        records: The images; at least one.
        class_names: Class names, index = label; unique and non-empty. A class may have no
            records (see :meth:`check_nonempty_classes`).
        transform: Optional callable applied to each RGB PIL image.

    Raises:
        DataError: No records, a label out of range, or blank / duplicate class names.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        class_names: Sequence[str],
        transform: Transform | None = None,
    ) -> None:
        self.records: list[ImageRecord] = list(records)
        self.class_names: list[str] = [str(name) for name in class_names]
        self.transform = transform
        self._validate()

    def _validate(self) -> None:
        if not self.class_names:
            raise DataError("a dataset needs at least one class name; got an empty list")
        blank = [i for i, name in enumerate(self.class_names) if not name.strip()]
        if blank:
            raise DataError(f"class names must be non-empty; blank name(s) at index {blank[:10]}")
        seen: dict[str, int] = {}
        for i, name in enumerate(self.class_names):
            if name in seen:
                raise DataError(
                    f"duplicate class name {name!r} at index {seen[name]} and {i}; "
                    "class names must be unique"
                )
            seen[name] = i
        if not self.records:
            raise DataError("a dataset needs at least one image record; got none")
        n = len(self.class_names)
        bad = [r for r in self.records if not 0 <= r.label < n]
        if bad:
            shown = ", ".join(f"{r.describe()} (label {r.label})" for r in bad[:5])
            raise DataError(
                f"{len(bad)} record(s) have a label outside 0..{n - 1} ({n} class names): {shown}"
            )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        record = self.records[index]
        image = record.load()
        return (self.transform(image) if self.transform is not None else image), record.label

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self.records)} images, {self.num_classes} classes, "
            f"transform={self.transform!r})"
        )

    @property
    def labels(self) -> list[int]:
        """The label of every record, in record order."""
        return [r.label for r in self.records]

    @property
    def num_classes(self) -> int:
        """C, the number of classes (including classes without records)."""
        return len(self.class_names)

    def class_counts(self) -> list[int]:
        """Number of records of each class; ``counts[label]``, length C."""
        counts = [0] * self.num_classes
        for r in self.records:
            counts[r.label] += 1
        return counts

    def check_nonempty_classes(self) -> None:
        """Raise if some class has no records.

        Raises:
            DataError: Naming every class without records.
        """
        empty = [self.class_names[c] for c, k in enumerate(self.class_counts()) if k == 0]
        if empty:
            raise DataError(f"{len(empty)} class(es) have no images: {empty}")

    def with_transform(self, transform: Transform | None) -> ImageClassificationDataset:
        """A copy sharing the records and class names, with another transform."""
        return ImageClassificationDataset(self.records, self.class_names, transform)

    def subset(self, indices: Sequence[int]) -> ImageClassificationDataset:
        """A dataset with the records at ``indices`` (in that order), same classes and transform.

        Raises:
            DataError: An index is out of range, or ``indices`` is empty.
        """
        n = len(self.records)
        idx = [int(i) for i in indices]
        bad = [i for i in idx if not -n <= i < n]
        if bad:
            raise DataError(f"subset indices out of range for {n} records: {bad[:10]}")
        if not idx:
            raise DataError("subset needs at least one index; got none")
        return ImageClassificationDataset(
            [self.records[i] for i in idx], self.class_names, self.transform
        )
