"""Tuner ``cotpt``: chain-of-thought prompt tuning (Ge et al., arXiv 2304.07919).

One learnable context and one meta-net per chain step; the meta-nets are chained, so step k is
conditioned on the image and on step k-1's state. With a one-step chain and ``chain="none"`` it
is exactly CoCoOp.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from cotprompt.tuners.context_tuner import ContextPromptTuner, ContextTunerConfig


class CoTPTConfig(ContextTunerConfig):
    """CoT-PT defaults: CoCoOp's per-step setup (4 vectors from ``"a photo of a"``) and additive
    meta-net chaining (a reconstruction: the paper's code is not published)."""

    ctx_init: str | None = "a photo of a"
    meta_net: Literal[True] = True
    chain: Literal["none", "additive"] = "additive"


class CoTPTTuner(ContextPromptTuner):
    """CoT-PT prompt chain tuner."""

    name: ClassVar[str] = "cotpt"
    Config: ClassVar[type[CoTPTConfig]] = CoTPTConfig
