"""The research code's datasets (issue 14): the 15 readers on miniature replicas of their
layouts, their refusals of broken layouts, the real Caltech101 split file, the research code's
few-shot picks and base/new classes (checked against an independent implementation of Dassl's
rule), and the dataset registry with its generic entries and plugin hook."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import types
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from research_replicas import (
    CLIP_REPEATS,
    REPEATS_SUBSETS,
    Expected,
    build_repeated_name_layouts,
    build_replicas,
    touch_split_images,
)

from cotprompt.data.research import (
    BUILTIN_DATASETS,
    IMAGENET_VARIANTS,
    STANDARD_DATASETS,
    ResearchDataset,
    dataset_names,
    dataset_provider,
    get_reader,
    load_dataset,
    research_class_labels,
    research_few_shot,
    research_test_split,
    training_image_list,
)
from cotprompt.data.research.imagenet import distinct_classnames, read_imagenet
from cotprompt.errors import ConfigError, DataError, PluginError
from cotprompt.plugins.hookspecs import hookimpl
from cotprompt.plugins.registry import STRICT_ENV_VAR, Registry
from cotprompt.types import Task

#: CoOp's ``CUSTOM_TEMPLATES`` (trainers/zsclip.py), by our dataset names.
TEMPLATES = {
    "imagenet": "a photo of a {}.", "caltech101": "a photo of a {}.",
    "oxford_pets": "a photo of a {}, a type of pet.", "stanford_cars": "a photo of a {}.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "food101": "a photo of {}, a type of food.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.", "sun397": "a photo of a {}.",
    "dtd": "{} texture.", "eurosat": "a centered satellite photo of {}.",
    "ucf101": "a photo of a person doing {}.", "imagenetv2": "a photo of a {}.",
    "imagenet_sketch": "a photo of a {}.", "imagenet_a": "a photo of a {}.",
    "imagenet_r": "a photo of a {}.",
}


@pytest.fixture(scope="module")
def replicas(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    data = tmp_path_factory.mktemp("DATA")
    return data, build_replicas(shared_data, data)


@pytest.fixture
def keep_global_random() -> Iterator[None]:
    state = random.getstate()
    yield
    random.setstate(state)


def _relative(dataset: ResearchDataset, split: str) -> list[str]:
    return [dataset.relative_path(r) for r in getattr(dataset, split).records]


# -- the 15 readers ----------------------------------------------------------------------------


def test_the_fifteen_names() -> None:
    assert list(BUILTIN_DATASETS) == list(TEMPLATES)
    assert dataset_names()[:15] == list(TEMPLATES)
    assert tuple(TEMPLATES) == STANDARD_DATASETS + IMAGENET_VARIANTS


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_reader_reads_its_replica(name: str, replicas: tuple[Path, dict]) -> None:
    data, expected = replicas
    want: Expected = expected[name]
    dataset = load_dataset(name, data)
    assert dataset.name == name and dataset.root == data
    assert dataset.class_names == want.class_names
    assert dataset.template == TEMPLATES[name]
    for split in ("train", "val", "test"):
        if split not in want.splits:
            assert getattr(dataset, split) is None
            continue
        assert _relative(dataset, split) == want.splits[split]
        assert getattr(dataset, split).labels == want.labels[split]
        assert getattr(dataset, split).class_names == want.class_names


def test_listing_in_os_order(replicas: tuple[Path, dict]) -> None:
    data, _ = replicas
    dataset = read_imagenet(data, listing="os")
    folder = data / "imagenet" / "images" / "train" / "n01440764"
    first = [str(r.path) for r in dataset.train.records if r.label == 0]  # type: ignore[union-attr]
    assert first == [str(folder / n) for n in os.listdir(folder)]
    with pytest.raises(DataError, match="listing must be one of"):
        read_imagenet(data, listing="random")  # type: ignore[arg-type]


def test_listing_through_load_dataset(replicas: tuple[Path, dict]) -> None:
    data, expected = replicas
    for name in ("imagenet", *IMAGENET_VARIANTS):
        by_name = load_dataset(name, data, listing="os")
        direct = get_reader(name)(data, listing="os")  # type: ignore[call-arg]
        for split in ("train", "test"):
            if getattr(direct, split) is not None:
                assert _relative(by_name, split) == _relative(direct, split)
    folder = data / "imagenet" / "images" / "train" / "n01440764"
    train = load_dataset("imagenet", data, listing="os").train
    assert [r.path for r in train.records if r.label == 0] == [  # type: ignore[union-attr]
        folder / n for n in os.listdir(folder)
    ]
    assert _relative(load_dataset("imagenet", data, listing="sorted"), "train") == (
        expected["imagenet"].splits["train"]
    )
    dtd = load_dataset("dtd", data, listing="os")  # a split file: its order, listing ignored
    assert _relative(dtd, "train") == expected["dtd"].splits["train"]
    with pytest.raises(ConfigError, match="listing must be one of"):
        load_dataset("imagenet", data, listing="random")  # type: ignore[arg-type]


# -- repeated class names in classnames.txt (CLIP's ImageNet names) --------------------------------


@pytest.fixture(scope="module")
def repeated_names(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list]:
    data = tmp_path_factory.mktemp("DATA")
    return data, build_repeated_name_layouts(shared_data, data)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize(("name", "folder"), [
    ("imagenet", "imagenet"), ("imagenetv2", "imagenetv2"), ("imagenet_sketch", "imagenet-sketch")
])
def test_repeated_class_names_are_made_distinct(
    name: str, folder: str, repeated_names: tuple[Path, list], caplog: pytest.LogCaptureFixture
) -> None:
    data, _ = repeated_names
    with caplog.at_level(logging.WARNING):
        dataset = load_dataset(name, data)
    names = dataset.class_names
    assert len(names) == len(set(names)) == 1000
    assert [names[i] for i in sorted(CLIP_REPEATS)] == [
        "missile", "missile (2)", "sunglasses", "sunglasses (2)"
    ]
    assert all(names[i] == f"class {i}" for i in range(1000) if i not in CLIP_REPEATS)
    assert dataset.test.class_names == names
    Task.classification(names)  # distinct labels: a task takes them
    (message,) = _warnings(caplog)  # one warning for the file
    assert "\n" not in message and f"{folder}/classnames.txt" in message
    for part in ("class 744 (n04008634) 'missile', as class 657, -> 'missile (2)'",
                 "class 837 (n04356056) 'sunglasses', as class 836, -> 'sunglasses (2)'"):
        assert part in message


def test_repeated_class_names_in_the_200_class_variants(
    repeated_names: tuple[Path, list], caplog: pytest.LogCaptureFixture
) -> None:
    data, wnids = repeated_names
    with caplog.at_level(logging.WARNING):
        adversarial = load_dataset("imagenet_a", data)
    # the same WNID has the same name as in ImageNet, though the first "missile" is absent
    assert adversarial.class_names == ["class 1", "missile (2)", "sunglasses (2)", "class 900"]
    (message,) = _warnings(caplog)
    assert "class 744" in message and "class 837" in message and "imagenet_a" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        rendition = load_dataset("imagenet_r", data)
    assert rendition.class_names == ["class 2", "missile", "class 901"]
    assert _warnings(caplog) == []  # no class of its folders is renamed
    assert [w for i, w in enumerate(wnids) if i in REPEATS_SUBSETS["imagenet_r"]] == [
        r.path.parent.name for r in rendition.test.records  # type: ignore[union-attr]
    ]


def test_distinct_classnames_suffixes() -> None:
    names, renamed = distinct_classnames(
        {"a": "x", "b": "x (2)", "c": "x", "d": "x", "e": "y_z", "f": "y z", "g": "w"}
    )
    assert list(names.values()) == ["x", "x (2)", "x (3)", "x (4)", "y_z", "y z (2)", "w"]
    assert [(r.index, r.wnid, r.name, r.new_name, r.first) for r in renamed] == [
        (2, "c", "x", "x (3)", 0), (3, "d", "x", "x (4)", 0), (5, "f", "y z", "y z (2)", 4)
    ]
    assert distinct_classnames({"a": "x", "b": "y"}) == ({"a": "x", "b": "y"}, [])


def _drop(path: str) -> Callable[[Path], None]:
    def mutate(base: Path) -> None:
        target = base / path
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return mutate


def _edit_split(edit: Callable[[dict], None], file: str) -> Callable[[Path], None]:
    def mutate(base: Path) -> None:
        content = json.loads((base / file).read_text(encoding="utf-8"))
        edit(content)
        (base / file).write_text(json.dumps(content), encoding="utf-8")
    return mutate


def _write(path: str, text: str) -> Callable[[Path], None]:
    return lambda base: (base / path).write_text(text, encoding="utf-8")


def _empty_folder(path: str) -> Callable[[Path], None]:
    def mutate(base: Path) -> None:
        for image in (base / path).iterdir():
            image.unlink()
    return mutate


def _set(key: str, value: object) -> Callable[[dict], None]:
    return lambda content: content.__setitem__(key, value)


BROKEN = [
    ("caltech101", _drop("split_zhou_Caltech101.json"),
     ["split file", "split_zhou_Caltech101.json", "is missing"]),
    ("oxford_pets", _write("split_zhou_OxfordPets.json", "{not json"),
     ["split_zhou_OxfordPets.json", "not valid JSON"]),
    ("stanford_cars", _drop("cars_test"), ["split_zhou_StanfordCars.json", "are missing"]),
    ("oxford_flowers", _drop("jpg"), ["image folder", "oxford_flowers/jpg", "is missing"]),
    ("food101", _edit_split(lambda c: c.pop("val"), "split_zhou_Food101.json"),
     ["split_zhou_Food101.json", "no 'val' split"]),
    ("sun397", _edit_split(lambda c: c.__setitem__("train", [i for i in c["train"] if i[1] != 1]),
                           "split_zhou_SUN397.json"),
     ["split_zhou_SUN397.json", "'indoor apse' has no images in the train split"]),
    ("dtd", _edit_split(lambda c: c["train"][0].__setitem__(1, "zero"),
                        "split_zhou_DescribableTextures.json"),
     ["split_zhou_DescribableTextures.json", "item 0"]),
    ("eurosat", _edit_split(lambda c: c["test"][0].__setitem__(2, "Woods"),
                            "split_zhou_EuroSAT.json"),
     ["split_zhou_EuroSAT.json", "'Woods'"]),
    ("ucf101", _drop("split_zhou_UCF101.json"), ["split_zhou_UCF101.json", "is missing"]),
    ("fgvc_aircraft", _drop("variants.txt"), ["fgvc_aircraft/variants.txt", "is missing"]),
    ("fgvc_aircraft", _write("images_variant_val.txt", "1025794 747-400\n"),
     ["images_variant_val.txt", "line 1", "'747-400' is not in variants.txt"]),
    ("fgvc_aircraft", _write("images_variant_train.txt", "1025787 707-320\n"),
     ["images_variant_train.txt", "'A300B4' has no images"]),
    ("imagenet", _drop("classnames.txt"), ["imagenet/classnames.txt", "is missing"]),
    ("imagenet", _empty_folder("images/val/n01496331"),
     ["images/val/n01496331", "has no images"]),
    ("imagenet", _drop("images/val/n01530575"), ["images/train", "images/val", "'n01530575'"]),
    ("imagenet", _write("classnames.txt", "n01440764 tench\nn01496331\n"),
     ["classnames.txt", "line 2", "'<wnid> <class name>'"]),
    ("imagenetv2", _drop("imagenetv2-matched-frequency-format-val/2"),
     ["imagenetv2-matched-frequency-format-val/2", "is missing"]),
    ("imagenet_sketch", _write("classnames.txt", "n01440764 tench\nn01496331 electric ray\n"),
     ["images/n01530575", "is not named in", "imagenet-sketch/classnames.txt"]),
    ("imagenet_a", _drop("classnames.txt"), ["imagenet-adversarial/classnames.txt", "missing"]),
    ("imagenet_r", _empty_folder("imagenet-r/n07747607"), ["n07747607", "has no images"]),
]


@pytest.mark.parametrize(
    ("name", "mutate", "parts"), BROKEN, ids=[f"{b[0]}-{i}" for i, b in enumerate(BROKEN)]
)
def test_reader_refuses_a_broken_layout(
    name: str,
    mutate: Callable[[Path], None],
    parts: list[str],
    replicas: tuple[Path, dict],
    tmp_path: Path,
) -> None:
    data, expected = replicas
    folder = expected[name].folder
    shutil.copytree(data / folder, tmp_path / folder)
    load_dataset(name, tmp_path)  # the intact copy reads
    mutate(tmp_path / folder)
    with pytest.raises(DataError) as excinfo:
        load_dataset(name, tmp_path)
    message = str(excinfo.value)
    assert "\n" not in message
    for part in parts:
        assert part in message


def test_missing_dataset_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dtd: dataset folder '.*/dtd' is missing"):
        load_dataset("dtd", tmp_path)
    with pytest.raises(DataError, match=r"\$DATA folder '.*nowhere' is missing"):
        load_dataset("dtd", tmp_path / "nowhere")


# -- the real Caltech101 split file, and the research code's few-shot picks -----------------------


@pytest.fixture(scope="module")
def caltech(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    source = shared_data / "coop-splits" / "split_zhou_Caltech101.json"
    if not source.is_file():
        pytest.skip(f"the research code's Caltech101 split file is not at {source}")
    data = tmp_path_factory.mktemp("DATA")
    base = data / "caltech-101"
    base.mkdir()
    shutil.copyfile(source, base / source.name)
    touch_split_images(base / source.name, base / "101_ObjectCategories")
    return data, json.loads(source.read_text(encoding="utf-8"))


def test_real_caltech101_split_reads_as_is(caltech: tuple[Path, dict]) -> None:
    data, raw = caltech
    dataset = load_dataset("caltech101", data)
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (4128, 1649, 2465)  # type: ignore[arg-type]
    assert len(dataset.class_names) == 100
    names = {label: name for _, label, name in raw["train"]}
    assert dataset.class_names == [names[i].replace("_", " ") for i in range(100)]
    assert dataset.class_names[:2] == ["face", "leopard"]
    for split in ("train", "val", "test"):
        assert _relative(dataset, split) == [
            f"caltech-101/101_ObjectCategories/{p}" for p, _, _ in raw[split]
        ]


def dassl_few_shot(items: list[list], shots: int) -> list[list]:
    """Dassl's ``generate_fewshot_dataset``, written again from its rule: group by label in a
    ``defaultdict(list)``, then per label ``random.sample`` on the module-level generator."""
    tracker: defaultdict[int, list[list]] = defaultdict(list)
    for item in items:
        tracker[item[1]].append(item)
    dataset: list[list] = []
    for _, group in tracker.items():
        dataset.extend(random.sample(group, shots) if len(group) >= shots else group)
    return dataset


def dassl_subsample(items: list[list], train: list[list], half: str) -> list[list]:
    """CoOp's ``subsample_classes``: sorted training labels, first ceil(n/2) are base."""
    labels = sorted({item[1] for item in train})
    m = math.ceil(len(labels) / 2)
    selected = labels[:m] if half == "base" else labels[m:]
    relabel = {y: new for new, y in enumerate(selected)}
    return [[p, relabel[y], name] for p, y, name in items if y in relabel]


