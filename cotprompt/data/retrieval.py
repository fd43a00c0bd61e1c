"""Image-text retrieval data: images with several captions each, and readers for the usual files.

Readers:

* :func:`from_karpathy`: Karpathy's split files ``dataset_flickr30k.json`` / ``dataset_coco.json``
  (``{"images": [{"filename", "filepath" (COCO only), "split", "sentences": [{"raw"}, ...]}]}``);
  ``restval`` counts as training data by default, as in the usual protocol.
* :func:`from_coco_captions`: COCO caption annotation files
  (``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``).
* :func:`from_caption_csv`: a CSV with an image path column and a caption column; an image may
  have several rows.
"""

from __future__ import annotations

import csv
import logging
import random
from collections.abc import Sequence
from pathlib import Path

from cotprompt.data.records import ImageRecord, Transform
from cotprompt.data.task_io import MissingImages, read_json, report_missing, require
from cotprompt.errors import DataError

logger = logging.getLogger("cotprompt.tasks.retrieval_data")  # the logger name it has always had

KARPATHY_SPLITS = ("train", "val", "test", "restval")


class RetrievalDataset:
    """Images, each with one or more captions (the Flickr30k / MSCOCO layout).

    Captions keep their text as given (stripped of surrounding white space). Captions with the
    same text are scored once; see :mod:`cotprompt.tasks.retrieval` for how they are counted.

    Args:
        images: The images (files or in-memory), one record each; record labels are unused.
        captions: ``captions[i]``: the captions of image ``i`` (at least one).
        transform: Optional callable applied to each RGB image (PIL -> ``[3, H, W]`` tensor).

    Raises:
        DataError: No images, a length mismatch, an image without captions or a blank caption.
    """

    def __init__(
        self,
        images: Sequence[ImageRecord],
        captions: Sequence[Sequence[str]],
        transform: Transform | None = None,
    ) -> None:
        self.images: list[ImageRecord] = list(images)
        self.captions: list[tuple[str, ...]] = [
            tuple(str(c).strip() for c in group) for group in captions
        ]
        self.transform = transform
        if not self.images:
            raise DataError("a retrieval dataset needs at least one image; got none")
        if len(self.images) != len(self.captions):
            raise DataError(
                f"{len(self.images)} images but {len(self.captions)} caption lists; "
                "give one list per image"
            )
        for i, group in enumerate(self.captions):
            if not group:
                raise DataError(f"image {self.images[i].describe()} has no caption")
            if any(not c for c in group):
                raise DataError(f"image {self.images[i].describe()} has a blank caption")

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.num_images} images, {self.num_captions} captions, "
            f"transform={self.transform!r})"
        )

    @property
    def num_images(self) -> int:
        """N, the number of images."""
        return len(self.images)

    @property
    def num_captions(self) -> int:
        """T, the number of captions (all images)."""
        return sum(len(group) for group in self.captions)

    def caption_entries(self) -> tuple[list[str], list[int]]:
        """All T captions in image order, and the image index of each."""
        texts: list[str] = []
        owners: list[int] = []
        for i, group in enumerate(self.captions):
            texts.extend(group)
            owners.extend([i] * len(group))
        return texts, owners

    def unique_captions(self) -> tuple[list[str], list[int], list[int]]:
        """The U distinct caption texts (first-seen order), and for each of the T captions its
        text index (into the U) and its image index."""
        texts, owners = self.caption_entries()
        index: dict[str, int] = {}
        entry_text = [index.setdefault(t, len(index)) for t in texts]
        return list(index), entry_text, owners

    def with_transform(self, transform: Transform | None) -> RetrievalDataset:
        """A copy sharing the images and captions, with another transform."""
        return RetrievalDataset(self.images, self.captions, transform)

    def subset(self, indices: Sequence[int]) -> RetrievalDataset:
        """The images at ``indices`` (in that order) with their captions.

        Raises:
            DataError: Empty or out-of-range indices.
        """
        n = len(self.images)
        idx = [int(i) for i in indices]
        if not idx:
            raise DataError("subset needs at least one index; got none")
        bad = [i for i in idx if not 0 <= i < n]
        if bad:
            raise DataError(f"subset indices out of range for {n} images: {bad[:10]}")
        return RetrievalDataset(
            [self.images[i] for i in idx], [self.captions[i] for i in idx], self.transform
        )

    def fraction(self, fraction: float, seed: int = 1) -> RetrievalDataset:
        """A random ``fraction`` of the images (at least one), the same for the same seed
        (for few-shot retrieval training, or a quick run).

        Raises:
            DataError: ``fraction`` outside (0, 1].
        """
        if not 0 < fraction <= 1:
            raise DataError(f"fraction must be in (0, 1], got {fraction}")
        count = max(1, round(fraction * len(self.images)))
        chosen = sorted(random.Random(seed).sample(range(len(self.images)), count))
        return self.subset(chosen)


