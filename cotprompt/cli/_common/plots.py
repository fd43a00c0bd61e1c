"""PNG plots written by ``cotprompt train --plots`` and ``cotprompt eval --plots DIR`` (drawn by
:mod:`cotprompt.evaluation.plots`; matplotlib is imported only when they are asked for)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cotprompt.evaluation import EvaluationResult

__all__ = ["check_plots", "write_plots"]

logger = logging.getLogger("cotprompt.cli")  # the command line's logger


def check_plots() -> None:
    """Fail early (a ConfigError saying how to install it) when matplotlib is missing."""
    from cotprompt.evaluation.plots import require_matplotlib

    require_matplotlib()


def write_plots(folder: str | Path, results: Mapping[str, EvaluationResult | None],
                history: Sequence[Mapping[str, Any]] | None = None) -> list[Path]:
    """Write into ``folder`` (created): ``training_curves.png`` when there is a ``history``,
    and ``<name>_confusion_matrix.png`` and ``<name>_per_class_accuracy.png`` for each
    evaluation in ``results`` (``None`` ones are skipped). Returns the files written."""
    from cotprompt.evaluation.plots import (
        plot_confusion_matrix,
        plot_per_class_accuracy,
        plot_training_curves,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if history:
        written.append(plot_training_curves(history, folder / "training_curves.png"))
    for name, result in results.items():
        if result is None:
            continue
        written.append(plot_confusion_matrix(result, list(result.per_class),
                                             folder / f"{name}_confusion_matrix.png"))
        written.append(plot_per_class_accuracy(result, folder / f"{name}_per_class_accuracy.png"))
    for path in written:
        logger.info("wrote %s", path)
    return written
