"""Backbones: frozen vision-language models that prompts are tuned for."""

from cotprompt.backbones.base import Backbone
from cotprompt.backbones.open_clip_backbone import (
    TINY_DEMO_MODEL,
    TINY_MODEL,
    TINY_MODELS,
    OpenCLIPBackbone,
    OpenCLIPBackboneConfig,
)

__all__ = [
    "TINY_DEMO_MODEL",
    "TINY_MODEL",
    "TINY_MODELS",
    "Backbone",
    "OpenCLIPBackbone",
    "OpenCLIPBackboneConfig",
]
