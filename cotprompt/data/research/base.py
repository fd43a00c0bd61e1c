"""A dataset as the research code (CoOp / CoCoOp on Dassl) reads it from ``$DATA``.

Readers of the standard layouts (see ``docs/protocols.md``) return a :class:`ResearchDataset`:
its splits keep the research code's record order (the order of its split files or folder
listings), which the research code's few-shot sampler depends on
(:func:`cotprompt.data.research.fewshot.research_few_shot`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cotprompt.data.records import ImageClassificationDataset, ImageRecord
from cotprompt.errors import DataError


@dataclass(frozen=True)
class ResearchDataset:
    """The splits of one standard dataset.

    Attributes:
        name: The registered name (``caltech101``, ``oxford_pets``, ``imagenet``...).
        root: The ``$DATA`` folder it was read from.
        class_names: Class names, index = label, as the research code names them.
        train: Training split (``None`` for test-only datasets such as ImageNet-Sketch).
        val: Validation split (``None`` where the research code has none).
        test: Test split.
        template: The hand-written zero-shot template of the research code's
            ``CUSTOM_TEMPLATES`` (``"a photo of a {}, a type of pet."``).
    """

    name: str
    root: Path
    class_names: list[str]
    train: ImageClassificationDataset | None
    val: ImageClassificationDataset | None
    test: ImageClassificationDataset
    template: str

    def relative_path(self, record: ImageRecord) -> str:
        """The image's path relative to ``root`` (POSIX separators), as results record it.

        Paths are compared as written (made absolute, symbolic links not followed), so a
        ``$DATA/<dataset>`` that links elsewhere, as the research code's ``DATASETS.md``
        suggests, still gives ``"<dataset>/..."``.

        Raises:
            DataError: The record has no path (an in-memory image) or lies outside ``root``.
        """
        if record.path is None:
            raise DataError(f"{self.name}: an in-memory image has no path relative to $DATA")
        base = os.path.abspath(self.root)
        path = os.path.abspath(record.path)
        try:
            inside = os.path.commonpath([base, path]) == base
        except ValueError:  # another drive
            inside = False
        if not inside:
            raise DataError(f"{self.name}: image {path!r} is not under $DATA {base!r}")
        return Path(os.path.relpath(path, base)).as_posix()


#: A reader: ``$DATA`` folder -> the dataset (raises ``DataError`` naming a missing file).
DatasetReader = Callable[[Path], ResearchDataset]
