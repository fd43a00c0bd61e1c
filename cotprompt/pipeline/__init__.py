"""``CoTPipeline`` and what builds it: the config model and files, the method presets, artifact
(de)serialisation and the inputs ``predict`` takes."""

from cotprompt.pipeline.config import KINDS, METHODS, PipelineConfig, Prediction
from cotprompt.pipeline.core import CoTPipeline

__all__ = ["KINDS", "METHODS", "CoTPipeline", "PipelineConfig", "Prediction"]
