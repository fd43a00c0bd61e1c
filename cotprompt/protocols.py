"""The three extension points of cotprompt, as :class:`typing.Protocol` classes.

A plugin provides a class that satisfies one of these protocols, with two class attributes,
``name`` (the registered name) and ``Config`` (a pydantic model of its options), and a constructor
that takes one ``Config`` instance. Tuners and aggregators are ``torch.nn.Module`` subclasses:
their parameters are what training updates and what a saved artifact stores.

Shapes: B images, K chain steps, C labels, E joint embedding dimension, W text width.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

if TYPE_CHECKING:
    from torch import Tensor

    from cotprompt.backbones.base import Backbone
    from cotprompt.types import PromptChain, Task


@runtime_checkable
class PromptGenerator(Protocol):
    """Turns a task into a chain of prompt texts.

    Attributes:
        name: Registered name.
        Config: Pydantic model of the generator's options.
    """

    name: ClassVar[str]
    Config: ClassVar[type[BaseModel]]
    config: BaseModel

    def generate(self, task: Task, backbone: Backbone | None = None) -> PromptChain:
        """Build the K-step chain for ``task``.

        Args:
            task: The labels (and optional attributes) to write prompts for.
            backbone: The backbone the prompts are for, when known; generators may use its
                tokenizer to keep texts inside the context length.

        Returns:
            A :class:`~cotprompt.types.PromptChain` with one entry per label in every step.
        """
        ...


@runtime_checkable
class PromptTuner(Protocol):
    """Learnable prompts: turns a bound chain (and image features) into step text features.

    A tuner is bound to one backbone and one chain (one label set) at a time; binding builds the
    token buffers and, on first use, the parameters. Tuners that learn per-label parameters
    (class-specific context) cannot be bound to a different label set after training and must say
    so with :class:`~cotprompt.errors.ConfigError`.
    """

    name: ClassVar[str]
    Config: ClassVar[type[BaseModel]]
    config: BaseModel

    @property
    def image_conditioned(self) -> bool:
        """True when :meth:`encode_text` uses the image features (one text pass per image)."""
        ...

    @property
    def tunes_image_encoder(self) -> bool:
        """True when :meth:`encode_images` has trainable parts (image features cannot be cached)."""
        ...

    def bind(self, backbone: Backbone, chain: PromptChain) -> None:
        """Prepare for ``chain`` on ``backbone`` (tokenise once, build buffers and parameters)."""
        ...

    def encode_images(self, backbone: Backbone, pixels: Tensor) -> Tensor:
        """Image features ``[B, E]`` (not normalised) from pixels ``[B, 3, H, W]``."""
        ...

    def encode_text(self, backbone: Backbone, image_features: Tensor | None) -> Tensor:
        """Step text features, L2-normalised, shape ``[B, K, C, E]`` or ``[1, K, C, E]``.

        Args:
            backbone: The frozen backbone the tuner is bound to.
            image_features: ``[B, E]`` normalised image features, or ``None`` when the tuner is
                not image-conditioned.
        """
        ...


@runtime_checkable
class Aggregator(Protocol):
    """Combines the K step text features with the image features into logits."""

    name: ClassVar[str]
    Config: ClassVar[type[BaseModel]]
    config: BaseModel

    def bind(self, num_steps: int, embed_dim: int) -> None:
        """Create the parameters for K = ``num_steps`` steps of dimension E = ``embed_dim``."""
        ...

    def __call__(
        self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor
    ) -> Tensor:
        """Logits ``[B, C]``.

        Args:
            image_features: ``[B, E]``, L2-normalised.
            text_features: ``[B or 1, K, C, E]``, L2-normalised per step.
            logit_scale: Scalar tensor, the backbone's (already exponentiated) logit scale.

        An aggregator may also define ``loss(image_features, text_features, logit_scale,
        targets) -> Tensor``, the mean cross-entropy of these logits against ``targets`` ``[B]``;
        training calls it instead of ``F.cross_entropy(aggregator(...), targets)`` (``mean``
        uses it for a fused GPU kernel).
        """
        ...
