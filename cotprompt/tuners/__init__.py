"""Prompt tuners: the learnable parts of a pipeline."""

from cotprompt.tuners.cocoop import CoCoOpConfig, CoCoOpTuner
from cotprompt.tuners.context_tuner import ContextPromptTuner, ContextTunerConfig
from cotprompt.tuners.coop import CoOpConfig, CoOpTuner
from cotprompt.tuners.cotpt import CoTPTConfig, CoTPTTuner
from cotprompt.tuners.multimodal import MultimodalConfig, MultimodalTuner
from cotprompt.tuners.visual_prompts import VisualPromptConfig, VisualPrompts
from cotprompt.tuners.vpt import VPTConfig, VPTTuner

__all__ = [
    "CoCoOpConfig",
    "CoCoOpTuner",
    "CoOpConfig",
    "CoOpTuner",
    "CoTPTConfig",
    "CoTPTTuner",
    "ContextPromptTuner",
    "ContextTunerConfig",
    "MultimodalConfig",
    "MultimodalTuner",
    "VPTConfig",
    "VPTTuner",
    "VisualPromptConfig",
    "VisualPrompts",
]
