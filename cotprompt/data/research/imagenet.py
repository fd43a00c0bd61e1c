"""ImageNet and its four test-only variants (ImageNet-V2, -Sketch, -A, -R), as the research code
reads them.

Every one of them names classes through a ``classnames.txt`` (lines ``<wnid> <class name>``,
CLIP's ImageNet class names; the research code's ``ImageNet.read_classnames``):

- ``imagenet/images/{train,val}/<wnid>/*``: classes are the sorted WNID folders of each split
  (label = position), the validation images are the test split (the research code evaluates on
  them and validates on them too; here ``val`` is ``None``, so that the few-shot sampler draws
  only the training images, as the research code does for ImageNet).
- ``imagenetv2/imagenetv2-matched-frequency-format-val/<label>/*``: numbered folders ``0`` ..
  ``n-1``; label ``i`` is the class on line ``i + 1`` of ``classnames.txt``.
- ``imagenet-sketch/images/<wnid>/*``, ``imagenet-adversarial/imagenet-a/<wnid>/*`` and
  ``imagenet-rendition/imagenet-r/<wnid>/*``: classes are the sorted WNID folders present (200
  for -A and -R: the 200-class subsets), each named through ``classnames.txt``;
  ``README.txt`` and other files beside the folders are not classes.

The images of a class are the visible image files of its folder, sorted by name by default
(``listing="os"``: in ``os.listdir`` order, as the research code lists them on that machine and
that copy; ``load_dataset(..., listing="os")`` passes it on).

**Repeated class names (a deviation).** The real ``classnames.txt`` (CLIP's names, from
openai/CLIP ``notebooks/Prompt_Engineering_for_ImageNet.ipynb``) names two pairs of classes
alike: ``missile`` (classes 657 and 744, ``n03773504`` and ``n04008634``) and ``sunglasses``
(836 and 837, ``n04355933`` and ``n04356056``). The research code keeps the repeats, so each pair
gets two identical prompts and ``argmax`` always predicts the first of the two. cotprompt's
datasets and tasks refuse repeated labels (an identical prompt makes a prediction ambiguous), so
here the first occurrence in ``classnames.txt`` keeps its name and each later repeat gets the
next free ``" (2)"``, ``" (3)"``... suffix (``missile (2)``, ``sunglasses (2)``), with one
warning per read naming the classes renamed. The same WNID gets the same name in every variant
(the renaming follows the file, not the folders present). Only the prompts of the renamed classes
differ from the research code's; every other class name, label and image is unaffected.

Source: KaiyangZhou/CoOp ``DATASETS.md``, ``datasets/imagenet*.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from cotprompt.data.records import ImageClassificationDataset, ImageRecord
from cotprompt.data.research.base import ResearchDataset
from cotprompt.data.research.layout import (
    Listing,
    check_class_names,
    class_folders,
    display_name,
    folder_images,
    read_lines,
    require_dir,
)
from cotprompt.errors import DataError

logger = logging.getLogger(__name__)

TEMPLATE = "a photo of a {}."
"""The research code's zero-shot template for ImageNet and its variants."""


def read_classnames(path: Path, dataset: str) -> dict[str, str]:
    """``{wnid: class name}`` of a ``classnames.txt``, in file order, as written (repeated names
    kept; see :func:`distinct_classnames`).

    Each non-blank line is ``<wnid> <class name>`` (the name may hold spaces).

    Raises:
        DataError: The file is missing, a line has no name, or a WNID repeats (naming the file
            and the line).
    """
    names: dict[str, str] = {}
    for number, line in read_lines(path, dataset):
        wnid, _, name = line.partition(" ")
        name = name.strip()
        if not name:
            raise DataError(
                f"{dataset}: {str(path)!r}, line {number}: expected '<wnid> <class name>', "
                f"got {line!r}"
            )
        if wnid in names:
            raise DataError(f"{dataset}: {str(path)!r}, line {number}: WNID {wnid!r} repeats")
        names[wnid] = name
    if not names:
        raise DataError(f"{dataset}: {str(path)!r} names no classes")
    return names