def _build(
    paths: list[Path], captions: list[list[str]], missing_images: MissingImages, what: str
) -> RetrievalDataset:
    drop = report_missing(paths, missing_images, what)
    kept = [i for i in range(len(paths)) if i not in drop]
    if not kept:
        raise DataError(f"{what}: no images left")
    return RetrievalDataset(
        [ImageRecord(paths[i], 0) for i in kept], [captions[i] for i in kept]
    )


def from_karpathy(
    path: str | Path,
    image_root: str | Path,
    split: str = "test",
    *,
    restval_as_train: bool = True,
    missing_images: MissingImages = "error",
) -> RetrievalDataset:
    """Read one split of a Karpathy split file (Flickr30k, MSCOCO, Flickr8k).

    Args:
        path: ``dataset_flickr30k.json`` / ``dataset_coco.json``.
        image_root: Folder of the images; an entry's file is
            ``image_root / filepath / filename`` (``filepath`` is absent for Flickr30k).
        split: ``train``, ``val``, ``test`` or ``restval``.
        restval_as_train: ``split="train"`` also takes the ``restval`` images (the usual
            MSCOCO 113k training set).
        missing_images: ``error`` (default) or ``skip`` (with a warning) for absent files.

    Raises:
        DataError: Unreadable or malformed file, unknown or empty split, missing images.
    """
    if split not in KARPATHY_SPLITS:
        raise DataError(f"unknown Karpathy split {split!r}; choose one of {KARPATHY_SPLITS}")
    data = read_json(path, "Karpathy split file")
    entries = require(data, "images", f"Karpathy split file {str(path)!r}")
    if not isinstance(entries, list):
        raise DataError(f"Karpathy split file {str(path)!r}: 'images' must be a list")
    wanted = {split} | ({"restval"} if split == "train" and restval_as_train else set())
    root = Path(image_root)
    paths: list[Path] = []
    captions: list[list[str]] = []
    for n, entry in enumerate(entries):
        where = f"Karpathy split file {str(path)!r}, images[{n}]"
        entry_split = require(entry, "split", where)
        if not isinstance(entry_split, str):
            raise DataError(f"{where}: 'split' must be a string, got {entry_split!r}")
        if entry_split not in wanted:
            continue
        sentences = require(entry, "sentences", where)
        if not isinstance(sentences, list):
            raise DataError(f"{where}: 'sentences' must be a list")
        texts = []
        for m, sentence in enumerate(sentences):
            raw = require(sentence, "raw", f"{where}.sentences[{m}]")
            if not isinstance(raw, str):
                raise DataError(f"{where}.sentences[{m}]: 'raw' must be a string, got {raw!r}")
            texts.append(raw.strip())
        texts = [t for t in texts if t]
        if not texts:
            raise DataError(f"{where}: no non-empty sentence")
        folder = entry.get("filepath") or ""
        filename = require(entry, "filename", where)
        for key, value in (("filepath", folder), ("filename", filename)):
            if not isinstance(value, str):
                raise DataError(f"{where}: {key!r} must be a string, got {value!r}")
        paths.append(root / folder / filename)
        captions.append(texts)
    if not paths:
        found = sorted({str(e.get("split")) for e in entries if isinstance(e, dict)})
        raise DataError(
            f"Karpathy split file {str(path)!r} has no images in split {split!r} "
            f"(splits found: {found})"
        )
    return _build(paths, captions, missing_images, f"Karpathy split {split!r} of {str(path)!r}")


