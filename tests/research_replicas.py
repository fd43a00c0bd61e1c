"""Miniature replicas of the 15 ``$DATA`` layouts of the research code's ``DATASETS.md``.

Each replica holds a few real images (CIFAR-10 from ``../shared/data/cifar10-mini``, ImageNet
photos from ``../shared/data/imagenet-samples``) under the research code's file names, with its
split and meta files in the research code's formats (``split_zhou_*.json``, ``classnames.txt``,
``variants.txt`` and ``images_variant_*.txt``, numbered ImageNet-V2 folders, WNID folders with a
``README.txt`` beside them). :func:`build_replicas` writes them and returns what a faithful
reader must find: class names, and each split's images relative to ``$DATA`` in order.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class Expected:
    """What reading one replica must give."""

    name: str
    folder: str
    class_names: list[str]
    splits: dict[str, list[str]] = field(default_factory=dict)
    """``train`` / ``val`` / ``test`` -> image paths relative to ``$DATA``, in record order."""
    labels: dict[str, list[int]] = field(default_factory=dict)


def require_shared(shared: Path) -> tuple[Path, Path]:
    """The CIFAR-10 and ImageNet sample folders, or a skip saying what is missing."""
    cifar, imagenet = shared / "cifar10-mini" / "train", shared / "imagenet-samples"
    for folder in (cifar, imagenet):
        if not folder.is_dir():
            pytest.skip(f"replicas need the shared test data at {folder}")
    return cifar, imagenet


class _Images:
    """Real images handed out in turn: CIFAR-10 images, or one ImageNet photo per WNID."""

    def __init__(self, cifar: Path, imagenet: Path) -> None:
        self.cifar = sorted(cifar.glob("*/*.jpg"))
        self.photos = {p.name.split("_")[0]: p for p in sorted(imagenet.glob("n*.JPEG"))}
        self.wnid_names = {
            wnid: name.replace("_", " ")
            for wnid, name in (
                line.split("\t") for line in
                (imagenet / "classes.tsv").read_text(encoding="utf-8").splitlines() if line
            )
        }
        self.next = 0

    def put(self, path: Path, wnid: str | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if wnid is not None:
            source = self.photos[wnid]
        else:
            source = self.cifar[self.next % len(self.cifar)]
            self.next += 1
        shutil.copyfile(source, path)


# name, folder, split file, image folder, [(label name in the file, folder or None)],
# image path (class folder or name, split, unique number) -> path relative to the image folder
_SPLIT_FILES = [
    ("caltech101", "caltech-101", "split_zhou_Caltech101.json", "101_ObjectCategories",
     [("face", "Faces"), ("leopard", "Leopards"), ("accordion", "accordion")],
     lambda folder, split, i: f"{folder}/image_{i + 1:04d}.jpg"),
    ("oxford_pets", "oxford_pets", "split_zhou_OxfordPets.json", "images",
     [("abyssinian", "Abyssinian"), ("american_bulldog", "american_bulldog"),
      ("yorkshire_terrier", "yorkshire_terrier")],
     lambda folder, split, i: f"{folder}_{i + 1}.jpg"),
    ("stanford_cars", "stanford_cars", "split_zhou_StanfordCars.json", "",
     [("2012 Audi TTS Coupe", None), ("2012 Acura TL Sedan", None),
      ("2007 Chevrolet Express Van", None)],
     lambda folder, split, i: f"cars_{'test' if split == 'test' else 'train'}/{i:05d}.jpg"),
    ("oxford_flowers", "oxford_flowers", "split_zhou_OxfordFlowers.json", "jpg",
     [("pink primrose", None), ("hard-leaved pocket orchid", None), ("canterbury bells", None)],
     lambda folder, split, i: f"image_{i:05d}.jpg"),
    ("food101", "food-101", "split_zhou_Food101.json", "images",
     [("apple_pie", "apple_pie"), ("baby_back_ribs", "baby_back_ribs"), ("baklava", "baklava")],
     lambda folder, split, i: f"{folder}/{1005649 + i}.jpg"),
    ("sun397", "sun397", "split_zhou_SUN397.json", "SUN397",
     [("abbey", "a/abbey"), ("indoor apse", "a/apse/indoor"), ("airport_terminal",
                                                                 "a/airport_terminal")],
     lambda folder, split, i: f"{folder}/sun_{i:06d}.jpg"),
    ("dtd", "dtd", "split_zhou_DescribableTextures.json", "images",
     [("banded", "banded"), ("blotchy", "blotchy"), ("braided", "braided")],
     lambda folder, split, i: f"{folder}/{folder}_{i:04d}.jpg"),
    ("eurosat", "eurosat", "split_zhou_EuroSAT.json", "2750",
     [("Annual Crop Land", "AnnualCrop"), ("Forest", "Forest"), ("Sea or Lake", "SeaLake")],
     lambda folder, split, i: f"{folder}/{folder}_{i + 1}.jpg"),
    ("ucf101", "ucf101", "split_zhou_UCF101.json", "UCF-101-midframes",
     [("Apply_Eye_Makeup", "Apply_Eye_Makeup"), ("Archery", "Archery"),
      ("Band_Marching", "Band_Marching")],
     lambda folder, split, i: (
         f"{folder}/v_{folder.replace('_', '')}_g{i:02d}_c01.jpg")),
]

#: Images per class and split; the training lists put class 1 first (labels in order of first
#: appearance differ from label order) and each class's images out of name order.
_COUNTS = {"train": 5, "val": 3, "test": 2}
_TRAIN_CLASS_ORDER = (1, 0, 2)
_WNIDS = ("n01440764", "n01496331", "n01530575")  # tench, electric ray, brambling
_AR_WNIDS = ("n09472597", "n01558993", "n07747607")  # volcano, robin, orange: not sorted


def _split_file_replica(data: Path, images: _Images, spec: tuple) -> Expected:
    name, folder, split_file, image_dir, classes, image_path = spec
    base = data / folder
    image_root = base / image_dir if image_dir else base
    expected = Expected(name, folder, [raw.replace("_", " ") for raw, _ in classes])
    content: dict[str, list[list[object]]] = {}
    number = 1
    for split, count in _COUNTS.items():
        order = _TRAIN_CLASS_ORDER if split == "train" else range(len(classes))
        items: list[list[object]] = []
        for label in order:
            raw, sub = classes[label]
            for _ in range(count):
                number = (number * 7 + 3) % 997  # unique, out of name order
                rel = image_path(sub or raw, split, number)
                images.put(image_root / rel)
                items.append([rel, label, raw])
        content[split] = items
        prefix = f"{folder}/{image_dir}/" if image_dir else f"{folder}/"
        expected.splits[split] = [prefix + str(item[0]) for item in items]
        expected.labels[split] = [int(str(item[1])) for item in items]
    (base / split_file).write_text(json.dumps(content, indent=4), encoding="utf-8")
    return expected


def _aircraft_replica(data: Path, images: _Images) -> Expected:
    base = data / "fgvc_aircraft"
    variants = ["707-320", "A300B4", "F/A-18"]
    (base / "images").mkdir(parents=True)
    (base / "variants.txt").write_text("\n".join(variants) + "\n", encoding="utf-8")
    expected = Expected("fgvc_aircraft", "fgvc_aircraft", variants)
    number = 1025794
    for split, count in _COUNTS.items():
        lines, paths, labels = [], [], []
        for label in (2, 0, 1) if split == "train" else (0, 1, 2):
            for _ in range(count):
                number -= 7
                images.put(base / "images" / f"{number:07d}.jpg")
                lines.append(f"{number:07d} {variants[label]}")
                paths.append(f"fgvc_aircraft/images/{number:07d}.jpg")
                labels.append(label)
        (base / f"images_variant_{split}.txt").write_text(
            "\n".join(lines) + "\n", encoding="utf-8"
        )
        expected.splits[split], expected.labels[split] = paths, labels
    for extra in ("images_family_train.txt", "manufacturers.txt"):  # beside them, not read
        (base / extra).write_text("", encoding="utf-8")
    return expected


def _classnames(images: _Images, path: Path, wnids: list[str] | None = None) -> None:
    chosen = wnids if wnids is not None else list(images.wnid_names)
    lines = [f"{wnid} {images.wnid_names[wnid]}" for wnid in chosen]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _wnid_folders(
    images: _Images, root: Path, data: Path, wnids: tuple[str, ...], file_name: str, count: int
) -> tuple[list[str], list[int]]:
    for wnid in wnids:
        for i in range(count):
            images.put(root / wnid / file_name.format(wnid=wnid, i=i), wnid)
    paths, labels = [], []
    for label, wnid in enumerate(sorted(wnids)):
        for image in sorted((root / wnid).iterdir()):
            paths.append(image.relative_to(data).as_posix())
            labels.append(label)
    return paths, labels


def _imagenet_replicas(data: Path, images: _Images) -> list[Expected]:
    out = []
    names = [images.wnid_names[w] for w in sorted(_WNIDS)]
    base = data / "imagenet"
    _classnames(images, base / "classnames.txt")
    imagenet = Expected("imagenet", "imagenet", names)
    imagenet.splits["train"], imagenet.labels["train"] = _wnid_folders(
        images, base / "images" / "train", data, _WNIDS, "{wnid}_{i}.JPEG", 4)
    imagenet.splits["test"], imagenet.labels["test"] = _wnid_folders(
        images, base / "images" / "val", data, _WNIDS, "ILSVRC2012_val_{i:08d}.JPEG",
        2)
    out.append(imagenet)

    base = data / "imagenetv2"
    _classnames(images, base / "classnames.txt", list(_WNIDS))
    v2 = Expected("imagenetv2", "imagenetv2", [images.wnid_names[w] for w in _WNIDS])
    folder = base / "imagenetv2-matched-frequency-format-val"
    for label, wnid in enumerate(_WNIDS):
        for i in range(2):
            images.put(folder / str(label) / f"{label}{i}a7f3e0c{i}.jpeg", wnid)
        v2.splits.setdefault("test", []).extend(
            p.relative_to(data).as_posix() for p in sorted((folder / str(label)).iterdir()))
        v2.labels.setdefault("test", []).extend([label] * 2)
    out.append(v2)

    for name, folder_name, image_dir, wnids, file_name in (
        ("imagenet_sketch", "imagenet-sketch", "images", _WNIDS, "sketch_{i}.JPEG"),
        ("imagenet_a", "imagenet-adversarial", "imagenet-a", _AR_WNIDS,
         "0.00{i}116_digital clock _ digital clock_0.86566{i}.jpg"),
        ("imagenet_r", "imagenet-rendition", "imagenet-r", _AR_WNIDS, "art_{i}.jpg"),
    ):
        base = data / folder_name
        _classnames(images, base / "classnames.txt")
        expected = Expected(name, folder_name, [images.wnid_names[w] for w in sorted(wnids)])
        expected.splits["test"], expected.labels["test"] = _wnid_folders(
            images, base / image_dir, data, wnids, file_name, 3)
        if name != "imagenet_sketch":
            (base / image_dir / "README.txt").write_text("the 200 classes\n", encoding="utf-8")
        out.append(expected)
    return out


def build_replicas(shared: Path, data: Path) -> dict[str, Expected]:
    """Write the 15 replicas under ``data`` (the ``$DATA`` folder); skips the test where the
    shared images are absent.

    Returns:
        ``{dataset name: what reading it must give}``.
    """
    images = _Images(*require_shared(shared))
    found = [_split_file_replica(data, images, spec) for spec in _SPLIT_FILES]
    found.append(_aircraft_replica(data, images))
    found.extend(_imagenet_replicas(data, images))
    (data / "oxford_pets" / "annotations").mkdir()
    (data / "oxford_flowers" / "cat_to_name.json").write_text(
        json.dumps({"1": "pink primrose", "2": "hard-leaved pocket orchid",
                    "3": "canterbury bells"}), encoding="utf-8")
    return {e.name: e for e in found}


def touch_split_images(split_file: Path, image_root: Path) -> None:
    """Create an empty file for every image a split file lists (a layout without pixels)."""
    content = json.loads(split_file.read_text(encoding="utf-8"))
    for items in content.values():
        for rel, _, _ in items:
            path = image_root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()


#: The repeated names of the real ImageNet ``classnames.txt`` (CLIP's names, openai/CLIP
#: ``notebooks/Prompt_Engineering_for_ImageNet.ipynb``, copied by CoOp): class index -> name.
CLIP_REPEATS = {657: "missile", 744: "missile", 836: "sunglasses", 837: "sunglasses"}

#: The ImageNet-A and -R replicas of :func:`build_repeated_name_layouts`: class indices of
#: their folders. -A holds the later class of each repeated pair only, -R the first of one.
REPEATS_SUBSETS = {"imagenet_a": (1, 744, 837, 900), "imagenet_r": (2, 657, 901)}


def build_repeated_name_layouts(shared: Path, data: Path) -> list[str]:
    """The five ImageNet layouts at full size (the 1000 WNIDs of ``imagenet-samples/
    classes.tsv``), with a ``classnames.txt`` that names class ``i`` ``"class <i>"`` except for
    :data:`CLIP_REPEATS`, as the real file does. Each class folder holds one empty ``.JPEG``
    (the readers list images, they do not open them); ImageNet-A and -R hold the folders of
    :data:`REPEATS_SUBSETS`.

    Returns:
        The 1000 WNIDs, index = ImageNet class.
    """
    tsv = require_shared(shared)[1] / "classes.tsv"
    wnids = sorted(line.split("\t")[0] for line in tsv.read_text(encoding="utf-8").splitlines()
                   if line)
    assert len(wnids) == 1000
    text = "".join(f"{w} {CLIP_REPEATS.get(i, f'class {i}')}\n" for i, w in enumerate(wnids))

    def layout(folder: str, image_dirs: list[Path], classes: list[str]) -> None:
        (data / folder).mkdir(parents=True)
        (data / folder / "classnames.txt").write_text(text, encoding="utf-8")
        for image_dir in image_dirs:
            for name in classes:
                (image_dir / name).mkdir(parents=True)
                (image_dir / name / f"{name}_1.JPEG").touch()

    images = data / "imagenet" / "images"
    layout("imagenet", [images / "train", images / "val"], wnids)
    layout("imagenetv2", [data / "imagenetv2" / "imagenetv2-matched-frequency-format-val"],
           [str(i) for i in range(1000)])
    layout("imagenet-sketch", [data / "imagenet-sketch" / "images"], wnids)
    for name, folder, image_dir in (("imagenet_a", "imagenet-adversarial", "imagenet-a"),
                                    ("imagenet_r", "imagenet-rendition", "imagenet-r")):
        layout(folder, [data / folder / image_dir], [wnids[i] for i in REPEATS_SUBSETS[name]])
    return wnids
