"""Aggregator ``attention``: a learned query attends over the K steps of each label."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from cotprompt.aggregators.base import step_logits
from cotprompt.config import ComponentConfig
from cotprompt.errors import ConfigError


class AttentionAggregatorConfig(ComponentConfig):
    """Options of the attention aggregator.

    Args:
        temperature: Softmax temperature of the step weights.
    """

    temperature: float = Field(default=1.0, gt=0)


class AttentionAggregator(nn.Module):
    """Per label c, step weights ``softmax_k(q . T_{k,c} / t)`` from a learned query ``q``.

    ``q`` starts at zero, so an untrained aggregator is the mean over steps.
    """

    name: ClassVar[str] = "attention"
    Config: ClassVar[type[AttentionAggregatorConfig]] = AttentionAggregatorConfig

    def __init__(self, config: AttentionAggregatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or AttentionAggregatorConfig()
        self.query: nn.Parameter | None = None

    def bind(self, num_steps: int, embed_dim: int) -> None:
        """Create the query ``[E]``."""
        if self.query is None:
            self.query = nn.Parameter(torch.zeros(embed_dim))
        elif self.query.shape[0] != embed_dim:
            raise ConfigError(
                f"aggregator query has size {self.query.shape[0]}, expected {embed_dim}"
            )

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor) -> Tensor:
        """``[B, E]``, ``[B or 1, K, C, E]`` -> ``[B, C]``."""
        assert self.query is not None, "bind() first"
        scores = torch.einsum("bkce,e->bkc", text_features, self.query.to(text_features.dtype))
        weights = torch.softmax(scores / self.config.temperature, dim=1)  # [B or 1, K, C]
        return logit_scale * (weights * step_logits(image_features, text_features)).sum(dim=1)
