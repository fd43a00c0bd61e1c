"""The three extension points of cotprompt, as :class:`typing.Protocol` classes.

A plugin provides a class that satisfies one of these protocols, with two class attributes,
``name`` (the registered name) and ``Config`` (a pydantic model of its options), and a constructor
that takes one ``Config`` instance. Tuners and aggregators are ``torch.nn.Module`` subclasses:
their parameters are what training updates and what a saved artifact stores.

Shapes: B images, K chain steps, C labels, E joint embedding dimension, W text width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import torch
from pydantic import BaseModel
from torch import Tensor

if TYPE_CHECKING:
    from cotprompt.types import PromptChain, Task


@runtime_checkable
class Backbone(Protocol):
    """A frozen CLIP-style model: image encoder, text encoder over embeddings, tokenizer.

    Shapes: N text sequences, L token positions (at most ``context_length``), W text width,
    E joint embedding dimension.
    """

    name: ClassVar[str]

    # read-only members: an implementation's own Config / config subclass satisfies them
    @property
    def Config(self) -> type[BaseModel]:
        """The pydantic model of the options (a class attribute)."""
        ...

    @property
    def config(self) -> BaseModel:
        """The options it was built with (a ``Config`` instance)."""
        ...

    embed_dim: int
    text_width: int
    context_length: int

    @property
    def device(self) -> torch.device:
        """Where the backbone's weights live."""
        ...

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the text encoder's weights."""
        ...

    @property
    def logit_scale(self) -> Tensor:
        """The exponentiated logit scale, a scalar tensor."""
        ...

    def image_transform(self, train: bool = False) -> Callable[[Any], Tensor]:
        """PIL image -> ``[3, H, W]`` tensor; ``train=True`` may add random augmentation."""
        ...

    def encode_images(self, pixels: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, E]`` image features, not normalised."""
        ...

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """Texts -> token ids ``[N, context_length]`` (long)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Number of tokens of ``text`` (no start/end tokens), before any truncation."""
        ...

    def end_of_text_index(self, tokens: Tensor) -> Tensor:
        """Position of the end-of-text token of each row of ``tokens``, ``[N]`` (long)."""
        ...

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """Token ids ``[N, L]`` -> token embeddings ``[N, L, W]`` (no positional embedding)."""
        ...

    def encode_text_embeddings(self, embeddings: Tensor, eot_index: Tensor) -> Tensor:
        """Prompt embeddings ``[N, L, W]`` -> text features ``[N, E]``, not normalised.

        Args:
            embeddings: Token embeddings (learnable context already spliced in), ``L`` at most
                ``context_length``; positions after ``eot_index`` may be dropped by the caller.
            eot_index: ``[N]`` position of the end-of-text token, where features are pooled.
        """
        ...

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """Plain texts -> text features ``[N, E]``, not normalised (zero-shot prompts)."""
        ...

    def spec(self) -> dict[str, Any]:
        """A JSON-serialisable description sufficient to rebuild the backbone."""
        ...

    def to(self, device: torch.device) -> Any:
        """Move the weights to ``device`` (``torch.nn.Module.to``)."""
        ...


@runtime_checkable
class PromptGenerator(Protocol):
    """Turns a task into a chain of prompt texts.

    Attributes:
        name: Registered name.
        Config: Pydantic model of the generator's options.
    """

    name: ClassVar[str]

    # read-only members: an implementation's own Config / config subclass satisfies them
    @property
    def Config(self) -> type[BaseModel]:
        """The pydantic model of the options (a class attribute)."""
        ...

    @property
    def config(self) -> BaseModel:
        """The options it was built with (a ``Config`` instance)."""
        ...

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

    # read-only members: an implementation's own Config / config subclass satisfies them
    @property
    def Config(self) -> type[BaseModel]:
        """The pydantic model of the options (a class attribute)."""
        ...

    @property
    def config(self) -> BaseModel:
        """The options it was built with (a ``Config`` instance)."""
        ...

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

    # read-only members: an implementation's own Config / config subclass satisfies them
    @property
    def Config(self) -> type[BaseModel]:
        """The pydantic model of the options (a class attribute)."""
        ...

    @property
    def config(self) -> BaseModel:
        """The options it was built with (a ``Config`` instance)."""
        ...

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