def dassl_run(raw: dict, shots: int, seed: int, half: str = "all") -> dict[str, list[list]]:
    random.seed(seed)  # set_random_seed, then the dataset is built
    train = dassl_few_shot(raw["train"], shots)
    val = dassl_few_shot(raw["val"], min(shots, 4))
    test = raw["test"]
    if half != "all":
        train, val, test = (dassl_subsample(s, train, half) for s in (train, val, test))
    return {"train": train, "val": val, "test": test}


def _items(dataset: ResearchDataset, split, prefix: str) -> list[list]:
    return [
        [dataset.relative_path(r)[len(prefix):], r.label, split.class_names[r.label]]
        for r in split.records
    ]


@pytest.mark.parametrize("shots", [1, 2, 4, 8, 16])
def test_few_shot_picks_are_the_research_codes(
    shots: int, caltech: tuple[Path, dict], keep_global_random: None
) -> None:
    data, raw = caltech
    dataset = load_dataset("caltech101", data)
    prefix = "caltech-101/101_ObjectCategories/"
    for seed in (1, 2, 3):
        train, val = research_few_shot(dataset, shots, seed)
        want = dassl_run(raw, shots, seed)
        assert [p for p, _, _ in _items(dataset, train, prefix)] == [i[0] for i in want["train"]]
        assert [p for p, _, _ in _items(dataset, val, prefix)] == [i[0] for i in want["val"]]
        assert len(train) <= shots * 100 and val is not None
        assert train.class_names == dataset.class_names


