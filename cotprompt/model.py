"""The trainable model: frozen backbone + tuner + aggregator -> logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cotprompt.protocols import Aggregator, Backbone, PromptTuner


class PromptModel(nn.Module):
    """Logits from image features (or pixels) through the tuner's prompts and the aggregator.

    The backbone is held outside the module tree: it is frozen, never saved and never wrapped
    for data-parallel training.

    Args:
        backbone: The frozen backbone the tuner is bound to.
        tuner: A bound :class:`~cotprompt.protocols.PromptTuner` (an ``nn.Module``).
        aggregator: A bound :class:`~cotprompt.protocols.Aggregator` (an ``nn.Module``).
    """

    def __init__(self, backbone: Backbone, tuner: PromptTuner, aggregator: Aggregator) -> None:
        super().__init__()
        self._backbone = (backbone,)
        self.tuner = tuner
        self.aggregator = aggregator

    @property
    def backbone(self) -> Backbone:
        """The frozen backbone."""
        return self._backbone[0]

    def image_features(self, pixels: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> normalised ``[B, E]`` (with gradients only if the tuner tunes the
        image encoder)."""
        return F.normalize(self.tuner.encode_images(self.backbone, pixels).float(), dim=-1)

    def forward(
        self, inputs: Tensor, inputs_are_pixels: bool = False, targets: Tensor | None = None
    ) -> Tensor:
        """Logits ``[B, C]`` from normalised features ``[B, E]`` or pixels ``[B, 3, H, W]``;
        with ``targets`` ``[B]`` (class indices), the mean cross-entropy loss instead.

        The loss goes through the aggregator's ``loss`` method when it has one (``mean``: one
        fused kernel on a GPU), so that training need not materialise the logits.
        """
        features = self.image_features(inputs) if inputs_are_pixels else inputs
        conditioned = features if self.tuner.image_conditioned else None
        text = self.tuner.encode_text(self.backbone, conditioned)
        scale = self.backbone.logit_scale.float()
        if targets is None:
            return self.aggregator(features, text, scale)
        loss = getattr(self.aggregator, "loss", None)
        if loss is not None:
            return loss(features, text, scale, targets)
        return F.cross_entropy(self.aggregator(features, text, scale).float(), targets)

    def trainable_state(self) -> dict[str, Tensor]:
        """Named trainable tensors (``tuner.*``, ``aggregator.*``): what an artifact stores."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def logits(self, features: Tensor) -> Tensor:
        """Inference logits from normalised features."""
        return self.forward(features)
