"""``CoTPipeline`` and what builds it: the config model and files, the method presets, artifact
(de)serialisation and the inputs ``predict`` takes."""

from cotprompt.pipeline.config import KINDS, METHODS, PipelineConfig
from cotprompt.pipeline.core import CoTPipeline
from cotprompt.pipeline.predictions import Prediction

__all__ = ["KINDS", "METHODS", "CoTPipeline", "PipelineConfig", "Prediction"]