@pytest.mark.parametrize("half", ["base", "new"])
def test_base_and_new_classes_are_the_research_codes(
    half: str, caltech: tuple[Path, dict], keep_global_random: None
) -> None:
    data, raw = caltech
    dataset = load_dataset("caltech101", data)
    prefix = "caltech-101/101_ObjectCategories/"
    train, val = research_few_shot(dataset, 16, 1, classes=half)  # type: ignore[arg-type]
    test = research_test_split(dataset, half)  # type: ignore[arg-type]
    want = dassl_run(raw, 16, 1, half)
    for mine, split in ((train, "train"), (val, "val"), (test, "test")):
        got = _items(dataset, mine, prefix)
        assert [(p, y) for p, y, _ in got] == [(p, y) for p, y, _ in want[split]]
        assert len(mine.class_names) == 50
    names = {label: name.replace("_", " ") for _, label, name in raw["train"]}
    offset = 0 if half == "base" else 50
    assert train.class_names == [names[offset + i] for i in range(50)]
    assert train.class_names == test.class_names == val.class_names  # type: ignore[union-attr]


def test_private_generator_is_the_module_level_one(keep_global_random: None) -> None:
    items = list(range(1000))
    for seed in (0, 1, 2, 3, 12345):
        random.seed(seed)
        module_level = [random.sample(items, 16) for _ in range(5)] + [[random.random()]]
        private = random.Random(seed)
        assert module_level == [private.sample(items, 16) for _ in range(5)] + [[private.random()]]


