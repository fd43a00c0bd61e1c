"""The interface the tuners need from a vision-language backbone."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from pydantic import BaseModel
from torch import Tensor


@runtime_checkable
class Backbone(Protocol):
    """A frozen CLIP-style model: image encoder, text encoder over embeddings, tokenizer.

    Shapes: N text sequences, L token positions (at most ``context_length``), W text width,
    E joint embedding dimension.
    """

    name: ClassVar[str]
    Config: ClassVar[type[BaseModel]]
    config: BaseModel

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
