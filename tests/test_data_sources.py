"""Tests of the dataset records, image loading and the dataset readers."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cotprompt.data import (
    DIGIT_NAMES,
    ImageClassificationDataset,
    ImageRecord,
    digits_dataset,
    from_coop_split,
    from_csv,
    from_folder,
    load_image,
    verify_images,
)
from cotprompt.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _write_image(
    path: Path, color: tuple[int, int, int], size: int = 12, mode: str = "RGB"
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (size, size), color)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return path


def _truncated_jpeg(path: Path) -> Path:
    _write_image(path, (200, 10, 10), size=64)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """root/{golden_retriever,cat}/ with 3 and 2 images, plus files that must be ignored."""
    root = tmp_path / "pets"
    for i in range(3):
        _write_image(root / "golden_retriever" / f"{i}.jpg", (10 * i, 0, 0))
    _write_image(root / "cat" / "b.PNG", (0, 255, 0))
    _write_image(root / "cat" / "nested" / "a.png", (0, 0, 255))
    (root / "cat" / "notes.txt").write_text("not an image")
    _write_image(root / "cat" / ".hidden.jpg", (1, 1, 1))
    _write_image(root / ".cache" / "x.jpg", (1, 1, 1))
    return root


# --- load_image / verify_images -------------------------------------------------------------


def test_load_image_converts_to_rgb(tmp_path: Path) -> None:
    grey = _write_image(tmp_path / "grey.png", (90, 90, 90), mode="L")
    rgba = _write_image(tmp_path / "rgba.png", (5, 6, 7), mode="RGBA")
    for path in (grey, rgba):
        image = load_image(path)
        assert image.mode == "RGB"
        assert image.size == (12, 12)
    assert load_image(rgba).getpixel((0, 0)) == (5, 6, 7)


def test_load_image_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.jpg.*does not exist"):
        load_image(tmp_path / "missing.jpg")


def test_load_image_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a file"):
        load_image(tmp_path)


def test_load_image_text_file_named_jpg(tmp_path: Path) -> None:
    fake = tmp_path / "fake.jpg"
    fake.write_text("this is not a JPEG")
    with pytest.raises(DataError, match=r"fake\.jpg.*not a recognised image format"):
        load_image(fake)


def test_load_image_truncated_jpeg(tmp_path: Path) -> None:
    bad = _truncated_jpeg(tmp_path / "cut.jpg")
    with pytest.raises(DataError, match=r"cut\.jpg.*truncated"):
        load_image(bad)


def _mixed_dataset(tmp_path: Path) -> ImageClassificationDataset:
    good = _write_image(tmp_path / "good.jpg", (1, 2, 3))
    fake = tmp_path / "fake.jpg"
    fake.write_text("text")
    cut = _truncated_jpeg(tmp_path / "cut.jpg")
    records = [ImageRecord(good, 0), ImageRecord(fake, 1), ImageRecord(cut, 0)]
    return ImageClassificationDataset(records, ["a", "b"])


def test_verify_images_raise_names_every_bad_file(tmp_path: Path) -> None:
    dataset = _mixed_dataset(tmp_path)
    with pytest.raises(DataError, match=r"2 of 3 image\(s\) are unreadable") as info:
        verify_images(dataset)
    assert "fake.jpg" in str(info.value) and "cut.jpg" in str(info.value)
    assert "good.jpg" not in str(info.value)


@pytest.mark.parametrize("num_workers", [1, 3])
def test_verify_images_skip_drops_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, num_workers: int
) -> None:
    dataset = _mixed_dataset(tmp_path)
    with caplog.at_level(logging.WARNING, logger="cotprompt.data.images"):
        kept = verify_images(dataset, on_error="skip", num_workers=num_workers)
    assert [r.path.name for r in kept.records if r.path] == ["good.jpg"]
    assert kept.class_names == ["a", "b"]
    assert "skipping 2 unreadable image(s)" in caplog.text
    assert "fake.jpg" in caplog.text and "cut.jpg" in caplog.text


def test_verify_images_returns_same_dataset_when_all_good(folder: Path) -> None:
    dataset = from_folder(folder)
    assert verify_images(dataset, on_error="skip") is dataset


def test_verify_images_all_bad_skip_raises(tmp_path: Path) -> None:
    fake = tmp_path / "fake.png"
    fake.write_text("text")
    dataset = ImageClassificationDataset([ImageRecord(fake, 0)], ["a"])
    with pytest.raises(DataError, match=r"all 1 image\(s\) are unreadable"):
        verify_images(dataset, on_error="skip")


def test_verify_images_bad_mode(folder: Path) -> None:
    with pytest.raises(DataError, match="on_error must be 'raise' or 'skip'"):
        verify_images(from_folder(folder), on_error="ignore")  # type: ignore[arg-type]


# --- ImageRecord / ImageClassificationDataset ------------------------------------------------


def test_record_needs_path_or_image() -> None:
    with pytest.raises(DataError, match="needs a file path or an in-memory image"):
        ImageRecord(path=None, label=0)


def test_record_label_must_be_int() -> None:
    with pytest.raises(DataError, match="label must be an int"):
        ImageRecord(path=Path("x.jpg"), label="cat")  # type: ignore[arg-type]


def test_record_path_string_becomes_path() -> None:
    assert ImageRecord(path="a/b.jpg", label=0).path == Path("a/b.jpg")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("records", "names", "message"),
    [
        ([], ["a"], "at least one image record"),
        ([ImageRecord(Path("x.jpg"), 0)], [], "at least one class name"),
        ([ImageRecord(Path("x.jpg"), 0)], ["a", " "], r"blank name\(s\) at index \[1\]"),
        ([ImageRecord(Path("x.jpg"), 0)], ["a", "b", "a"], "duplicate class name 'a'"),
        ([ImageRecord(Path("x.jpg"), 2)], ["a", "b"], r"x\.jpg \(label 2\)"),
        ([ImageRecord(Path("x.jpg"), -1)], ["a"], r"label outside 0\.\.0"),
    ],
)
def test_dataset_validation(records: list[ImageRecord], names: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        ImageClassificationDataset(records, names)


def test_dataset_counts_and_empty_classes() -> None:
    records = [ImageRecord(Path(f"{i}.jpg"), label) for i, label in enumerate([0, 2, 2])]
    dataset = ImageClassificationDataset(records, ["a", "b", "c", "d"])
    assert dataset.labels == [0, 2, 2]
    assert dataset.num_classes == 4
    assert dataset.class_counts() == [1, 0, 2, 0]
    with pytest.raises(DataError, match=r"2 class\(es\) have no images: \['b', 'd'\]"):
        dataset.check_nonempty_classes()


def test_dataset_getitem_transform_and_subset(folder: Path) -> None:
    dataset = from_folder(folder)
    image, label = dataset[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and label == 0

    def to_tensor(img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.array(img)).permute(2, 0, 1)

    tensors = dataset.with_transform(to_tensor)
    x, _ = tensors[3]
    assert x.shape == (3, 12, 12)
    assert dataset.transform is None  # with_transform copies
    sub = tensors.subset([4, 0])
    assert [r.path for r in sub.records] == [dataset.records[4].path, dataset.records[0].path]
    assert sub.transform is to_tensor and sub.class_names == dataset.class_names
    with pytest.raises(DataError, match=r"out of range for 5 records: \[5\]"):
        dataset.subset([0, 5])
    with pytest.raises(DataError, match="at least one index"):
        dataset.subset([])


def test_record_numpy_label_becomes_int() -> None:
    record = ImageRecord(Path("a.jpg"), np.int64(3))  # type: ignore[arg-type]
    assert record.label == 3 and type(record.label) is int


def test_record_equality() -> None:
    assert ImageRecord(Path("a.jpg"), 1) == ImageRecord(Path("a.jpg"), 1)
    assert ImageRecord(Path("a.jpg"), 1) != ImageRecord(Path("a.jpg"), 2)
    one, two = Image.new("L", (2, 2)), Image.new("L", (2, 2))
    records = {ImageRecord(None, 0, image=one), ImageRecord(None, 0, image=two)}
    assert len(records) == 2  # distinct in-memory images are distinct records
    assert ImageRecord(None, 0, image=one) in records


def test_in_memory_record_is_converted_to_rgb() -> None:
    grey = Image.new("L", (4, 4), 128)
    dataset = ImageClassificationDataset([ImageRecord(None, 0, image=grey)], ["a"])
    image, _ = dataset[0]
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (128, 128, 128)


def test_getitem_of_corrupt_file_raises_data_error(tmp_path: Path) -> None:
    fake = tmp_path / "fake.jpg"
    fake.write_text("text")
    dataset = ImageClassificationDataset([ImageRecord(fake, 0)], ["a"])
    with pytest.raises(DataError, match=r"fake\.jpg"):
        dataset[0]


# --- from_folder ----------------------------------------------------------------------------


def test_from_folder_layout(folder: Path) -> None:
    dataset = from_folder(folder)
    assert dataset.class_names == ["cat", "golden retriever"]
    names = [(r.path.relative_to(folder).as_posix(), r.label) for r in dataset.records if r.path]
    assert names == [
        ("cat/b.PNG", 0),
        ("cat/nested/a.png", 0),
        ("golden_retriever/0.jpg", 1),
        ("golden_retriever/1.jpg", 1),
        ("golden_retriever/2.jpg", 1),
    ]


def test_from_folder_custom_class_names(folder: Path) -> None:
    dataset = from_folder(folder, class_names=["Cat", "Dog"])
    assert dataset.class_names == ["Cat", "Dog"]
    assert dataset.class_counts() == [2, 3]


def test_from_folder_extensions_filter(folder: Path) -> None:
    (folder / "cat" / "c.jpg").write_bytes((folder / "golden_retriever" / "0.jpg").read_bytes())
    dataset = from_folder(folder, extensions=("JPG",))
    assert dataset.class_counts() == [1, 3]


def test_from_folder_extensions_filter_names_empty_class(folder: Path) -> None:
    with pytest.raises(DataError, match=r"1 class folder\(s\).*\['cat'\]"):
        from_folder(folder, extensions=("jpg",))


def test_from_folder_class_names_length(folder: Path) -> None:
    with pytest.raises(DataError, match=r"class_names has 3 entries but .* has 2 class folders"):
        from_folder(folder, class_names=["a", "b", "c"])


def test_from_folder_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope' does not exist"):
        from_folder(tmp_path / "nope")


def test_from_folder_root_is_file(tmp_path: Path) -> None:
    path = _write_image(tmp_path / "one.jpg", (0, 0, 0))
    with pytest.raises(DataError, match="is not a folder"):
        from_folder(path)


def test_from_folder_no_class_folders(tmp_path: Path) -> None:
    _write_image(tmp_path / "flat" / "one.jpg", (0, 0, 0))
    with pytest.raises(DataError, match=r"no class sub-folders \(1 image\(s\) lie directly"):
        from_folder(tmp_path / "flat")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no class sub-folders; expected root/<class>/<image>"):
        from_folder(tmp_path / "empty")


def test_from_folder_empty_class_folders_named(tmp_path: Path) -> None:
    _write_image(tmp_path / "root" / "bird" / "1.jpg", (0, 0, 0))
    (tmp_path / "root" / "frog").mkdir()
    (tmp_path / "root" / "ship").mkdir()
    (tmp_path / "root" / "ship" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"2 class folder\(s\).*\['frog', 'ship'\]"):
        from_folder(tmp_path / "root")


def test_from_folder_real_cifar10_mini() -> None:
    root = SHARED_DATA / "cifar10-mini"
    if not root.is_dir():
        pytest.skip(f"shared test data not found at {root} (only on the build machines)")
    train = from_folder(root / "train")
    test = from_folder(root / "test")
    expected = ["airplane", "automobile", "bird", "cat", "deer"]
    expected += ["dog", "frog", "horse", "ship", "truck"]
    assert train.class_names == expected and test.class_names == expected
    assert train.class_counts() == [50] * 10
    assert test.class_counts() == [100] * 10
    image, label = train[len(train) - 1]
    assert image.size == (32, 32) and image.mode == "RGB" and label == 9
    sample = train.subset(range(0, 500, 25))
    assert verify_images(sample) is sample


# --- from_csv -------------------------------------------------------------------------------


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_from_csv_class_name_labels(tmp_path: Path) -> None:
    manifest = _write_csv(
        tmp_path / "m.csv",
        ["path", "label", "extra"],
        [["img/a.jpg", "zebra", "x"], ["img/b.jpg", "ant", "y"], [" img/c.jpg ", "zebra", ""]],
    )
    dataset = from_csv(manifest)
    assert dataset.class_names == ["ant", "zebra"]
    assert dataset.labels == [1, 0, 1]
    expected = [tmp_path / "img" / "a.jpg", tmp_path / "img" / "b.jpg", tmp_path / "img" / "c.jpg"]
    assert [r.path for r in dataset.records] == expected


def test_from_csv_integer_labels_root_and_absolute_paths(tmp_path: Path) -> None:
    absolute = _write_image(tmp_path / "abs.png", (0, 0, 0))
    manifest = _write_csv(tmp_path / "m.csv", ["file", "y"], [["a.jpg", "1"], [str(absolute), "0"]])
    dataset = from_csv(
        manifest,
        root=tmp_path / "images",
        path_column="file",
        label_column="y",
        class_names=["cat", "dog"],
    )
    assert dataset.labels == [1, 0]
    assert dataset.class_names == ["cat", "dog"]
    assert [r.path for r in dataset.records] == [tmp_path / "images" / "a.jpg", absolute]


def test_from_csv_names_checked_against_class_names(tmp_path: Path) -> None:
    manifest = _write_csv(tmp_path / "m.csv", ["path", "label"], [["a.jpg", "dog"]])
    dataset = from_csv(manifest, class_names=["cat", "dog", "eel"])
    assert dataset.labels == [1] and dataset.class_names == ["cat", "dog", "eel"]
    bad = _write_csv(tmp_path / "bad.csv", ["path", "label"], [["a.jpg", "dog"], ["b", "cow"]])
    with pytest.raises(DataError, match=r"not in class_names at \(line, label\) \[\(3, 'cow'\)\]"):
        from_csv(bad, class_names=["cat", "dog"])


def test_from_csv_integer_labels_need_class_names(tmp_path: Path) -> None:
    manifest = _write_csv(tmp_path / "m.csv", ["path", "label"], [["a.jpg", "0"]])
    with pytest.raises(DataError, match="integer labels in 'label'; pass class_names"):
        from_csv(manifest)


def test_from_csv_integer_label_out_of_range(tmp_path: Path) -> None:
    manifest = _write_csv(tmp_path / "m.csv", ["path", "label"], [["a", "0"], ["b", "2"]])
    with pytest.raises(DataError, match=r"outside 0\.\.1 \(2 class names\).*\[\(3, 2\)\]"):
        from_csv(manifest, class_names=["cat", "dog"])


def test_from_csv_missing_column_lists_available(tmp_path: Path) -> None:
    manifest = _write_csv(tmp_path / "m.csv", ["filename", "label"], [["a.jpg", "cat"]])
    with pytest.raises(
        DataError, match=r"no column\(s\) \['path'\]; available columns: \['filename', 'label'\]"
    ):
        from_csv(manifest)


def test_from_csv_empty_cell(tmp_path: Path) -> None:
    manifest = _write_csv(tmp_path / "m.csv", ["path", "label"], [["a.jpg", "cat"], ["b", ""]])
    with pytest.raises(DataError, match="line 3: empty 'label' cell"):
        from_csv(manifest)


def test_from_csv_missing_empty_and_header_only(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv' does not exist"):
        from_csv(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"is empty \(no header row\)"):
        from_csv(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("path,label\n")
    with pytest.raises(DataError, match="has a header but no rows"):
        from_csv(tmp_path / "header.csv")


# --- from_coop_split ------------------------------------------------------------------------


def _write_split(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


COOP_SPLIT = {
    "train": [
        ["Abyssinian_1.jpg", 0, "abyssinian"],
        ["american_bulldog_10.jpg", 1, "american_bulldog"],
        ["Bengal_3.jpg", 2, "bengal"],
    ],
    "val": [["american_bulldog_7.jpg", 1, "american_bulldog"]],
    "test": [["Bengal_9.jpg", 2, "bengal"], ["Abyssinian_2.jpg", 0, "abyssinian"]],
}


def test_from_coop_split(tmp_path: Path) -> None:
    split = _write_split(tmp_path / "split_zhou_OxfordPets.json", COOP_SPLIT)
    (tmp_path / "images").mkdir()
    splits = from_coop_split(split, tmp_path / "images")
    assert set(splits) == {"train", "val", "test"}
    for dataset in splits.values():
        assert dataset.class_names == ["abyssinian", "american bulldog", "bengal"]
    assert splits["test"].labels == [2, 0]
    assert splits["train"].records[1].path == tmp_path / "images" / "american_bulldog_10.jpg"
    assert len(splits["val"]) == 1


def _split_error(tmp_path: Path, data: object) -> None:
    (tmp_path / "images").mkdir(exist_ok=True)
    from_coop_split(_write_split(tmp_path / "split.json", data), tmp_path / "images")


def test_from_coop_split_inconsistent_names(tmp_path: Path) -> None:
    data = {"train": [["a.jpg", 0, "cat"]], "test": [["b.jpg", 0, "dog"]]}
    with pytest.raises(DataError, match=r"label 0 is named 'cat' \(split 'train'\) and 'dog'"):
        _split_error(tmp_path, data)


def test_from_coop_split_label_gaps(tmp_path: Path) -> None:
    data = {"train": [["a.jpg", 0, "cat"], ["b.jpg", 3, "dog"]]}
    with pytest.raises(DataError, match=r"without gaps; missing label\(s\) \[1, 2\]"):
        _split_error(tmp_path, data)


def test_from_coop_split_name_used_twice(tmp_path: Path) -> None:
    data = {"train": [["a.jpg", 0, "sea_lion"], ["b.jpg", 1, "sea lion"]]}
    with pytest.raises(DataError, match="class name 'sea lion' is used by labels 0 and 1"):
        _split_error(tmp_path, data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([["a.jpg", 0, "cat"]], r"must hold an object like"),
        ({}, r"must hold an object like"),
        ({"train": {"a.jpg": 0}}, r"split 'train' must be a list, got dict"),
        ({"train": []}, r"split 'train' is empty"),
        ({"train": [["a.jpg", "0", "cat"]]}, r"split 'train', item 0 must be \[relative_path"),
        ({"test": [["a.jpg", 0, "cat"], ["b.jpg", 1]]}, r"split 'test', item 1 must be"),
        ({"train": [["a.jpg", -1, "cat"]]}, r"item 0 must be"),
    ],
)
def test_from_coop_split_malformed(tmp_path: Path, data: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        _split_error(tmp_path, data)


def test_from_coop_split_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.json' does not exist"):
        from_coop_split(tmp_path / "missing.json", tmp_path)
    split = _write_split(tmp_path / "split.json", COOP_SPLIT)
    with pytest.raises(DataError, match=r"image root .*nowhere' .* is not a folder"):
        from_coop_split(split, tmp_path / "nowhere")
    (tmp_path / "broken.json").write_text('{"train": [')
    with pytest.raises(DataError, match="is not valid JSON"):
        from_coop_split(tmp_path / "broken.json", tmp_path)


# --- digits_dataset -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> dict[str, ImageClassificationDataset]:
    return digits_dataset(image_size=16)


def test_digits_dataset_split(digits: dict[str, ImageClassificationDataset]) -> None:
    from sklearn.datasets import load_digits

    targets = load_digits().target
    per_class = np.bincount(targets, minlength=10)
    assert set(digits) == {"train", "test"}
    assert digits["train"].class_names == list(DIGIT_NAMES)
    assert digits["train"].class_names[3] == "three"
    assert digits["train"].class_counts() == [int(2 * n // 3) for n in per_class]
    assert digits["test"].class_counts() == [int(n - 2 * n // 3) for n in per_class]
    assert len(digits["train"]) + len(digits["test"]) == len(targets) == 1797


def test_digits_dataset_pixels(digits: dict[str, ImageClassificationDataset]) -> None:
    from sklearn.datasets import load_digits

    raw = load_digits()
    first = int(np.flatnonzero(raw.target == 0)[0])  # first "zero" is the first train record
    image, label = digits["train"][0]
    assert label == 0 and image.mode == "RGB" and image.size == (16, 16)
    pixels = np.asarray(image)
    expected = np.rint(raw.images[first] * 255 / 16).astype(np.uint8)
    assert np.array_equal(pixels[::2, ::2, 0], expected)  # nearest-neighbour 2x upscale
    assert np.array_equal(pixels[..., 0], pixels[..., 2])  # grey rendered as RGB


def test_digits_dataset_is_deterministic(digits: dict[str, ImageClassificationDataset]) -> None:
    again = digits_dataset(image_size=16)
    for split in ("train", "test"):
        assert again[split].labels == digits[split].labels
    a, b = again["test"].records[-1].image, digits["test"].records[-1].image
    assert a is not None and b is not None and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_digits_dataset_bad_size(size: object) -> None:
    with pytest.raises(DataError, match="image_size must be a positive integer"):
        digits_dataset(image_size=size)  # type: ignore[arg-type]