def test_few_shot_leaves_the_global_generator_alone(caltech: tuple[Path, dict]) -> None:
    dataset = load_dataset("caltech101", caltech[0])
    state = random.getstate()
    research_few_shot(dataset, 4, 7)
    assert random.getstate() == state


def test_labels_in_order_of_first_appearance(
    replicas: tuple[Path, dict], keep_global_random: None
) -> None:
    data, _ = replicas
    dataset = load_dataset("oxford_pets", data)  # its training list starts with label 1
    raw = json.loads((data / "oxford_pets" / "split_zhou_OxfordPets.json").read_text())
    for shots in (1, 2, 4, 8):
        train, val = research_few_shot(dataset, shots, 5)
        want = dassl_run(raw, shots, 5)
        assert _items(dataset, train, "oxford_pets/images/")[0][1] == 1
        assert [i[0] for i in _items(dataset, train, "oxford_pets/images/")] == [
            i[0] for i in want["train"]
        ]
        assert [i[0] for i in _items(dataset, val, "oxford_pets/images/")] == [
            i[0] for i in want["val"]
        ]


def test_imagenet_samples_training_images_only(replicas: tuple[Path, dict]) -> None:
    dataset = load_dataset("imagenet", replicas[0])
    train, val = research_few_shot(dataset, 2, 1)
    assert val is None and len(train) == 6
    base = research_test_split(dataset, "base")
    assert base.class_names == dataset.class_names[:2]


