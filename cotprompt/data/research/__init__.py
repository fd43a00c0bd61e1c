"""The standard datasets of the prompt-learning literature, read from ``$DATA`` exactly as the
research code (CoOp / CoCoOp on Dassl) reads them, and its few-shot sampler."""

from cotprompt.data.research.base import DatasetReader, ResearchDataset

__all__ = ["DatasetReader", "ResearchDataset"]
