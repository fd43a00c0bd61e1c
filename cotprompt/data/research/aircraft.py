"""FGVC-Aircraft (variants), as the research code reads it from ``$DATA/fgvc_aircraft``.

The folder is the ``data/`` folder of ``fgvc-aircraft-2013b``: ``variants.txt`` lists the 100
variants, one per line (label = line order), and ``images_variant_{train,val,test}.txt`` list
``<image id> <variant>`` per line (the variant may hold spaces); the image is
``images/<image id>.jpg``. Blank lines are skipped. There is no split file; the splits are the
dataset's own.

Source: KaiyangZhou/CoOp ``DATASETS.md``, ``datasets/fgvc_aircraft.py``.
"""

from __future__ import annotations

from pathlib import Path

from cotprompt.data.records import ImageClassificationDataset, ImageRecord
from cotprompt.data.research.base import ResearchDataset
from cotprompt.data.research.layout import (
    check_class_names,
    check_every_class,
    check_images_exist,
    read_lines,
    require_dir,
)
from cotprompt.errors import DataError

NAME = "fgvc_aircraft"
TEMPLATE = "a photo of a {}, a type of aircraft."


def _read_split(
    path: Path, images: Path, labels: dict[str, int], class_names: list[str]
) -> ImageClassificationDataset:
    records: list[ImageRecord] = []
    for number, line in read_lines(path, NAME):
        image_id, _, variant = line.partition(" ")
        variant = variant.strip()
        if not variant:
            raise DataError(
                f"{NAME}: {str(path)!r}, line {number}: expected '<image id> <variant>', "
                f"got {line!r}"
            )
        if variant not in labels:
            raise DataError(
                f"{NAME}: {str(path)!r}, line {number}: variant {variant!r} is not in "
                "variants.txt"
            )
        records.append(ImageRecord(path=images / f"{image_id}.jpg", label=labels[variant]))
    if not records:
        raise DataError(f"{NAME}: {str(path)!r} lists no images")
    return ImageClassificationDataset(records, class_names)


def read_fgvc_aircraft(root: Path) -> ResearchDataset:
    """FGVC-Aircraft from ``$DATA/fgvc_aircraft``.

    Args:
        root: The ``$DATA`` folder.

    Returns:
        The dataset: ``train``, ``val`` and ``test`` in the order of their list files; class
        names as ``variants.txt`` spells them (``"707-320"``, ``"A300B4"``...).

    Raises:
        DataError: A file or folder is missing, ``variants.txt`` repeats a variant, a line
            names an unknown variant or is malformed, a variant has no training image, or a
            listed image is missing (each message names the file).
    """
    root = Path(root)
    base = require_dir(root / "fgvc_aircraft", NAME, "dataset folder")
    images = require_dir(base / "images", NAME, "image folder")
    variants_file = base / "variants.txt"
    variants = [line for _, line in read_lines(variants_file, NAME)]
    class_names = check_class_names(variants, NAME, variants_file)
    labels = {variant: label for label, variant in enumerate(variants)}
    splits: dict[str, ImageClassificationDataset] = {}
    for split in ("train", "val", "test"):
        path = base / f"images_variant_{split}.txt"
        splits[split] = _read_split(path, images, labels, class_names)
        check_images_exist(splits[split].records, NAME, path)
    check_every_class(splits["train"], NAME, base / "images_variant_train.txt", "train")
    return ResearchDataset(
        name=NAME,
        root=root,
        class_names=class_names,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        template=TEMPLATE,
    )
