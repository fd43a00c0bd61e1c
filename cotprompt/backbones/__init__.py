"""Backbones: frozen vision-language models that prompts are tuned for."""

from cotprompt.backbones.base import Backbone
from cotprompt.backbones.open_clip_backbone import (
    TINY_MODEL,
    OpenCLIPBackbone,
    OpenCLIPBackboneConfig,
)

__all__ = ["TINY_MODEL", "Backbone", "OpenCLIPBackbone", "OpenCLIPBackboneConfig"]
