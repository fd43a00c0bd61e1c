"""Aggregator ``mean``: the average of the K steps' logits."""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from cotprompt.aggregators.base import step_logits
from cotprompt.config import ComponentConfig
from cotprompt.kernels.ops import cosine_cross_entropy, uses_triton


class MeanAggregatorConfig(ComponentConfig):
    """The mean aggregator has no options."""


class MeanAggregator(nn.Module):
    """``logits = scale * mean_k cos(f(x), T_k)``; with K=1, CoOp's / CoCoOp's logits."""

    name: ClassVar[str] = "mean"
    Config: ClassVar[type[MeanAggregatorConfig]] = MeanAggregatorConfig

    def __init__(self, config: MeanAggregatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or MeanAggregatorConfig()

    def bind(self, num_steps: int, embed_dim: int) -> None:
        """No parameters to create."""

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor) -> Tensor:
        """``[B, E]``, ``[B or 1, K, C, E]`` -> ``[B, C]``."""
        return logit_scale * step_logits(image_features, text_features).mean(dim=1)

    def loss(
        self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor, targets: Tensor
    ) -> Tensor:
        """Mean cross-entropy of :meth:`forward`'s logits against ``targets`` ``[B]``.

        Where the Triton kernels apply (CUDA tensors, kernels enabled, a frozen logit scale),
        normalisation, scaled cosine logits and cross-entropy run as one fused kernel that never
        writes the ``[B, K, C]`` step logits; otherwise the plain PyTorch computation.
        """
        if not logit_scale.requires_grad and uses_triton(image_features, text_features):
            return cosine_cross_entropy(image_features, text_features, logit_scale, targets)
        logits = self(image_features, text_features, logit_scale)
        return F.cross_entropy(logits.float(), targets)
