"""PNG plots of a report's tables, drawn with matplotlib (an optional dependency:
``pip install ".[plots]"`` in a checkout, or ``pip install matplotlib``).

- ``base2new.png``: Base, New and H bars per dataset (and the average), one bar per method;
- ``few_shot.png``: accuracy against the number of shots, one panel per dataset and one for the
  average, one line per method;
- ``domain_generalization.png`` and ``cross_dataset.png``: accuracy on the source, each target and
  the targets' average, one bar per method.

Only measured numbers are drawn (published ones are in the tables); error bars are the population
standard deviation over seeds. The figures use matplotlib's Agg backend and default style
whatever the user's configuration, and the PNG files carry no software version or time, so the
same tables give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cotprompt.evaluation.plots import DPI, new_figure, require_matplotlib, save_png
from cotprompt.experiments.tables import (
    BASE2NEW,
    CROSS_DATASET,
    DOMAIN_GENERALIZATION,
    FEW_SHOT,
    Cell,
    Row,
    Table,
    display_dataset,
)

__all__ = ["DPI", "require_matplotlib", "write_plots"]


def _new_figure(width: float, height: float) -> Any:
    return new_figure(width, height)


def _save(figure: Any, path: Path) -> None:
    save_png(figure, path)


def _methods(rows: Sequence[Row]) -> list[str]:
    found: list[str] = []
    for row in rows:
        if row.display[-1] not in found:
            found.append(row.display[-1])
    return found


def _value(cell: Cell | None) -> tuple[float, float]:
    if cell is None:
        return math.nan, math.nan
    return cell.mean, math.nan if cell.std is None else cell.std


def _bars(axes: Any, groups: list[str], methods: list[str],
          values: dict[tuple[str, str], Cell | None], colours: list[str]) -> None:
    """Grouped bars: one group per entry of ``groups``, one bar per method."""
    width = 0.8 / max(len(methods), 1)
    for i, method in enumerate(methods):
        points = [_value(values.get((group, method))) for group in groups]
        positions = [g + (i - (len(methods) - 1) / 2) * width for g in range(len(groups))]
        axes.bar(positions, [p[0] for p in points], width, yerr=[p[1] for p in points],
                 capsize=2, label=method, color=colours[i % len(colours)])
    axes.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    axes.set_ylabel("accuracy (%)")
    axes.grid(axis="y", alpha=0.3)


def _colours() -> list[str]:
    import matplotlib

    return list(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"])


def _base_to_new(table: Table) -> Any:
    rows = table.measured()
    methods = _methods(rows)
    groups = ["Average", *(display_dataset(d) for d in table.datasets)]
    figure = _new_figure(max(6.0, 0.35 * len(groups) * max(len(methods), 1) + 2), 9.0)
    axes = figure.subplots(3, 1, sharex=True)
    for index, (column, ax) in enumerate(zip(table.columns, axes, strict=True)):
        values = {("Average" if row.kind == "average" else row.display[0], row.display[-1]):
                  row.cells[index] for row in rows}
        _bars(ax, groups, methods, values, _colours())
        ax.set_title(column.header)
    axes[0].legend(loc="lower right", fontsize="small")
    figure.suptitle(table.title)
    return figure


def _transfer(table: Table) -> Any:
    rows = table.measured()
    methods = _methods(rows)
    groups = [c.header for c in table.columns]
    values = {(column.header, row.display[-1]): cell for row in rows
              for column, cell in zip(table.columns, row.cells, strict=True)}
    figure = _new_figure(max(6.0, 0.35 * len(groups) * max(len(methods), 1) + 2), 4.5)
    axes = figure.subplots()
    _bars(axes, groups, methods, values, _colours())
    axes.legend(loc="lower right", fontsize="small")
    axes.set_title(table.title)
    return figure


def _few_shot_panel(axes: Any, rows: list[Row], shots: list[int], methods: list[str]) -> None:
    """One panel: a line per trained method over the shots, a dashed level per zero-shot one."""
    colours = _colours()
    for i, method in enumerate(methods):
        row = next((r for r in rows if r.display[-1] == method), None)
        if row is None:
            continue
        colour = colours[i % len(colours)]
        points = [(k, *_value(c)) for k, c in zip(shots, row.cells, strict=True)
                  if c is not None and k > 0]
        if points:
            axes.errorbar([p[0] for p in points], [p[1] for p in points],
                          yerr=[p[2] for p in points], marker="o", capsize=2, label=method,
                          color=colour)
        zero = next((c for k, c in zip(shots, row.cells, strict=True) if k == 0 and c), None)
        if zero is not None:
            axes.axhline(zero.mean, linestyle="--", color=colour,
                         label=None if points else f"{method} (zero-shot)")


def _few_shot(table: Table) -> Any:
    rows = table.measured()
    methods = _methods(rows)
    panels = ["average", *table.datasets]
    columns = min(4, len(panels))
    lines = math.ceil(len(panels) / columns)
    figure = _new_figure(3.2 * columns + 0.5, 2.8 * lines + 0.6)
    grid = figure.subplots(lines, columns, squeeze=False)
    shots = [int(c.key) for c in table.columns]
    trained = [k for k in shots if k > 0]
    for index, panel in enumerate(panels):
        axes = grid[index // columns][index % columns]
        _few_shot_panel(axes, [r for r in rows if r.labels[0] == panel], shots, methods)
        if trained:
            axes.set_xscale("log", base=2)
            axes.set_xticks(trained, [str(k) for k in trained])
            axes.minorticks_off()
        axes.set_title(f"Average over {len(table.datasets)} datasets" if panel == "average"
                       else display_dataset(panel))
        axes.set_xlabel("shots per class")
        axes.set_ylabel("accuracy (%)")
        axes.grid(alpha=0.3)
    for index in range(len(panels), lines * columns):
        grid[index // columns][index % columns].set_visible(False)
    grid[0][0].legend(loc="lower right", fontsize="small")
    figure.suptitle(table.title)
    return figure


_DRAW = {BASE2NEW: _base_to_new, CROSS_DATASET: _transfer, DOMAIN_GENERALIZATION: _transfer,
         FEW_SHOT: _few_shot}


def write_plots(tables: Sequence[Table], folder: str | Path) -> list[Path]:
    """Draw each table and write ``<table name>.png`` into ``folder``; returns the paths.

    Raises:
        ConfigError: matplotlib is not installed.
    """
    require_matplotlib()
    from matplotlib.style import context

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with context("default"):
        for table in tables:
            draw = _DRAW.get(table.protocol)
            if draw is None or not table.measured():
                continue
            path = folder / f"{table.name}.png"
            _save(draw(table), path)
            written.append(path)
    return written
