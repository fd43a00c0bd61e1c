"""Shared pieces of the aggregators."""

from __future__ import annotations

import torch
from torch import Tensor


def step_logits(image_features: Tensor, text_features: Tensor) -> Tensor:
    """Cosine similarity of each image with each step's label features.

    Args:
        image_features: ``[B, E]``, L2-normalised.
        text_features: ``[B or 1, K, C, E]``, L2-normalised.

    Returns:
        ``[B, K, C]`` cosine similarities (not yet scaled).
    """
    image_features = image_features.to(text_features.dtype)
    if text_features.shape[0] == 1:
        return torch.einsum("be,kce->bkc", image_features, text_features[0])
    return torch.einsum("be,bkce->bkc", image_features, text_features)
