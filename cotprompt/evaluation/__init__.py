"""Evaluation metrics for few-shot and base-to-new classification."""

from __future__ import annotations

from cotprompt.evaluation.metrics import (
    EvaluationResult,
    accuracy,
    confusion_matrix,
    harmonic_mean,
    mean_per_class_accuracy,
    per_class_accuracy,
)

__all__ = [
    "EvaluationResult",
    "accuracy",
    "confusion_matrix",
    "harmonic_mean",
    "mean_per_class_accuracy",
    "per_class_accuracy",
]