def _is_id(value: object) -> bool:
    """An id in a JSON file: a string or an integer."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def from_coco_captions(
    annotation_file: str | Path,
    image_root: str | Path,
    *,
    missing_images: MissingImages = "error",
) -> RetrievalDataset:
    """Read a COCO caption annotation file (``captions_val2014.json``...).

    Images without any caption are left out (with a log message).

    Raises:
        DataError: Unreadable or malformed file, a caption of an unknown image, missing images.
    """
    where = f"COCO caption file {str(annotation_file)!r}"
    data = read_json(annotation_file, "COCO caption file")
    images = require(data, "images", where)
    annotations = require(data, "annotations", where)
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise DataError(f"{where}: 'images' and 'annotations' must be lists")
    files: dict[object, str] = {}
    for n, image in enumerate(images):
        image_id = require(image, "id", f"{where}, images[{n}]")
        file_name = require(image, "file_name", f"{where}, images[{n}]")
        if not _is_id(image_id) or not isinstance(file_name, str):
            raise DataError(f"{where}, images[{n}]: 'id' must be a number or string and "
                            f"'file_name' a string, got {image_id!r} and {file_name!r}")
        files[image_id] = file_name
    grouped: dict[object, list[str]] = {key: [] for key in files}
    for n, ann in enumerate(annotations):
        image_id = require(ann, "image_id", f"{where}, annotations[{n}]")
        if not _is_id(image_id) or image_id not in grouped:
            raise DataError(f"{where}, annotations[{n}]: unknown image_id {image_id!r}")
        caption = require(ann, "caption", f"{where}, annotations[{n}]")
        if not isinstance(caption, str):
            raise DataError(f"{where}, annotations[{n}]: 'caption' must be a string, "
                            f"got {caption!r}")
        caption = caption.strip()
        if caption:
            grouped[image_id].append(caption)
    empty = [key for key, group in grouped.items() if not group]
    if empty:
        logger.info("%s: %d image(s) without captions left out", where, len(empty))
    keys = [key for key, group in grouped.items() if group]
    if not keys:
        raise DataError(f"{where} has no captioned images")
    root = Path(image_root)
    return _build(
        [root / files[k] for k in keys], [grouped[k] for k in keys], missing_images, where
    )


def from_caption_csv(
    path: str | Path,
    root: str | Path | None = None,
    *,
    image_column: str = "image",
    caption_column: str = "caption",
    missing_images: MissingImages = "error",
) -> RetrievalDataset:
    """Read a CSV of image paths and captions (a header row names the columns).

    Rows with the same image are one image with several captions, in file order.

    Args:
        path: The CSV file.
        root: Folder that relative image paths start from (default: the CSV's folder).
        image_column: Header of the image path column.
        caption_column: Header of the caption column.
        missing_images: ``error`` (default) or ``skip`` (with a warning) for absent files.

    Raises:
        DataError: Unreadable file, missing columns, blank cells, missing images.
    """
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            absent = [c for c in (image_column, caption_column) if c not in header]
            if absent:
                raise DataError(
                    f"caption CSV {str(path)!r} lacks column(s) {absent}; its header is {header}"
                )
            grouped: dict[str, list[str]] = {}
            for line, row in enumerate(reader, start=2):
                image = (row.get(image_column) or "").strip()
                caption = (row.get(caption_column) or "").strip()
                if not image or not caption:
                    raise DataError(
                        f"caption CSV {str(path)!r}, line {line}: blank image or caption"
                    )
                grouped.setdefault(image, []).append(caption)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read caption CSV {str(path)!r}: {exc}") from exc
    if not grouped:
        raise DataError(f"caption CSV {str(path)!r} has no rows")
    paths = [Path(p) if Path(p).is_absolute() else base / p for p in grouped]
    return _build(paths, list(grouped.values()), missing_images, f"caption CSV {str(path)!r}")
