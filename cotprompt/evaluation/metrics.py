"""Classification metrics, reported in percent as CoOp / CoCoOp do.

Predictions and labels may be torch tensors, numpy arrays or lists. Predictions are class indices
``[N]`` or scores / logits ``[N, C]`` (the arg-max is taken); labels are class indices ``[N]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cotprompt.errors import DataError


def _as_indices(values: Any, what: str) -> np.ndarray:
    """``values`` as a 1-D int64 numpy array; 2-D scores are reduced with arg-max."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch here
        values = values.detach().cpu()
        if values.is_floating_point():  # bfloat16 / float16 scores have no numpy dtype
            values = values.float()
        values = values.numpy()
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} must be a sequence of class indices: {exc}") from exc
    if array.ndim == 2 and what == "preds":
        if array.shape[1] == 0:
            raise DataError(f"{what} scores have shape {array.shape}: no classes")
        array = array.argmax(axis=1)
    if array.ndim != 1:
        raise DataError(f"{what} must be a 1-D sequence of class indices, got shape {array.shape}")
    integral = array.dtype.kind in "iub" or (
        array.dtype.kind == "f" and bool(np.all(np.isfinite(array) & (array == np.round(array))))
    )
    if array.size and not integral:
        raise DataError(f"{what} must hold integer class indices, got dtype {array.dtype}")
    return array.astype(np.int64)


def _pair(preds: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _as_indices(preds, "preds")
    y = _as_indices(labels, "labels")
    if p.shape[0] != y.shape[0]:
        raise DataError(f"preds and labels differ in length: {p.shape[0]} vs {y.shape[0]}")
    if p.shape[0] == 0:
        raise DataError("cannot compute a metric on zero samples")
    return p, y


def _check_range(values: np.ndarray, num_classes: int, what: str) -> None:
    if num_classes < 1:
        raise DataError(f"num_classes must be >= 1, got {num_classes}")
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        raise DataError(f"{what} outside 0..{num_classes - 1}: {sorted(set(bad.tolist()))[:10]}")


def accuracy(preds: Any, labels: Any) -> float:
    """Top-1 accuracy in percent.

    Args:
        preds: Predicted indices ``[N]`` or scores ``[N, C]``.
        labels: True indices ``[N]``.

    Returns:
        ``100 * correct / N``.

    Raises:
        DataError: Empty inputs, mismatched lengths or non-integer indices.
    """
    p, y = _pair(preds, labels)
    return float((p == y).mean() * 100.0)


def confusion_matrix(preds: Any, labels: Any, num_classes: int) -> np.ndarray:
    """Counts of (true, predicted) pairs.

    Args:
        preds: Predicted indices ``[N]`` or scores ``[N, C]``.
        labels: True indices ``[N]``.
        num_classes: C.

    Returns:
        An int64 array ``[C, C]``; ``m[i, j]`` = samples of class ``i`` predicted as ``j``.

    Raises:
        DataError: As :func:`accuracy`, or an index outside ``0..C-1``.
    """
    p, y = _pair(preds, labels)
    _check_range(y, num_classes, "labels")
    _check_range(p, num_classes, "preds")
    flat = np.bincount(y * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def per_class_accuracy(preds: Any, labels: Any, num_classes: int) -> list[float | None]:
    """Accuracy (percent) of each class; ``None`` for classes without samples.

    Args:
        preds: Predicted indices ``[N]`` or scores ``[N, C]``.
        labels: True indices ``[N]``.
        num_classes: C.

    Returns:
        A list of length C.

    Raises:
        DataError: As :func:`confusion_matrix`.
    """
    matrix = confusion_matrix(preds, labels, num_classes)
    totals = matrix.sum(axis=1)
    return [
        float(matrix[c, c] * 100.0 / totals[c]) if totals[c] else None for c in range(num_classes)
    ]


def mean_per_class_accuracy(preds: Any, labels: Any, num_classes: int | None = None) -> float:
    """Mean of the per-class accuracies (percent) over the classes that have samples.

    Args:
        preds: Predicted indices ``[N]`` or scores ``[N, C]``.
        labels: True indices ``[N]``.
        num_classes: C; default: one more than the largest index in ``preds`` and ``labels``.

    Returns:
        The balanced accuracy in percent.
    """
    if num_classes is None:
        p, y = _pair(preds, labels)
        num_classes = int(max(p.max(), y.max())) + 1
        preds, labels = p, y
    values = [a for a in per_class_accuracy(preds, labels, num_classes) if a is not None]
    return float(np.mean(values))


def harmonic_mean(base: float, new: float) -> float:
    """Harmonic mean of base and new accuracy, CoCoOp's H metric; 0 if either is 0.

    Raises:
        DataError: A negative accuracy.
    """
    if base < 0 or new < 0:
        raise DataError(f"accuracies must be >= 0, got base={base}, new={new}")
    if base == 0 or new == 0:
        return 0.0
    return 2.0 * base * new / (base + new)


@dataclass(frozen=True)
class EvaluationResult:
    """Summary of a classification evaluation (accuracies in percent).

    Args:
        accuracy: Top-1 accuracy.
        mean_per_class_accuracy: Mean accuracy over classes that have samples.
        per_class: ``{class_name: accuracy}``; ``None`` for classes without samples.
        num_samples: N.
        confusion: The confusion matrix ``[C, C]`` (rows true, columns predicted; see
            :func:`confusion_matrix`) when computed from predictions, else ``None``; not part of
            :meth:`to_dict`.
    """

    accuracy: float
    mean_per_class_accuracy: float
    per_class: dict[str, float | None] = field(default_factory=dict)
    num_samples: int = 0
    confusion: np.ndarray | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_predictions(
        cls, preds: Any, labels: Any, class_names: Sequence[str]
    ) -> EvaluationResult:
        """Compute every field from predictions ``[N]`` (or scores ``[N, C]``) and labels ``[N]``.

        Raises:
            DataError: As :func:`confusion_matrix` with ``C = len(class_names)``.
        """
        p, y = _pair(preds, labels)
        per_class = per_class_accuracy(p, y, len(class_names))
        present = [a for a in per_class if a is not None]
        confusion = confusion_matrix(p, y, len(class_names))
        confusion.setflags(write=False)
        return cls(
            accuracy=accuracy(p, y),
            mean_per_class_accuracy=float(np.mean(present)),
            per_class=dict(zip(class_names, per_class, strict=True)),
            num_samples=int(p.shape[0]),
            confusion=confusion,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dictionary of the fields (without :attr:`confusion`)."""
        return {"accuracy": self.accuracy,
                "mean_per_class_accuracy": self.mean_per_class_accuracy,
                "per_class": dict(self.per_class),
                "num_samples": self.num_samples}

    def metrics(self) -> dict[str, float]:
        """What an artifact records for an evaluated split (the model card's figures)."""
        return {"accuracy": self.accuracy,
                "mean_per_class_accuracy": self.mean_per_class_accuracy}
