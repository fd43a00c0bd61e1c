"""An example cotprompt plugin: a prompt generator and an aggregator.

- ``example-photo-styles`` (generator): a two-step chain per label, ``"{label}."`` then
  ``"{label}, in a <style> photo."`` for each configured style (the style texts of a label are
  ensembled by the tuner).
- ``example-max`` (aggregator): the logit of a label is the logit scale times the largest cosine
  similarity between the image and the label's text features over the K steps.

cotprompt finds this module through the entry point declared in ``pyproject.toml``
(``[project.entry-points.cotprompt] example = "cotprompt_plugin_example"``) and calls the two
``@hookimpl`` functions at the bottom.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from cotprompt.config import ComponentConfig
from cotprompt.hookspecs import Register, hookimpl
from cotprompt.types import PromptChain, PromptStep, Task

if TYPE_CHECKING:
    from cotprompt.backbones.base import Backbone

__all__ = [
    "MaxAggregator",
    "MaxAggregatorConfig",
    "PhotoStylesConfig",
    "PhotoStylesGenerator",
    "register_aggregators",
    "register_generators",
]

__version__ = "0.1.0"


class PhotoStylesConfig(ComponentConfig):
    """Options of ``example-photo-styles``.

    Args:
        styles: The photo styles of step 2; each gives one text per label.
    """

    styles: list[str] = Field(
        default_factory=lambda: ["bright", "dark", "close-up", "blurry"], min_length=1
    )

    @field_validator("styles")
    @classmethod
    def _non_blank(cls, styles: list[str]) -> list[str]:
        cleaned = [s.strip() for s in styles]
        if any(not s for s in cleaned):
            raise ValueError("styles must be non-empty strings")
        return cleaned


class PhotoStylesGenerator:
    """A two-step chain: the label, then the label in several photo styles.

    Implements :class:`cotprompt.protocols.PromptGenerator`.

    Args:
        config: The generator's options (defaults when omitted).
    """

    name: ClassVar[str] = "example-photo-styles"
    Config: ClassVar[type[PhotoStylesConfig]] = PhotoStylesConfig

    def __init__(self, config: PhotoStylesConfig | None = None) -> None:
        self.config = config if config is not None else PhotoStylesConfig()

    def generate(self, task: Task, backbone: Backbone | None = None) -> PromptChain:
        """Build the chain for ``task``.

        Args:
            task: The labels to write prompts for.
            backbone: Unused (the texts are short enough for any CLIP context length).

        Returns:
            A chain with steps ``"label"`` (``"{label}."``) and ``"style"`` (one
            ``"{label}, in a <style> photo."`` text per style), and zero-shot sentences
            ``"a photo of a {label}."``.
        """
        labels = task.labels
        return PromptChain(
            labels=labels,
            steps=(
                PromptStep(name="label", texts=tuple((f"{label}.",) for label in labels)),
                PromptStep(
                    name="style",
                    texts=tuple(
                        tuple(f"{label}, in a {style} photo." for style in self.config.styles)
                        for label in labels
                    ),
                ),
            ),
            zero_shot=tuple((f"a photo of a {label}.",) for label in labels),
        )


class MaxAggregatorConfig(ComponentConfig):
    """Options of ``example-max`` (it has none)."""


class MaxAggregator(nn.Module):
    """Logits from the best-matching step: ``logit_scale * max_k cos(image, text_k)``.

    Implements :class:`cotprompt.protocols.Aggregator`; it has no trainable parameters.

    Args:
        config: The aggregator's options (defaults when omitted).
    """

    name: ClassVar[str] = "example-max"
    Config: ClassVar[type[MaxAggregatorConfig]] = MaxAggregatorConfig

    def __init__(self, config: MaxAggregatorConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else MaxAggregatorConfig()
        self.num_steps: int | None = None
        self.embed_dim: int | None = None

    def bind(self, num_steps: int, embed_dim: int) -> None:
        """Record K and E, used to check the shapes of :meth:`forward`'s inputs.

        Args:
            num_steps: K, the number of chain steps.
            embed_dim: E, the joint embedding dimension.
        """
        if num_steps < 1 or embed_dim < 1:
            raise ValueError(f"num_steps and embed_dim must be >= 1, got {num_steps}, {embed_dim}")
        self.num_steps = num_steps
        self.embed_dim = embed_dim

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor) -> Tensor:
        """Logits ``[B, C]``.

        Args:
            image_features: ``[B, E]``, L2-normalised.
            text_features: ``[B or 1, K, C, E]``, L2-normalised per step.
            logit_scale: Scalar tensor, the (already exponentiated) logit scale.

        Returns:
            ``logit_scale * max over K of image · text``, shape ``[B, C]``.
        """
        if image_features.dim() != 2 or text_features.dim() != 4:
            raise ValueError(
                "expected image_features [B, E] and text_features [B or 1, K, C, E], got "
                f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
            )
        batch, embed = image_features.shape
        text_batch, steps, _, text_embed = text_features.shape
        if text_embed != embed or text_batch not in (1, batch):
            raise ValueError(
                f"text_features {tuple(text_features.shape)} do not match image_features "
                f"{tuple(image_features.shape)}"
            )
        if self.num_steps is not None and steps != self.num_steps:
            raise ValueError(f"bound to {self.num_steps} steps, got text features with {steps}")
        if text_batch == 1:
            per_step = torch.einsum("be,kce->bkc", image_features, text_features[0])
        else:
            per_step = torch.einsum("be,bkce->bkc", image_features, text_features)
        return logit_scale * per_step.amax(dim=1)


@hookimpl
def register_generators(register: Register) -> None:
    """Register :class:`PhotoStylesGenerator`."""
    register(PhotoStylesGenerator)


@hookimpl
def register_aggregators(register: Register) -> None:
    """Register :class:`MaxAggregator`."""
    register(MaxAggregator)
