"""The nine datasets the research code reads from its fixed split files (``split_zhou_*.json``).

Caltech101, OxfordPets, StanfordCars, Flowers102, Food101, SUN397, DTD, EuroSAT and UCF101: with
its split file in place, the research code (CoOp's ``datasets/<name>.py``,
``OxfordPets.read_split``) reads only that file: ``{"train", "val", "test"}`` lists of
``[image path relative to the image folder, label, class name]``, in file order. Nothing else of
the dataset's folder is read (``cat_to_name.json``, ``imagelabels.mat``, the ``.mat`` files of
StanfordCars and the partition files only served to create the split once). Where the split file
is missing the research code would draw a new random split and save it; cotprompt refuses
instead, since another split would not compare with published numbers.

Source: KaiyangZhou/CoOp ``DATASETS.md`` and ``datasets/*.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cotprompt.data.research.base import ResearchDataset
from cotprompt.data.research.layout import (
    check_every_class,
    check_images_exist,
    require_dir,
    require_file,
)
from cotprompt.data.sources import from_coop_split
from cotprompt.errors import DataError

SPLITS: tuple[str, ...] = ("train", "val", "test")


def read_split_file(
    name: str,
    split_file: Path,
    image_root: Path,
    *,
    root: Path,
    template: str,
) -> ResearchDataset:
    """A dataset from a split file in the research code's format.

    Args:
        name: The dataset's name (for messages and :attr:`ResearchDataset.name`).
        split_file: The ``split_zhou_*.json`` file.
        image_root: The folder its image paths are relative to.
        root: The ``$DATA`` folder, recorded as :attr:`ResearchDataset.root`.
        template: The zero-shot template.

    Returns:
        The dataset: ``train``, ``val`` and ``test`` in file order; class ``label`` is the name
        the file gives it, ``_`` read as a space.

    Raises:
        DataError: The file or image folder is missing, the JSON is malformed, a split is
            missing, labels and names disagree, a class has no training image, or a listed image
            is missing (each message names the file).
    """
    require_file(split_file, name, "split file")
    require_dir(image_root, name, "image folder")
    splits = from_coop_split(split_file, image_root)
    for split in SPLITS:
        if split not in splits:
            raise DataError(
                f"{name}: split file {str(split_file)!r} has no {split!r} split "
                f"(it holds {sorted(splits)})"
            )
    check_every_class(splits["train"], name, split_file, "train")
    for split in SPLITS:
        check_images_exist(splits[split].records, name, split_file)
    return ResearchDataset(
        name=name,
        root=root,
        class_names=list(splits["train"].class_names),
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        template=template,
    )


@dataclass(frozen=True)
class SplitFileLayout:
    """One dataset read from ``$DATA/<folder>/<split_file>``; a :data:`DatasetReader`.

    Attributes:
        name: The registered name (``caltech101``).
        folder: Its folder under ``$DATA`` (``caltech-101``).
        split_file: The split file's name in that folder.
        image_dir: The folder, relative to ``folder``, that the split file's paths start from
            (``""`` for ``folder`` itself, as for StanfordCars).
        template: The research code's zero-shot template (``CUSTOM_TEMPLATES``).
    """

    name: str
    folder: str
    split_file: str
    image_dir: str
    template: str

    def __call__(self, root: Path) -> ResearchDataset:
        """Read the dataset from the ``$DATA`` folder ``root`` (see :func:`read_split_file`)."""
        root = Path(root)
        base = require_dir(root / self.folder, self.name, "dataset folder")
        image_root = base / self.image_dir if self.image_dir else base
        return read_split_file(
            self.name, base / self.split_file, image_root, root=root, template=self.template
        )


CALTECH101 = SplitFileLayout(
    "caltech101", "caltech-101", "split_zhou_Caltech101.json", "101_ObjectCategories",
    "a photo of a {}.",
)
OXFORD_PETS = SplitFileLayout(
    "oxford_pets", "oxford_pets", "split_zhou_OxfordPets.json", "images",
    "a photo of a {}, a type of pet.",
)
STANFORD_CARS = SplitFileLayout(
    "stanford_cars", "stanford_cars", "split_zhou_StanfordCars.json", "", "a photo of a {}."
)
OXFORD_FLOWERS = SplitFileLayout(
    "oxford_flowers", "oxford_flowers", "split_zhou_OxfordFlowers.json", "jpg",
    "a photo of a {}, a type of flower.",
)
FOOD101 = SplitFileLayout(
    "food101", "food-101", "split_zhou_Food101.json", "images", "a photo of {}, a type of food."
)
SUN397 = SplitFileLayout(
    "sun397", "sun397", "split_zhou_SUN397.json", "SUN397", "a photo of a {}."
)
DTD = SplitFileLayout(
    "dtd", "dtd", "split_zhou_DescribableTextures.json", "images", "{} texture."
)
EUROSAT = SplitFileLayout(
    "eurosat", "eurosat", "split_zhou_EuroSAT.json", "2750", "a centered satellite photo of {}."
)
UCF101 = SplitFileLayout(
    "ucf101", "ucf101", "split_zhou_UCF101.json", "UCF-101-midframes",
    "a photo of a person doing {}.",
)

SPLIT_FILE_LAYOUTS: tuple[SplitFileLayout, ...] = (
    CALTECH101,
    OXFORD_PETS,
    STANFORD_CARS,
    OXFORD_FLOWERS,
    FOOD101,
    SUN397,
    DTD,
    EUROSAT,
    UCF101,
)
"""The nine split-file datasets, in the order of the research code's ``DATASETS.md``."""
