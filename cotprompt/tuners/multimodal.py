"""Tuner ``multimodal``: text prompts and visual prompts tuned together (in the spirit of MaPLe).

A text tuner (``coop``, ``cocoop``, ``cotpt`` or any registered tuner that leaves the image
encoder frozen) supplies the step text features; visual prompt tokens tune the ViT image encoder
(:mod:`cotprompt.tuners.visual_prompts`). With ``couple: false`` the two sides are independent
(IVLP); with ``couple: true`` the visual tokens of every prompted layer are a learned linear
projection ``Linear(W, D)`` of the text context vectors, as MaPLe's V-L coupling function, so that
the text context and the projections are the only parameters of the visual side.

The coupled text context is the text tuner's unified context of all K steps, concatenated:
``[K * n_ctx, W]`` (MaPLe: K = 1). The visual prompts see the context vectors without the
meta-net's image-conditioned shift (that shift depends on the image features the visual prompts
produce). A reconstruction choice, documented in ``docs/visual-prompts.md``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from cotprompt.backbones.base import Backbone
from cotprompt.config import ComponentConfig, ComponentSpec
from cotprompt.errors import ConfigError
from cotprompt.protocols import PromptTuner
from cotprompt.tuners.visual_prompts import VisualPromptConfig, VisualPrompts
from cotprompt.types import PromptChain

logger = logging.getLogger(__name__)


class TextTunerSpec(ComponentSpec):
    """The text tuner by registered name (default ``coop``) and its options."""

    name: str = "coop"


class MultimodalConfig(ComponentConfig):
    """Options of ``multimodal``.

    Args:
        text: The text tuner by registered name and options, e.g.
            ``{"name": "cocoop", "config": {"ctx_init": "a photo of a"}}``. A saved artifact
            records the text tuner's full options.
        visual: The visual prompt options (see
            :class:`~cotprompt.tuners.visual_prompts.VisualPromptConfig`).
        couple: Make the visual prompts a learned projection of the text context (MaPLe); needs
            a text tuner with unified context (an ``nn.ParameterList`` ``ctx`` of ``[n_ctx, W]``).
    """

    text: TextTunerSpec = Field(default_factory=TextTunerSpec)
    visual: VisualPromptConfig = Field(default_factory=VisualPromptConfig)
    couple: bool = False


class MultimodalTuner(nn.Module):
    """Text tuner + visual prompt tokens in one tuner.

    Parameters: ``text.*`` (the text tuner's) and ``visual.prompts`` ``[depth, n, D]`` or, when
    coupled, ``visual.coupling.<layer>.weight`` ``[D, W]`` / ``.bias`` ``[D]``.

    Raises:
        ConfigError: the text tuner is unknown, is not an ``nn.Module``, or tunes the image
            encoder itself.
    """

    name: ClassVar[str] = "multimodal"
    Config: ClassVar[type[MultimodalConfig]] = MultimodalConfig

    def __init__(self, config: MultimodalConfig | None = None) -> None:
        super().__init__()
        from cotprompt.plugins.registry import get_registry

        config = config or self.Config()
        text: PromptTuner = get_registry().create("tuner", config.text.name, config.text.config)
        if not isinstance(text, nn.Module):
            raise ConfigError(
                f"multimodal: the text tuner {config.text.name!r} is not a torch.nn.Module, so its "
                "parameters could not be trained or saved"
            )
        if bool(getattr(text, "tunes_image_encoder", False)):
            raise ConfigError(
                f"multimodal: the text tuner {config.text.name!r} tunes the image encoder itself; "
                "choose a text-side tuner (coop, cocoop, cotpt) and give the visual prompts under "
                "`visual`"
            )
        text_config: Any = getattr(text, "config", None)
        recorded = (
            text_config.model_dump(mode="json")
            if hasattr(text_config, "model_dump")
            else dict(config.text.config)
        )
        self.config = config.model_copy(
            update={"text": TextTunerSpec(name=config.text.name, config=recorded)}
        )
        self.text = text
        self.visual = VisualPrompts(config.visual, coupled=config.couple)

    @property
    def image_conditioned(self) -> bool:
        """The text tuner's: True when its prompts depend on the image (cocoop, cotpt)."""
        return bool(self.text.image_conditioned)

    @property
    def tunes_image_encoder(self) -> bool:
        """True unless the visual prompts are disabled or have zero tokens."""
        return self.visual.active

    def bind(self, backbone: Backbone, chain: PromptChain) -> None:
        """Bind the text tuner, then create (or check) the visual prompts.

        Raises:
            ConfigError: from the text tuner; a non-ViT image tower; ``depth`` beyond the ViT's
                layers; coupling with class-specific or missing text context.
        """
        self.text.bind(backbone, chain)
        if self.config.couple and self.config.visual.enabled:
            context = self.text_context()
            self.visual.bind(backbone, text_tokens=context.shape[0], text_width=context.shape[1])
        else:
            self.visual.bind(backbone)

    def text_context(self) -> Tensor:
        """The text tuner's context of all steps, ``[K * n_ctx, W]`` (gradients flow).

        Raises:
            ConfigError: the text tuner has no unified ``ctx`` parameter list.
        """
        ctx: Any = getattr(self.text, "ctx", None)
        if not isinstance(ctx, nn.ParameterList) or len(ctx) == 0:
            raise ConfigError(
                f"multimodal couple=true projects the text context to visual prompts, but the "
                f"text tuner {self.config.text.name!r} has no context vectors (`ctx`); use coop, "
                "cocoop or cotpt, or set couple=false"
            )
        if any(p.dim() != 2 for p in ctx):
            raise ConfigError(
                "multimodal couple=true needs unified text context ([n_ctx, W] shared by all "
                "labels); class_specific=true gives one context per label, which cannot become "
                "label-independent visual prompts. Set class_specific=false or couple=false"
            )
        return torch.cat(list(ctx), dim=0)

    def encode_images(self, backbone: Backbone, pixels: Tensor) -> Tensor:
        """Image features ``[B, E]`` (not normalised) through the prompted ViT."""
        coupled = self.config.couple and self.visual.active
        return self.visual.encode(backbone, pixels, self.text_context() if coupled else None)

    def encode_text(self, backbone: Backbone, image_features: Tensor | None) -> Tensor:
        """The text tuner's step features ``[B or 1, K, C, E]``, L2-normalised."""
        return self.text.encode_text(backbone, image_features)
