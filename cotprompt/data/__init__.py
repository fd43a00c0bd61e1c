"""Datasets for few-shot prompt tuning: records, readers, converters (Hugging Face, torchvision,
(image, label) pairs), image checks and sampling."""

from __future__ import annotations

from cotprompt.data.converters import (
    as_classification_dataset,
    from_hf_dataset,
    from_pairs,
    from_torchvision,
)
from cotprompt.data.images import load_image
from cotprompt.data.records import ImageClassificationDataset, ImageRecord, Transform
from cotprompt.data.sampling import base_new_split, few_shot, subsample_classes
from cotprompt.data.sources import (
    DIGIT_NAMES,
    IMAGE_EXTENSIONS,
    digits_dataset,
    from_coop_split,
    from_csv,
    from_folder,
)
from cotprompt.data.verify import verify_images

__all__ = [
    "DIGIT_NAMES",
    "IMAGE_EXTENSIONS",
    "ImageClassificationDataset",
    "ImageRecord",
    "Transform",
    "as_classification_dataset",
    "base_new_split",
    "digits_dataset",
    "few_shot",
    "from_coop_split",
    "from_csv",
    "from_folder",
    "from_hf_dataset",
    "from_pairs",
    "from_torchvision",
    "load_image",
    "subsample_classes",
    "verify_images",
]
