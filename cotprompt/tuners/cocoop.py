"""Tuner ``cocoop``: image-conditioned context.

Zhou et al., "Conditional Prompt Learning for Vision-Language Models", CVPR 2022.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from cotprompt.tuners.context_tuner import ContextPromptTuner, ContextTunerConfig


class CoCoOpConfig(ContextTunerConfig):
    """CoCoOp: a Linear-ReLU-Linear meta-net adds an image-dependent bias to every context vector.
    Defaults follow CoCoOp's published config (4 vectors initialised from ``"a photo of a"``)."""

    ctx_init: str | None = "a photo of a"
    meta_net: Literal[True] = True
    chain: Literal["none"] = "none"


class CoCoOpTuner(ContextPromptTuner):
    """CoCoOp. With a one-step chain whose texts are ``"{class}."`` it is exactly CoCoOp."""

    name: ClassVar[str] = "cocoop"
    Config: ClassVar[type[CoCoOpConfig]] = CoCoOpConfig
