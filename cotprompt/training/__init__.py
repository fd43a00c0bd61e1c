"""Training: options, loop, checkpoints."""

from cotprompt.training.config import TrainingConfig
from cotprompt.training.trainer import StepInfo, Trainer, TrainingResult

__all__ = ["StepInfo", "Trainer", "TrainingConfig", "TrainingResult"]