def test_research_class_labels(replicas: tuple[Path, dict]) -> None:
    dtd = load_dataset("dtd", replicas[0])  # 3 classes: base 0, 1; new 2
    train, _ = research_few_shot(dtd, 2, 1)
    assert research_class_labels(train, "all") == [0, 1, 2]
    assert research_class_labels(train, "base") == [0, 1]
    assert research_class_labels(train.labels, "new") == [2]
    assert research_class_labels([2, 2, 0], "base") == [0]  # sorted labels present, cut at 1
    new = research_test_split(dtd, "new")
    assert new.class_names == [dtd.class_names[2]] and set(new.labels) == {0}
    with pytest.raises(DataError, match="classes must be one of"):
        research_class_labels(train, "half")  # type: ignore[arg-type]


def test_few_shot_refusals(replicas: tuple[Path, dict]) -> None:
    data, _ = replicas
    sketch = load_dataset("imagenet_sketch", data)
    with pytest.raises(DataError, match="imagenet_sketch: has no training split"):
        research_few_shot(sketch, 1, 1)
    with pytest.raises(DataError, match="base/new classes need a training split"):
        research_test_split(sketch, "new")
    dtd = load_dataset("dtd", data)
    for shots in (0, True, 1.0):
        with pytest.raises(DataError, match="shots must be a positive integer"):
            research_few_shot(dtd, shots, 1)  # type: ignore[arg-type]
    for seed in (0, -1, True, 1.0, "1"):
        with pytest.raises(ConfigError, match="seed must be an integer >= 1") as excinfo:
            research_few_shot(dtd, 1, seed)  # type: ignore[arg-type]
        assert "\n" not in str(excinfo.value)
    with pytest.raises(ConfigError, match=r"seed 0 runs unseeded"):
        research_few_shot(dtd, 1, 0)
    with pytest.raises(DataError, match="classes must be one of"):
        research_few_shot(dtd, 1, 1, classes="half")  # type: ignore[arg-type]


