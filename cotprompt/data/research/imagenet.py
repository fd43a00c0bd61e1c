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
(``listing="os"``: in ``os.listdir`` order, as the research code lists them on that machine).

Source: KaiyangZhou/CoOp ``DATASETS.md``, ``datasets/imagenet*.py``.
"""

from __future__ import annotations

from pathlib import Path

from cotprompt.data.records import ImageClassificationDataset, ImageRecord
from cotprompt.data.research.base import ResearchDataset
from cotprompt.data.research.layout import (
    Listing,
    check_class_names,
    class_folders,
    folder_images,
    read_lines,
    require_dir,
)
from cotprompt.errors import DataError

TEMPLATE = "a photo of a {}."
"""The research code's zero-shot template for ImageNet and its variants."""


def read_classnames(path: Path, dataset: str) -> dict[str, str]:
    """``{wnid: class name}`` of a ``classnames.txt``, in file order.

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
    classnames = read_classnames(source, name)
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
    classnames = read_classnames(source, name)
    images = base / image_dir
    wnids = class_folders(images, name)
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
    classnames = read_classnames(source, name)
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