@dataclass(frozen=True)
class Renamed:
    """A class whose name repeats an earlier one of ``classnames.txt``, and its new name."""

    index: int
    """Its position in ``classnames.txt`` (0-based: the ImageNet class index)."""
    wnid: str
    name: str
    """The name the file gives it."""
    new_name: str
    first: int
    """The position of the class that keeps ``name``."""


def distinct_classnames(classnames: dict[str, str]) -> tuple[dict[str, str], list[Renamed]]:
    """The class names with every repeat made distinct, and what was renamed.

    Names are compared as prompts spell them (``_`` read as a space). The first occurrence keeps
    its name; each later one gets the first ``" (k)"`` suffix, ``k = 2, 3...``, that no class
    of the file has (``missile`` -> ``missile (2)``). Deterministic: it depends only on the file.
    """
    taken = {display_name(n) for n in classnames.values()}
    first: dict[str, int] = {}
    out: dict[str, str] = {}
    renamed: list[Renamed] = []
    for index, (wnid, name) in enumerate(classnames.items()):
        key = display_name(name)
        if key not in first:
            first[key] = index
            out[wnid] = name
            continue
        k = 2
        while display_name(f"{name} ({k})") in taken:
            k += 1
        new_name = f"{name} ({k})"
        taken.add(display_name(new_name))
        out[wnid] = new_name
        renamed.append(Renamed(index, wnid, name, new_name, first[key]))
    return out, renamed


def _distinct(
    classnames: dict[str, str], dataset: str, path: Path, used: Collection[str] | None = None
) -> dict[str, str]:
    """:func:`distinct_classnames`, with one warning naming the renamed classes among ``used``
    (the WNIDs the dataset reads; default all)."""
    classnames, renamed = distinct_classnames(classnames)
    wanted = set(classnames) if used is None else set(used)
    shown = [r for r in renamed if r.wnid in wanted]
    if shown:
        logger.warning(
            "%s: %s repeats class names (the research code keeps the repeats: identical "
            "prompts); renamed so that each class has its own prompt: %s",
            dataset,
            path,
            "; ".join(
                f"class {r.index} ({r.wnid}) {r.name!r}, as class {r.first}, -> {r.new_name!r}"
                for r in shown
            ),
        )
    return classnames


def _named(
    wnids: list[str], classnames: dict[str, str], dataset: str, source: Path, folder: Path
) -> list[str]:
    unknown = [w for w in wnids if w not in classnames]
    if unknown:
        raise DataError(
            f"{dataset}: class folder {str(folder / unknown[0])!r} is not named in "
            f"{str(source)!r} ({len(unknown)} folder(s) unnamed)"
        )
    return check_class_names([classnames[w] for w in wnids], dataset, source)


def _wnid_split(
    folder: Path, wnids: list[str], class_names: list[str], dataset: str, listing: Listing
) -> ImageClassificationDataset:
    records = [
        ImageRecord(path=path, label=label)
        for label, wnid in enumerate(wnids)
        for path in folder_images(folder / wnid, dataset, listing)
    ]
    return ImageClassificationDataset(records, class_names)


def read_imagenet(root: Path, *, listing: Listing = "sorted") -> ResearchDataset:
    """ImageNet from ``$DATA/imagenet`` (``images/train``, ``images/val``, ``classnames.txt``).

    Args:
        root: The ``$DATA`` folder.
        listing: Order of each class folder's images (see :data:`Listing`).

    Returns:
        The dataset (``train``, ``test`` = the validation images, ``val`` ``None``), 1000
        classes on a full copy.

    Raises:
        DataError: A file or folder is missing, a WNID folder is not in ``classnames.txt``, the
            train and val folders hold different classes, or a class folder has no images.
    """
    name = "imagenet"
    root = Path(root)
    base = require_dir(root / "imagenet", name, "dataset folder")
    source = base / "classnames.txt"
    raw_names = read_classnames(source, name)
    images = require_dir(base / "images", name)
    train_dir, val_dir = images / "train", images / "val"
    wnids = class_folders(train_dir, name)
    val_wnids = class_folders(val_dir, name)
    if val_wnids != wnids:
        odd = sorted(set(wnids) ^ set(val_wnids))
        raise DataError(
            f"{name}: {str(train_dir)!r} and {str(val_dir)!r} hold different class folders "
            f"({len(odd)} differ, the first {odd[0]!r})"
        )
    classnames = _distinct(raw_names, name, source, wnids)
    class_names = _named(wnids, classnames, name, source, train_dir)
    return ResearchDataset(
        name=name,
        root=root,
        class_names=class_names,
        train=_wnid_split(train_dir, wnids, class_names, name, listing),
        val=None,
        test=_wnid_split(val_dir, wnids, class_names, name, listing),
        template=TEMPLATE,
    )


