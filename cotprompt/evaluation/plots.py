"""PNG plots of an evaluation and of a training run, drawn with matplotlib (an optional
dependency: ``pip install ".[plots]"`` in a checkout, or ``pip install matplotlib``).

- :func:`plot_confusion_matrix`: the confusion matrix (rows true, columns predicted), with the
  count in each cell when there are few classes;
- :func:`plot_per_class_accuracy`: one horizontal bar per class, sorted by accuracy;
- :func:`plot_training_curves`: loss and learning rate per epoch, and the validation metrics
  (``val_*`` keys of the history) when there are any.

The figures use matplotlib's Agg backend and default style whatever the user's configuration, and
the PNG files carry no software version or time, so the same inputs give the same bytes.
:mod:`cotprompt.experiments.plots` draws with the same helpers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from cotprompt.errors import ConfigError, DataError
from cotprompt.evaluation.metrics import EvaluationResult
from cotprompt.io import atomic_path

__all__ = [
    "DPI",
    "MAX_ANNOTATED_CLASSES",
    "new_figure",
    "plot_confusion_matrix",
    "plot_per_class_accuracy",
    "plot_training_curves",
    "require_matplotlib",
    "save_png",
]

#: Resolution of the PNG files.
DPI = 100
#: Up to this many classes, each cell of a confusion matrix shows its count.
MAX_ANNOTATED_CLASSES = 20
_PNG_METADATA: dict[str, Any] = {"Software": None}


def require_matplotlib() -> ModuleType:
    """The ``matplotlib`` module.

    Raises:
        ConfigError: matplotlib is not installed (the message says how to install it).
    """
    try:
        import matplotlib
    except ImportError as exc:
        raise ConfigError('plots need matplotlib, which is not installed: pip install '
                          '"matplotlib>=3.7" (the extra "plots")') from exc
    return matplotlib


def new_figure(width: float, height: float) -> Any:
    """A matplotlib ``Figure`` on an Agg canvas (no pyplot, no global state)."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Any, path: str | Path) -> Path:
    """Write ``figure`` to ``path`` as a PNG without software or time metadata (atomically)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI, metadata=_PNG_METADATA)
    return path


def plot_confusion_matrix(result_or_matrix: EvaluationResult | Any,
                          class_names: Sequence[str], path: str | Path) -> Path:
    """Draw a confusion matrix to ``path``.

    Args:
        result_or_matrix: An :class:`EvaluationResult` with its ``confusion`` (as made by
            :meth:`EvaluationResult.from_predictions`) or a ``[C, C]`` count matrix, e.g. from
            :func:`cotprompt.evaluation.confusion_matrix`.
        class_names: The C class names, in index order.
        path: The PNG file.

    Returns:
        ``path``.

    Raises:
        ConfigError: matplotlib is not installed.
        DataError: No confusion matrix, or one whose shape is not ``[C, C]``.
    """
    require_matplotlib()
    if isinstance(result_or_matrix, EvaluationResult):
        if result_or_matrix.confusion is None:
            raise DataError("the evaluation result has no confusion matrix (it was not computed "
                            "from predictions)")
        matrix = np.asarray(result_or_matrix.confusion)
    else:
        matrix = np.asarray(result_or_matrix)
    names = [str(name) for name in class_names]
    size = len(names)
    if matrix.shape != (size, size):
        raise DataError(f"the confusion matrix must be [{size}, {size}] for {size} class names, "
                        f"got shape {list(matrix.shape)}")
    side = min(4.0 + 0.35 * size, 24.0)
    figure = new_figure(side + 1.5, side)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues", interpolation="nearest", vmin=0)
    figure.colorbar(image, ax=axes, shrink=0.8, label="images")
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title("confusion matrix")
    if size <= 60:
        axes.set_xticks(range(size), names, rotation=90, fontsize="small")
        axes.set_yticks(range(size), names, fontsize="small")
    if size <= MAX_ANNOTATED_CLASSES:
        limit = matrix.max() / 2 if matrix.size else 0
        for (i, j), count in np.ndenumerate(matrix):
            axes.text(j, i, str(int(count)), ha="center", va="center", fontsize="small",
                      color="white" if count > limit else "black")
    return save_png(figure, path)


def plot_per_class_accuracy(result: EvaluationResult, path: str | Path) -> Path:
    """Draw each class's accuracy to ``path``: horizontal bars, the lowest at the bottom, with
    the mean per-class accuracy as a dashed line. Classes without samples are left out.

    Raises:
        ConfigError: matplotlib is not installed.
        DataError: No class has samples.
    """
    require_matplotlib()
    present = sorted(((acc, name) for name, acc in result.per_class.items() if acc is not None),
                     key=lambda item: (item[0], item[1]))
    if not present:
        raise DataError("no class has samples: there is no per-class accuracy to plot")
    figure = new_figure(7.0, min(2.0 + 0.25 * len(present), 40.0))
    axes = figure.add_subplot()
    axes.barh(range(len(present)), [acc for acc, _ in present], color="tab:blue")
    axes.set_yticks(range(len(present)), [name for _, name in present],
                    fontsize="small" if len(present) <= 100 else "xx-small")
    axes.axvline(result.mean_per_class_accuracy, color="tab:red", linestyle="--",
                 label=f"mean per class {result.mean_per_class_accuracy:.2f}%")
    axes.set_xlim(0, 100)
    axes.set_ylim(-0.5, len(present) - 0.5)
    axes.set_xlabel("accuracy %")
    axes.set_title("per-class accuracy")
    axes.legend(loc="lower right", fontsize="small")
    return save_png(figure, path)


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for index, record in enumerate(history):
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            xs.append(float(record.get("epoch", index + 1)))
            ys.append(float(value))
    return xs, ys


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Draw a training run's per-epoch records to ``path``: the loss, the learning rate and,
    when the records have ``val_*`` numbers, the validation metrics (one panel each).

    Args:
        history: ``TrainingResult.history`` (one dict per epoch: ``epoch``, ``loss``, ``lr``,
            and validation metrics).
        path: The PNG file.

    Raises:
        ConfigError: matplotlib is not installed.
        DataError: An empty history.
    """
    require_matplotlib()
    if not history:
        raise DataError("the training history is empty: there are no curves to plot")
    val_keys = sorted({key for record in history for key in record
                       if key.startswith("val_") and _series(history, key)[0]})
    panels = [("loss", ["loss"]), ("learning rate", ["lr"])]
    if val_keys:
        panels.append(("validation", val_keys))
    figure = new_figure(4.0 * len(panels) + 0.5, 3.5)
    for column, (title, keys) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), column + 1)
        for key in keys:
            xs, ys = _series(history, key)
            axes.plot(xs, ys, marker="o", markersize=3, label=key)
        axes.set_xlabel("epoch")
        axes.set_title(title)
        axes.grid(True, alpha=0.3)
        if len(keys) > 1 or title == "validation":
            axes.legend(fontsize="small")
    return save_png(figure, path)
