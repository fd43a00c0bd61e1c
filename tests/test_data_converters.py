"""Foreign datasets in (issue 15, "Data in"): Hugging Face ``datasets``, torchvision
``ImageFolder`` and (image, label) pairs convert to an ImageClassificationDataset, through
``cotprompt.data`` and automatically in ``fit`` / ``evaluate``; what cannot be converted
unambiguously is refused with a DataError naming the converter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from golden.cases import CLASSES, build, colour_images

from cotprompt.data import (
    ImageClassificationDataset,
    as_classification_dataset,
    from_hf_dataset,
    from_pairs,
    from_torchvision,
)
from cotprompt.errors import DataError

ONE_EPOCH = {"epochs": 1, "warmup_epochs": 0}


def _png_folder(root: Path) -> Path:
    for i, (image, label) in enumerate(colour_images(per_class=2)):
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i}.png")
    return root


def _fit_and_evaluate(data: Any, classes: list[str] = CLASSES) -> None:
    pipeline = build("cotpt")
    result = pipeline.fit(data, val=data, training=ONE_EPOCH)
    assert len(result.history) == 1
    assert list(pipeline.task.labels) == classes  # type: ignore[union-attr]
    metrics = pipeline.evaluate(data)
    assert 0.0 <= metrics.accuracy <= 1.0


def test_pairs_of_pil_and_int_with_class_names() -> None:
    pairs = colour_images(per_class=2)
    dataset = from_pairs(pairs, class_names=CLASSES)
    assert isinstance(dataset, ImageClassificationDataset)
    assert dataset.class_names == CLASSES
    assert [r.label for r in dataset.records] == [label for _, label in pairs]
    assert all(r.path is None and r.image is image
               for r, (image, _) in zip(dataset.records, pairs, strict=True))
    with pytest.raises(DataError, match=r"from_pairs\(pairs, class_names="):
        as_classification_dataset(pairs)


def test_pairs_of_path_and_name_fit_and_evaluate(tmp_path: Path) -> None:
    root = _png_folder(tmp_path / "images")
    pairs = [(str(path), path.parent.name) for path in sorted(root.rglob("*.png"))][::-1]
    dataset = as_classification_dataset(pairs)
    assert dataset.class_names == sorted(CLASSES)
    assert [r.path for r in dataset.records] == [Path(p) for p, _ in pairs]  # source order
    assert [dataset.class_names[r.label] for r in dataset.records] == [n for _, n in pairs]
    ordered = from_pairs(pairs, class_names=CLASSES)
    assert ordered.class_names == CLASSES
    _fit_and_evaluate(pairs, sorted(CLASSES))  # strings: converted in fit


def test_torchvision_image_folder(tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(_png_folder(tmp_path / "images")))
    dataset = from_torchvision(folder)
    assert dataset.class_names == folder.classes
    assert [(str(r.path), r.label) for r in dataset.records] == [tuple(s) for s in folder.samples]
    assert as_classification_dataset(folder).records == dataset.records
    pipeline = build("cotpt")
    pipeline.fit(ImageFolder(str(tmp_path / "images")), training=ONE_EPOCH)
    # the bound classes are the folder's (sorted) classes; evaluation on a same-ordered set
    assert list(pipeline.task.labels) == folder.classes  # type: ignore[union-attr]
    # worker processes load the same images: the same result as in the main process
    assert pipeline.evaluate(folder, num_workers=1) == pipeline.evaluate(dataset)


def _hf_dataset() -> Any:
    datasets = pytest.importorskip("datasets")
    pairs = colour_images(per_class=2)
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=CLASSES)})
    return datasets.Dataset.from_dict({"image": [image for image, _ in pairs],
                                       "label": [label for _, label in pairs]},
                                      features=features)


def test_hugging_face_dataset(tmp_path: Path) -> None:
    ds = _hf_dataset()
    dataset = from_hf_dataset(ds)
    assert dataset.class_names == CLASSES
    assert [r.label for r in dataset.records] == list(ds["label"])
    assert all(r.path is None and r.image is not None for r in dataset.records)
    renamed = ds.rename_columns({"image": "img", "label": "fine_label"})
    with pytest.raises(DataError, match=r"from_hf_dataset\(ds, image_column="):
        as_classification_dataset(renamed)
    assert from_hf_dataset(renamed, image_column="img",
                           label_column="fine_label").class_names == CLASSES
    _fit_and_evaluate(ds)


class _ClassLabelLike:
    def __init__(self, names: list[str]) -> None:
        self.names = names


class _FakeHF:
    """Shaped like ``datasets.Dataset`` without the library: features, column_names, rows."""

    def __init__(self) -> None:
        self.rows = [{"image": image, "label": label} for image, label in colour_images(2)]
        self.features = {"image": object(), "label": _ClassLabelLike(CLASSES)}
        self.column_names = ["image", "label"]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Any:
        return iter(self.rows)

    def __getitem__(self, key: Any) -> Any:
        return [row[key] for row in self.rows] if isinstance(key, str) else self.rows[key]


def test_duck_typed_hugging_face_dataset_needs_no_import() -> None:
    dataset = as_classification_dataset(_FakeHF())
    assert dataset.class_names == CLASSES
    assert len(dataset) == 6


def test_unconvertible_objects_name_a_converter() -> None:
    with pytest.raises(DataError, match="call from_pairs, from_hf_dataset or from_torchvision"):
        as_classification_dataset(object())
    with pytest.raises(DataError, match=r"from_pairs\(pairs, class_names="):
        build("cotpt").evaluate([(colour_images(1)[0][0], 0)])
    with pytest.raises(DataError, match="expected a PIL image or an image file path"):
        from_pairs([(3.5, "red")])
