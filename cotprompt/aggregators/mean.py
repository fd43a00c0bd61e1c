"""Aggregator ``mean``: the average of the K steps' logits."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from cotprompt.aggregators.base import step_logits
from cotprompt.config import ComponentConfig


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
