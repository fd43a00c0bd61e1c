"""``CoTPipeline`` and what builds it: the config model and files, the method presets, artifact
(de)serialisation, the inputs ``predict`` takes, and what the learned context means
(``nearest_words``)."""

from cotprompt.pipeline.config import KINDS, METHODS, PipelineConfig
from cotprompt.pipeline.core import CoTPipeline
from cotprompt.pipeline.interpret import PromptInterpretation, learned_context, nearest_words
from cotprompt.pipeline.predictions import Prediction

__all__ = [
    "KINDS",
    "METHODS",
    "CoTPipeline",
    "PipelineConfig",
    "Prediction",
    "PromptInterpretation",
    "learned_context",
    "nearest_words",
]
