"""cotprompt: chain-of-thought prompt tuning (CoT-PT, CoOp, CoCoOp) for CLIP-style models."""

import cotprompt.tasks  # noqa: F401  (registers the task heads CoTPipeline.fit/evaluate find)
from cotprompt._version import __version__
from cotprompt.pipeline import CoTPipeline, PipelineConfig, Prediction
from cotprompt.plugins.hookspecs import hookimpl
from cotprompt.protocols import Aggregator, PromptGenerator, PromptTuner
from cotprompt.training.config import TrainingConfig
from cotprompt.types import PromptChain, PromptStep, Task

__all__ = [
    "Aggregator",
    "CoTPipeline",
    "PipelineConfig",
    "Prediction",
    "PromptChain",
    "PromptGenerator",
    "PromptStep",
    "PromptTuner",
    "Task",
    "TrainingConfig",
    "__version__",
    "hookimpl",
]
