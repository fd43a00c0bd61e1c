"""Tuner ``coop``: learnable context vectors (Zhou et al., "Learning to Prompt", IJCV 2022)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from cotprompt.tuners.context_tuner import ContextPromptTuner, ContextTunerConfig


class CoOpConfig(ContextTunerConfig):
    """CoOp: no meta-net. Defaults follow CoOp's published configs (16 random context vectors,
    unified, class token at the end)."""

    meta_net: Literal[False] = False
    chain: Literal["none"] = "none"
    n_ctx: int | None = Field(default=None, ge=1, le=512)


class CoOpTuner(ContextPromptTuner):
    """CoOp. With a one-step chain whose texts are ``"{class}."`` it is exactly CoOp."""

    name: ClassVar[str] = "coop"
    Config: ClassVar[type[CoOpConfig]] = CoOpConfig
