"""Datasets described by a small config: the ``data`` section of a ``cotprompt train`` config file.

A :class:`DataSpec` names where the images come from (a folder per class, a CSV manifest, a CoOp
split file, or the bundled digits), which classes to use (all, or CoCoOp's base / new halves) and
how many images per class to sample for training; :func:`build_datasets` turns it into datasets::

    from cotprompt.data.spec import DataSpec, build_datasets

    spec = DataSpec(format="folder", train="data/train", test="data/test", shots=16)
    datasets = build_datasets(spec)          # {"train": ..., "test": ...}

Relative paths are resolved against ``base_dir`` (the CLI passes the config file's folder).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cotprompt.config import error_message
from cotprompt.data.records import ImageClassificationDataset
from cotprompt.data.sampling import base_new_split, few_shot, subsample_classes
from cotprompt.data.sources import digits_dataset, from_coop_split, from_csv, from_folder
from cotprompt.data.verify import verify_images
from cotprompt.errors import ConfigError, DataError

__all__ = ["DataFormat", "DataSpec", "build_datasets"]

logger = logging.getLogger(__name__)

DataFormat = Literal["folder", "csv", "coop_split", "digits"]
"""Where images come from: see :class:`DataSpec`."""

_SPLITS = ("train", "val", "test")


class DataSpec(BaseModel):
    """The ``data`` section of a training config: which images, which classes, how many shots.

    Args:
        format: ``folder`` (``<split>/<class>/<image>``, :func:`~cotprompt.data.from_folder`),
            ``csv`` (a manifest per split, :func:`~cotprompt.data.from_csv`), ``coop_split``
            (CoOp's ``split_zhou_<Dataset>.json``, :func:`~cotprompt.data.from_coop_split`) or
            ``digits`` (scikit-learn's bundled digits, no files needed).
        train: ``folder``: the training folder; ``csv``: the training manifest. Required for
            those formats, unused by the others.
        val: Optional validation folder / manifest (evaluated after every epoch).
        test: Optional test folder / manifest (evaluated after training).
        split_file: ``coop_split``: the split JSON file (required).
        image_root: ``coop_split``: the folder the split's relative paths start from
            (required); ``csv``: the folder relative image paths start from (default: each
            manifest's folder).
        path_column: ``csv``: header of the image path column.
        label_column: ``csv``: header of the label column (class names, or indices with
            ``class_names``).
        class_names: Names to use instead of the folder names (``folder``, one per class folder
            in sorted order) or to name integer CSV labels (``csv``).
        dataset_name: A dataset name recorded with the task (for example ``oxford_pets``); the
            rule-based generator uses it to pick CoOp's zero-shot template.
        image_size: ``digits``: side of the rendered images in pixels.
        shots: Images per class sampled from the training split
            (:func:`~cotprompt.data.few_shot`); ``null`` trains on all images.
        val_shots: Images per class sampled from the validation split; ``null`` keeps all
            (CoOp samples ``min(shots, 4)``).
        seed: Seed of the few-shot sampler.
        allow_fewer: Take all images of classes with fewer than ``shots`` instead of failing.
        classes: ``all``, or CoCoOp's ``base`` (first half of the labels, rounded up) or ``new``
            (the rest) classes, applied to every split (:func:`~cotprompt.data.base_new_split`).
        verify: Decode every image of the (sampled) splits once before training, so that a
            missing or corrupt file is reported up front, by name.
        on_bad_image: ``raise``: a bad image is an error; ``skip``: drop it with a warning.
    """

    model_config = ConfigDict(extra="forbid")

    format: DataFormat = "folder"
    train: str | None = None
    val: str | None = None
    test: str | None = None
    split_file: str | None = None
    image_root: str | None = None
    path_column: str = "path"
    label_column: str = "label"
    class_names: list[str] | None = None
    dataset_name: str | None = None
    image_size: int = Field(default=32, ge=1)
    shots: int | None = Field(default=16, ge=1)
    val_shots: int | None = Field(default=None, ge=1)
    seed: int = 1
    allow_fewer: bool = False
    classes: Literal["all", "base", "new"] = "all"
    verify: bool = True
    on_bad_image: Literal["raise", "skip"] = "raise"

    @model_validator(mode="after")
    def _check_format_fields(self) -> DataSpec:
        if self.format in ("folder", "csv"):
            if self.train is None:
                raise ValueError(f"format {self.format!r} needs `train` (a path)")
            if self.split_file is not None:
                raise ValueError("`split_file` is only used with format 'coop_split'")
        elif self.format == "coop_split":
            if self.split_file is None or self.image_root is None:
                raise ValueError("format 'coop_split' needs `split_file` and `image_root`")
            given = [name for name in _SPLITS if getattr(self, name) is not None]
            if given:
                raise ValueError(
                    f"format 'coop_split' takes its splits from `split_file`; remove {given}"
                )
        else:  # digits
            given = [
                name
                for name in (*_SPLITS, "split_file", "image_root", "class_names")
                if getattr(self, name) is not None
            ]
            if given:
                raise ValueError(f"format 'digits' reads no files; remove {given}")
        if self.format == "folder" and self.image_root is not None:
            raise ValueError("`image_root` is only used with formats 'csv' and 'coop_split'")
        return self

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> DataSpec:
        """Validate a mapping (the ``data`` section of a config file).

        Raises:
            ConfigError: A missing section, an unknown key or an invalid value; the message names
                each problem and lists the valid keys.
        """
        if data is None:
            raise ConfigError(
                "the config has no `data` section; add one, for example "
                "`data: {format: folder, train: path/to/train, test: path/to/test, shots: 16}`"
            )
        if not isinstance(data, Mapping):
            raise ConfigError(f"the `data` section must be a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                loc = ".".join(str(p) for p in error.get("loc", ())) or "data"
                if error.get("type") == "extra_forbidden":
                    problems.append(f"data.{loc}: unknown option")
                else:
                    msg = error_message(error)
                    problems.append(f"data.{loc}: {msg}" if loc != "data" else f"data: {msg}")
            raise ConfigError(
                "invalid data section: " + "; ".join(problems)
                + ". Valid options: " + ", ".join(cls.model_fields) + "."
            ) from exc


def _path(value: str | None, base_dir: Path) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def _read_splits(spec: DataSpec, base_dir: Path) -> dict[str, ImageClassificationDataset]:
    if spec.format == "digits":
        return digits_dataset(image_size=spec.image_size)
    if spec.format == "coop_split":
        split_file = _path(spec.split_file, base_dir)
        image_root = _path(spec.image_root, base_dir)
        assert split_file is not None and image_root is not None
        coop = from_coop_split(split_file, image_root)
        if "train" not in coop:
            raise DataError(
                f"CoOp split file {str(split_file)!r} has no 'train' split "
                f"(it has {sorted(coop)})"
            )
        return {name: coop[name] for name in _SPLITS if name in coop}
    splits: dict[str, ImageClassificationDataset] = {}
    for name in _SPLITS:
        path = _path(getattr(spec, name), base_dir)
        if path is None:
            continue
        if spec.format == "folder":
            splits[name] = from_folder(path, class_names=spec.class_names)
        else:
            names = spec.class_names
            if names is None and "train" in splits:
                names = splits["train"].class_names  # same label set for every split
            splits[name] = from_csv(
                path,
                root=_path(spec.image_root, base_dir),
                path_column=spec.path_column,
                label_column=spec.label_column,
                class_names=names,
            )
    train_names = splits["train"].class_names
    for name, dataset in splits.items():
        if dataset.class_names != train_names:
            only_here = sorted(set(dataset.class_names) - set(train_names))[:5]
            only_train = sorted(set(train_names) - set(dataset.class_names))[:5]
            raise DataError(
                f"the {name} split's classes differ from the train split's "
                f"({len(dataset.class_names)} vs {len(train_names)}; only in {name}: "
                f"{only_here}, only in train: {only_train}); every split needs the same classes"
            )
    return splits


def build_datasets(
    spec: DataSpec | Mapping[str, Any], *, base_dir: str | Path | None = None
) -> dict[str, ImageClassificationDataset]:
    """Read, filter, sample and check the datasets a :class:`DataSpec` describes.

    Steps: read every split; keep the ``base`` / ``new`` classes if asked (relabelled
    ``0..n-1``); sample ``shots`` images per class of ``train`` (and ``val_shots`` of ``val``);
    decode every remaining image once if ``verify``.

    Args:
        spec: The spec, or a mapping validated into one.
        base_dir: Folder that relative paths are resolved against (default: the current
            directory).

    Returns:
        ``{"train": ..., "val": ..., "test": ...}``, with only the splits that exist; every
        split has the same class names, ``train`` is always present.

    Raises:
        ConfigError: The mapping is not a valid spec.
        DataError: Missing files or folders, malformed manifests, splits with different classes,
            too few images for ``shots``, or unreadable images (``on_bad_image="raise"``).
    """
    if not isinstance(spec, DataSpec):
        spec = DataSpec.from_mapping(spec)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    splits = _read_splits(spec, base)
    if spec.classes != "all":
        base_labels, new_labels = base_new_split(splits["train"].class_names)
        keep = base_labels if spec.classes == "base" else new_labels
        splits = {name: subsample_classes(ds, keep) for name, ds in splits.items()}
    if spec.shots is not None:
        splits["train"] = few_shot(
            splits["train"], spec.shots, seed=spec.seed, allow_fewer=spec.allow_fewer
        )
    if spec.val_shots is not None and "val" in splits:
        splits["val"] = few_shot(
            splits["val"], spec.val_shots, seed=spec.seed, allow_fewer=spec.allow_fewer
        )
    if spec.verify and spec.format != "digits":
        splits = {
            name: verify_images(ds, on_error=spec.on_bad_image, num_workers=4)
            for name, ds in splits.items()
        }
    for name, dataset in splits.items():
        logger.info(
            "%s split: %d images, %d classes", name, len(dataset), dataset.num_classes
        )
    return splits
