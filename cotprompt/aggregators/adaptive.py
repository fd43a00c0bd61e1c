"""Aggregator ``adaptive``: the self-adaptive chain controller (image-conditioned step weights)."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from cotprompt.aggregators.base import step_logits
from cotprompt.config import ComponentConfig
from cotprompt.errors import ConfigError


class AdaptiveAggregatorConfig(ComponentConfig):
    """Options of the chain controller.

    Args:
        hidden_reduction: The controller's hidden size is ``E // hidden_reduction``.
        temperature: Softmax temperature of the step weights.
    """

    hidden_reduction: int = Field(default=16, ge=1)
    temperature: float = Field(default=1.0, gt=0)


class AdaptiveAggregator(nn.Module):
    """Step weights ``softmax(g(f(x)))`` per image from a small MLP ``g: E -> K``.

    The last layer starts at zero, so an untrained controller weighs all steps equally.
    (Reconstruction of CoT-PT's "Self Adaptive Chain Controller".)
    """

    name: ClassVar[str] = "adaptive"
    Config: ClassVar[type[AdaptiveAggregatorConfig]] = AdaptiveAggregatorConfig

    def __init__(self, config: AdaptiveAggregatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or AdaptiveAggregatorConfig()
        self.controller: nn.Sequential | None = None

    def bind(self, num_steps: int, embed_dim: int) -> None:
        """Create the controller for K = ``num_steps``."""
        if self.controller is None:
            hidden = max(1, embed_dim // self.config.hidden_reduction)
            last = nn.Linear(hidden, num_steps)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.controller = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(), last)
        elif self.controller[-1].out_features != num_steps:
            raise ConfigError(
                f"the chain controller was trained for {self.controller[-1].out_features} steps, "
                f"not {num_steps}"
            )

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor) -> Tensor:
        """``[B, E]``, ``[B or 1, K, C, E]`` -> ``[B, C]``."""
        assert self.controller is not None, "bind() first"
        weights = torch.softmax(
            self.controller(image_features.float()) / self.config.temperature, dim=-1
        )  # [B, K]
        logits = step_logits(image_features, text_features)  # [B, K, C]
        return logit_scale * torch.einsum("bk,bkc->bc", weights.to(logits.dtype), logits)
