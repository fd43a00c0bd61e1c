"""Tuner ``vpt``: visual prompt tuning of the ViT image encoder, with fixed text prompts.

Learnable prompt tokens are inserted into the open_clip ViT image encoder (Jia et al., "Visual
Prompt Tuning", ECCV 2022; see :mod:`cotprompt.tuners.visual_prompts`); the text side is frozen:
the chain's sentences are encoded once per :meth:`VPTTuner.bind` with the frozen text encoder.

Text features have shape ``[1, K, C, E]`` (K = the chain's step count, so that any aggregator
bound to the chain works): with ``text="zero_shot"`` (default) every step holds the same zero-shot
classifier (the chain's zero-shot sentences, ensembled per label), so that with the ``mean``
aggregator the logits are CLIP's zero-shot logits on the prompted image features; with
``text="steps"`` step k holds the step's own texts behind ``text_prefix``
(``"a photo of a" + " airplane, a type of aircraft."``).
"""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from cotprompt.backbones.base import Backbone
from cotprompt.backbones.zero_shot import zero_shot_classifier
from cotprompt.errors import ConfigError
from cotprompt.tuners.prompt_tokens import check_distinct_labels, labels_must_differ
from cotprompt.tuners.visual_prompts import VisualPromptConfig, VisualPrompts
from cotprompt.types import PromptChain

logger = logging.getLogger(__name__)


class VPTConfig(VisualPromptConfig):
    """Options of ``vpt``: the visual prompt options plus the fixed text prompts.

    Args:
        text: ``zero_shot``: the chain's zero-shot sentences (one classifier, repeated over the K
            steps); ``steps``: each step's texts behind ``text_prefix``.
        text_prefix: Words put before each step text when ``text="steps"``.
    """

    text: Literal["zero_shot", "steps"] = "zero_shot"
    text_prefix: str = "a photo of a"


encode_label_texts = zero_shot_classifier  # the name this module had for it


class VPTTuner(nn.Module):
    """Visual prompt tokens in the image encoder; frozen text prompts.

    Parameters (created on the first :meth:`bind`): ``visual.prompts`` ``[depth, n, D]``.
    """

    name: ClassVar[str] = "vpt"
    Config: ClassVar[type[VPTConfig]] = VPTConfig

    def __init__(self, config: VPTConfig | None = None) -> None:
        super().__init__()
        self.config = config or self.Config()
        self.visual = VisualPrompts(self.config)
        self.text_features: Tensor | None
        self.register_buffer("text_features", None, persistent=False)  # [1, K, C, E]
        self.bound_labels: tuple[str, ...] | None = None

    @property
    def image_conditioned(self) -> bool:
        """The text prompts are fixed: they never depend on the image."""
        return False

    @property
    def tunes_image_encoder(self) -> bool:
        """True unless the prompts are disabled or have zero tokens (then the image features
        are the frozen ones and may be cached)."""
        return self.visual.active

    def bind(self, backbone: Backbone, chain: PromptChain) -> None:
        """Create the visual prompts on first use and encode the fixed text prompts once.

        Raises:
            ConfigError: the image tower is not an open_clip ViT, or ``depth`` exceeds its layers.
            DataError: labels whose prompts the tokenizer cannot tell apart.
        """
        self.visual.bind(backbone)  # the tower first: the cheaper and more basic check
        if labels_must_differ(backbone):
            check_distinct_labels(backbone, chain, steps=self.config.text != "zero_shot")
        if self.config.text == "zero_shot":
            per_label = encode_label_texts(backbone, chain.zero_shot)  # [C, E]
            features = per_label.unsqueeze(0).expand(chain.num_steps, -1, -1)
        else:
            prefix = self.config.text_prefix.strip()
            steps = []
            for step in chain.steps:
                texts = tuple(
                    tuple(f"{prefix} {t}" if prefix else t for t in label_texts)
                    for label_texts in step.texts
                )
                steps.append(encode_label_texts(backbone, texts))
            features = torch.stack(steps)  # [K, C, E]
        self.text_features = features.unsqueeze(0).contiguous()
        self.bound_labels = chain.labels

    def encode_images(self, backbone: Backbone, pixels: Tensor) -> Tensor:
        """Image features ``[B, E]`` (not normalised) through the prompted ViT."""
        return self.visual.encode(backbone, pixels)

    def encode_text(self, backbone: Backbone, image_features: Tensor | None) -> Tensor:
        """The cached fixed text features ``[1, K, C, E]``, L2-normalised."""
        if self.text_features is None:
            raise ConfigError("the tuner is not bound to a prompt chain; call bind() first")
        return self.text_features
