"""Prompt tuners: the learnable parts of a pipeline."""

from cotprompt.tuners.cocoop import CoCoOpConfig, CoCoOpTuner
from cotprompt.tuners.context_tuner import ContextPromptTuner, ContextTunerConfig
from cotprompt.tuners.coop import CoOpConfig, CoOpTuner
from cotprompt.tuners.cotpt import CoTPTConfig, CoTPTTuner

__all__ = [
    "CoCoOpConfig",
    "CoCoOpTuner",
    "CoOpConfig",
    "CoOpTuner",
    "CoTPTConfig",
    "CoTPTTuner",
    "ContextPromptTuner",
    "ContextTunerConfig",
]