def _read_wnid_variant(
    root: Path, name: str, folder: str, image_dir: str, listing: Listing
) -> ResearchDataset:
    root = Path(root)
    base = require_dir(root / folder, name, "dataset folder")
    source = base / "classnames.txt"
    raw_names = read_classnames(source, name)
    images = base / image_dir
    wnids = class_folders(images, name)
    classnames = _distinct(raw_names, name, source, wnids)
    class_names = _named(wnids, classnames, name, source, images)
    return ResearchDataset(
        name=name,
        root=root,
        class_names=class_names,
        train=None,
        val=None,
        test=_wnid_split(images, wnids, class_names, name, listing),
        template=TEMPLATE,
    )


def read_imagenet_sketch(root: Path, *, listing: Listing = "sorted") -> ResearchDataset:
    """ImageNet-Sketch from ``$DATA/imagenet-sketch`` (``images/<wnid>/``,
    ``classnames.txt``): a test split only. Raises ``DataError`` as :func:`read_imagenet`."""
    return _read_wnid_variant(root, "imagenet_sketch", "imagenet-sketch", "images", listing)


def read_imagenet_a(root: Path, *, listing: Listing = "sorted") -> ResearchDataset:
    """ImageNet-A from ``$DATA/imagenet-adversarial`` (``imagenet-a/<wnid>/``,
    ``classnames.txt``): a test split of its 200 classes, in sorted WNID order. Raises
    ``DataError`` as :func:`read_imagenet`."""
    return _read_wnid_variant(root, "imagenet_a", "imagenet-adversarial", "imagenet-a", listing)


def read_imagenet_r(root: Path, *, listing: Listing = "sorted") -> ResearchDataset:
    """ImageNet-R from ``$DATA/imagenet-rendition`` (``imagenet-r/<wnid>/``,
    ``classnames.txt``): a test split of its 200 classes, in sorted WNID order. Raises
    ``DataError`` as :func:`read_imagenet`."""
    return _read_wnid_variant(root, "imagenet_r", "imagenet-rendition", "imagenet-r", listing)


def read_imagenetv2(root: Path, *, listing: Listing = "sorted") -> ResearchDataset:
    """ImageNet-V2 (matched frequency) from ``$DATA/imagenetv2``: a test split only.

    Label ``i`` holds the images of folder
    ``imagenetv2-matched-frequency-format-val/<i>/`` and is named by line ``i + 1`` of
    ``classnames.txt`` (the research code counts to 1000; here to the number of lines of
    ``classnames.txt``, 1000 on a full copy; other numbered folders are not read).

    Raises:
        DataError: ``classnames.txt``, the image folder or a numbered folder ``0`` .. ``n-1`` is
            missing, or one has no images.
    """
    name = "imagenetv2"
    root = Path(root)
    base = require_dir(root / "imagenetv2", name, "dataset folder")
    source = base / "classnames.txt"
    classnames = _distinct(read_classnames(source, name), name, source)
    images = require_dir(base / "imagenetv2-matched-frequency-format-val", name)
    class_names = check_class_names(list(classnames.values()), name, source)
    records = [
        ImageRecord(path=path, label=label)
        for label in range(len(class_names))
        for path in folder_images(images / str(label), name, listing)
    ]
    return ResearchDataset(
        name=name,
        root=root,
        class_names=class_names,
        train=None,
        val=None,
        test=ImageClassificationDataset(records, class_names),
        template=TEMPLATE,
    )
