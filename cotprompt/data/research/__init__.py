"""The standard datasets of the prompt-learning literature, read from ``$DATA`` exactly as the
research code (CoOp / CoCoOp on Dassl) reads them, and its few-shot sampler.

- :func:`load_dataset` / :func:`get_reader` / :func:`dataset_names`: the 15 layouts of the
  research code's ``DATASETS.md``, datasets of plugins (``register_datasets`` hook) and a user's
  own ``folder:PATH``, ``csv:PATH`` or ``split:PATH``.
- :func:`research_few_shot`: the research code's K-shot images for a seed (>= 1); they are the
  research code's image for image on the split-file datasets, and on ImageNet when read with
  ``load_dataset(..., listing="os")`` on the same copy of the files.
- The API a sweep runner uses besides: :func:`research_class_labels` (the labels of the
  ``"base"`` / ``"new"`` classes), :func:`research_test_split` (the test split of a subset) and
  :func:`training_image_list` (a run's training images relative to ``$DATA``, symbolic links not
  followed).
"""

from cotprompt.data.research.base import DatasetReader, ResearchDataset
from cotprompt.data.research.fewshot import (
    CLASS_SUBSETS,
    ClassSubset,
    research_class_labels,
    research_few_shot,
    research_test_split,
    training_image_list,
)
from cotprompt.data.research.layout import Listing
from cotprompt.data.research.registry import (
    BUILTIN_DATASETS,
    GENERIC_KINDS,
    IMAGENET_VARIANTS,
    STANDARD_DATASETS,
    dataset_names,
    dataset_provider,
    get_reader,
    load_dataset,
)

__all__ = [
    "BUILTIN_DATASETS",
    "CLASS_SUBSETS",
    "GENERIC_KINDS",
    "IMAGENET_VARIANTS",
    "STANDARD_DATASETS",
    "ClassSubset",
    "DatasetReader",
    "Listing",
    "ResearchDataset",
    "dataset_names",
    "dataset_provider",
    "get_reader",
    "load_dataset",
    "research_class_labels",
    "research_few_shot",
    "research_test_split",
    "training_image_list",
]