def test_training_image_list(
    caltech: tuple[Path, dict], tmp_path: Path, keep_global_random: None
) -> None:
    data, raw = caltech
    (tmp_path / "caltech-101").symlink_to(data / "caltech-101")  # $DATA/<dataset> as a link
    dataset = load_dataset("caltech101", tmp_path)
    train, _ = research_few_shot(dataset, 1, 1)
    images = training_image_list(dataset, train)
    want = dassl_run(raw, 1, 1)["train"]
    assert images == [f"caltech-101/101_ObjectCategories/{p}" for p, _, _ in want]
    assert training_image_list(dataset, train.records) == images
    outside = ResearchDataset("x", tmp_path / "elsewhere", ["a"], None, None, train, "{}")
    first = training_image_list(outside, train.records[:1])[0]
    assert first == f"{tmp_path}/{images[0]}"  # absolute, the link not resolved
    assert (tmp_path / "caltech-101").resolve() != tmp_path / "caltech-101"
    with pytest.raises(DataError, match="is not under"):
        outside.relative_path(train.records[0])


# -- the registry ----------------------------------------------------------------------------------


def test_unknown_name_gets_a_hint() -> None:
    with pytest.raises(ConfigError) as excinfo:
        get_reader("OxfordPets")
    message = str(excinfo.value)
    assert "did you mean 'oxford_pets'" in message and "folder:PATH" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match="give a path after 'csv:'"):
        get_reader("csv:")
    with pytest.raises(ConfigError, match="must be a string"):
        get_reader(3)  # type: ignore[arg-type]


def test_generic_folder_entry(shared_data: Path) -> None:
    cifar = shared_data / "cifar10-mini"
    dataset = load_dataset(f"folder:{cifar}", shared_data)
    assert dataset.name == f"folder:{cifar}" and dataset.template == "a photo of a {}."
    assert len(dataset.class_names) == 10 and dataset.val is None
    assert (len(dataset.train), len(dataset.test)) == (500, 1000)  # type: ignore[arg-type]
    assert dataset_provider(f"folder:{cifar}") == "user"
    first = training_image_list(dataset, dataset.train)[0]  # type: ignore[arg-type]
    assert first == "cifar10-mini/train/airplane/0000.jpg"
    with pytest.raises(DataError, match=r"test folder '.*cifar10-mini/train/test' is missing"):
        load_dataset("folder:cifar10-mini/train", shared_data)


def test_generic_csv_entry(replicas: tuple[Path, dict], tmp_path: Path) -> None:
    data, expected = replicas
    rows = ["path,label,split"]
    for split in ("train", "test"):
        rows += [f"{data / p},{'xyz'[y]},{split}" for p, y in
                 zip(expected["dtd"].splits[split], expected["dtd"].labels[split], strict=True)]
    (tmp_path / "mine.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    dataset = load_dataset("csv:mine.csv", tmp_path)
    assert dataset.class_names == ["x", "y", "z"] and dataset.val is None
    assert (len(dataset.train), len(dataset.test)) == (15, 6)  # type: ignore[arg-type]
    (tmp_path / "bad.csv").write_text(rows[0] + "\n" + rows[1].replace("train", "dev") + "\n")
    with pytest.raises(DataError, match=r"bad\.csv', line 2: split must be one of"):
        load_dataset("csv:bad.csv", tmp_path)


def test_generic_split_entry(caltech: tuple[Path, dict]) -> None:
    data, _ = caltech
    name = (
        "split:caltech-101/split_zhou_Caltech101.json"
        ";image_root=caltech-101/101_ObjectCategories"
    )
    dataset = load_dataset(name, data)
    builtin = load_dataset("caltech101", data)
    assert dataset.class_names == builtin.class_names
    assert _relative(dataset, "train") == _relative(builtin, "train")
    with pytest.raises(DataError, match="are missing"):  # images relative to the file's folder
        load_dataset("split:caltech-101/split_zhou_Caltech101.json", data)
    with pytest.raises(ConfigError, match="give a folder after 'image_root='"):
        get_reader("split:a.json;image_root=")


def _plugin(name: str, **hooks: Callable) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, function in hooks.items():
        setattr(module, hook_name, hookimpl(function))
    return module


def _toy_reader(root: Path) -> ResearchDataset:
    dtd = load_dataset("dtd", root)
    return ResearchDataset("toy", root, dtd.class_names, None, None, dtd.test, "{}.")


@pytest.fixture
def with_plugins(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Registry]:
    monkeypatch.delenv(STRICT_ENV_VAR, raising=False)

    def install(*plugins: object, strict: bool = False) -> Registry:
        registry = Registry(extra_plugins=plugins, builtins=None, entry_points=[], strict=strict)
        monkeypatch.setattr("cotprompt.plugins.registry._registry", registry)
        return registry

    return install


def test_a_plugin_registers_a_dataset(
    with_plugins: Callable[..., Registry],
    replicas: tuple[Path, dict],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def register_datasets(register: Callable) -> None:
        register("toy", _toy_reader)
        register("caltech101", _toy_reader)  # a built-in name: ignored

    with caplog.at_level(logging.WARNING):
        with_plugins(_plugin("toy_plugin", register_datasets=register_datasets))
        assert dataset_names()[15:] == ["toy"]
    assert "registered no components" not in caplog.text
    assert "dataset 'caltech101' of plugin 'toy_plugin' is ignored" in caplog.text
    assert dataset_provider("toy") == "toy_plugin"
    assert load_dataset("toy", replicas[0]).name == "toy"
    assert load_dataset("caltech101", replicas[0]).name == "caltech101"
    with pytest.raises(ConfigError, match="did you mean 'toy'"):
        get_reader("Toy!")


def test_a_broken_dataset_plugin_is_skipped(
    with_plugins: Callable[..., Registry],
    replicas: tuple[Path, dict],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def bad(register: Callable) -> None:
        register("half", _toy_reader)
        register("bad name", _toy_reader)

    def odd(register: Callable) -> None:
        register("odd", lambda root: 42)

    plugins = (_plugin("bad_plugin", register_datasets=bad),
               _plugin("odd_plugin", register_datasets=odd))
    with caplog.at_level(logging.WARNING):
        with_plugins(*plugins)
        assert dataset_names()[15:] == ["odd"]
    assert "plugin 'bad_plugin' failed in register_datasets" in caplog.text
    with pytest.raises(ConfigError, match="bad_plugin' failed"):
        get_reader("half")
    with pytest.raises(PluginError, match="returned int, not a ResearchDataset"):
        load_dataset("odd", replicas[0])
    with_plugins(*plugins, strict=True)
    with pytest.raises(PluginError, match="dataset name must be letters"):
        dataset_names()


def test_a_registry_can_be_passed(replicas: tuple[Path, dict]) -> None:
    def register_datasets(register: Callable) -> None:
        register("toy", _toy_reader)

    registry = Registry(
        extra_plugins=[_plugin("toy_plugin", register_datasets=register_datasets)],
        builtins=None, entry_points=[], strict=True,
    )
    assert dataset_names(registry=registry)[15:] == ["toy"]
    assert load_dataset("toy", replicas[0], registry=registry).name == "toy"
    assert dataset_provider("toy", registry=registry) == "toy_plugin"

