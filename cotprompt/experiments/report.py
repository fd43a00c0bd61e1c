"""The report of a sweep: its ``results.json`` files aggregated over seeds into the papers' tables
(:mod:`cotprompt.experiments.tables`), written as Markdown, CSV and JSON, with PNG plots
(:mod:`cotprompt.experiments.plots`) on request.

    report = report_from_folder("runs/base2new")        # reads every results.json below it
    print(report.to_markdown())
    write_report(report, Path("runs/base2new/report"), plots=True)

Files written to the report folder: ``report.md`` (the tables, their notes and the sources of the
published numbers), ``report.csv`` (one line per cell: ``table, protocol, source_dataset, kind,
dataset, method, column, mean, std, n, seeds, datasets, of, source``) and ``report.json`` (the
same, nested by table, with the sources). Nothing in them depends on the time or the machine, so
the same results give the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotprompt.errors import ConfigError, DataError, one_line
from cotprompt.experiments.published import Source
from cotprompt.experiments.results import RESULTS_NAME, RunResult, read_result
from cotprompt.experiments.tables import METRICS, Cell, Row, Table, build_tables
from cotprompt.io import write_text_atomic

__all__ = [
    "FILE_NAMES",
    "FORMATS",
    "REPORT_FORMAT",
    "STD",
    "Report",
    "build_report",
    "load_results",
    "parse_formats",
    "report_from_folder",
    "write_report",
]

logger = logging.getLogger(__name__)

#: The table formats a report is written in.
FORMATS = ("md", "csv", "json")
#: Their file names in the report folder.
FILE_NAMES = {"md": "report.md", "csv": "report.csv", "json": "report.json"}
#: The version of ``report.json``.
REPORT_FORMAT = 1
#: Which standard deviation the report gives.
STD = ("population standard deviation over seeds (numpy.std, ddof=0), as the research code's "
       "parse_test_res.py reports it")
_CSV_COLUMNS = ("table", "protocol", "source_dataset", "kind", "dataset", "method", "column",
                "mean", "std", "n", "seeds", "datasets", "of", "source")


def _check_result(result: RunResult, path: Path) -> None:
    """Refuse a results file whose run or metrics have the wrong types (naming the file)."""
    run = result.run
    for name in ("protocol", "method", "dataset"):
        if not isinstance(getattr(run, name), str) or not getattr(run, name):
            raise DataError(f"{path}: run.{name} must be a non-empty string, "
                            f"got {getattr(run, name)!r}")
    for name in ("seed", "shots"):
        value = getattr(run, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataError(f"{path}: run.{name} must be an integer, got {value!r}")
    for key, entry in result.metrics.items():
        for metric in METRICS:
            value = entry.get(metric)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise DataError(f"{path}: metrics {key!r} has {metric}={value!r}, not a finite "
                                "number")


def load_results(output: str | Path) -> list[RunResult]:
    """Every ``results.json`` under a sweep's output folder (shards merged), sorted by run id.

    Raises:
        DataError: No such folder, no results in it, a file that is not a valid results file,
            or two files of the same run; the message names the file(s).
    """
    output = Path(output)
    if not output.is_dir():
        raise DataError(f"{output}: no such folder")
    paths = sorted(output.rglob(RESULTS_NAME))
    if not paths:
        raise DataError(f"no {RESULTS_NAME} under {output}: nothing to report")
    where: dict[str, Path] = {}
    results = []
    for path in paths:
        try:
            result = read_result(path)
        except DataError:
            raise
        except (ValueError, TypeError) as exc:  # RunResult.from_dict lets some through
            raise DataError(f"{path}: malformed results ({one_line(exc)})") from exc
        _check_result(result, path)
        run_id = result.run.run_id
        if run_id in where:
            raise DataError(f"{where[run_id]} and {path} are results of the same run {run_id}")
        where[run_id] = path
        results.append(result)
    return sorted(results, key=lambda r: r.run.run_id)


@dataclass(frozen=True)
class Report:
    """A sweep's tables, ready to be written.

    Attributes:
        tables: The tables, in protocol order.
        metric: The aggregated metric (``accuracy``).
        runs: How many runs the tables are made of.
    """

    tables: tuple[Table, ...]
    metric: str = "accuracy"
    runs: int = 0

    def sources(self) -> list[Source]:
        """The sources of the published rows, in order of first appearance (footnotes 1, 2...)."""
        found: list[Source] = []
        for table in self.tables:
            for row in table.rows:
                if row.published is not None and row.published.source not in found:
                    found.append(row.published.source)
        return found

    def to_markdown(self) -> str:
        """The report as Markdown: a heading per table, its notes, and the sources."""
        sources = {s.key: i for i, s in enumerate(self.sources(), start=1)}
        lines = ["# Sweep report", "",
                 f"{self.runs} runs. {self.metric.replace('_', ' ').capitalize()} in percent, "
                 f"mean ± std over seeds; std is the {STD}."]
        if sources:
            lines += ["", "Rows marked *published* are reference numbers of the papers, with "
                      "their source below; they were not measured by this sweep and are never "
                      "averaged with its rows."]
        if not self.tables:
            lines += ["", "No results of a known protocol."]
        for table in self.tables:
            lines += ["", f"## {table.title}", "", *_markdown_table(table, sources)]
        if sources:
            lines += ["", "## Sources of the published numbers", ""]
            for source in self.sources():
                also = f"; also listed at {', '.join(source.also_at)}" if source.also_at else ""
                lines.append(f"{sources[source.key]}. {source.origin}. Read at {source.read_at}"
                             f"{also}. {source.note[:1].upper()}{source.note[1:]}.")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """The report as CSV, one line per cell (see the module's documentation)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(_CSV_COLUMNS)
        for table in self.tables:
            has_dataset = "dataset" in table.label_columns
            for row in table.rows:
                labels = dict(zip(table.label_columns, row.labels, strict=True))
                for column, cell in zip(table.columns, row.cells, strict=True):
                    if cell is None:
                        continue
                    writer.writerow((
                        table.name, table.protocol, table.source_dataset or "", row.kind,
                        labels["dataset"] if has_dataset else column.key, labels["method"],
                        column.key, repr(cell.mean), "" if cell.std is None else repr(cell.std),
                        len(cell.seeds) if cell.seeds else "",
                        " ".join(str(s) for s in cell.seeds),
                        "" if cell.datasets is None else cell.datasets,
                        "" if cell.of is None else cell.of,
                        row.published.source.key if row.published else ""))
        return buffer.getvalue()

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-serialisable dictionary."""
        return {"format": REPORT_FORMAT, "metric": self.metric, "std": STD, "runs": self.runs,
                "tables": [_table_json(t) for t in self.tables],
                "sources": [s.to_dict() for s in self.sources()]}


def _table_json(table: Table) -> dict[str, Any]:
    rows = []
    for row in table.rows:
        entry: dict[str, Any] = {
            "kind": row.kind, "labels": dict(zip(table.label_columns, row.labels, strict=True)),
            "cells": {c.key: (None if cell is None else cell.to_dict())
                      for c, cell in zip(table.columns, row.cells, strict=True)}}
        if row.published is not None:
            entry["published"] = row.published.to_dict()
        rows.append(entry)
    return {"name": table.name, "protocol": table.protocol, "title": table.title,
            "source_dataset": table.source_dataset, "datasets": list(table.datasets),
            "label_columns": list(table.label_columns),
            "columns": [{"key": c.key, "header": c.header} for c in table.columns],
            "rows": rows, "notes": list(table.notes)}


def _partial(cell: Cell | None, expected: int) -> bool:
    """A cell over fewer seeds than the table's others (zero-shot cells have one run)."""
    return cell is not None and cell.std is not None and 0 < len(cell.seeds) < expected


def _expected_seeds(table: Table) -> int:
    return max((len(c.seeds) for r in table.rows for c in r.cells
                if c is not None and c.std is not None), default=0)


def _format_cell(cell: Cell | None, expected: int) -> str:
    if cell is None:
        return "–"
    text = f"{cell.mean:.2f}"
    if cell.std is not None:
        text += f" ± {cell.std:.2f}"
    if _partial(cell, expected):
        text += f" (n={len(cell.seeds)})"
    if cell.datasets is not None and cell.of is not None and cell.datasets < cell.of:
        text += f" ({cell.datasets}/{cell.of})"
    return text


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _label_text(row: Row, sources: dict[str, int]) -> list[str]:
    texts = [_escape(t) for t in row.display]
    if row.kind == "published" and row.published is not None:
        texts[-1] = f"*{texts[-1]}* [{sources[row.published.source.key]}]"
    return texts


def _markdown_table(table: Table, sources: dict[str, int]) -> list[str]:
    expected = _expected_seeds(table)
    headers = [c.capitalize() for c in table.label_columns] + [c.header for c in table.columns]
    align = [":--"] * len(table.label_columns) + ["--:"] * len(table.columns)
    lines = ["| " + " | ".join(_escape(h) for h in headers) + " |", "|" + "|".join(align) + "|"]
    for row in table.rows:
        cells = [_format_cell(c, expected) for c in row.cells]
        lines.append("| " + " | ".join(_label_text(row, sources) + cells) + " |")
    notes = list(table.notes)
    if any(c is not None and c.std is None and c.seeds for r in table.rows for c in r.cells):
        notes.append("A zero-shot method (0 shots) is one deterministic run: no ± std.")
    if any(_partial(c, expected) for r in table.rows for c in r.cells):
        notes.append(f"(n=k): a cell over k of the {expected} seeds (a partial sweep).")
    if any(c is not None and c.datasets is not None and c.of is not None and c.datasets < c.of
           for r in table.rows for c in r.cells):
        notes.append("(k/N): an average over k of the table's N datasets (the others are "
                     "missing).")
    return [*lines, "", *notes] if notes else lines


def build_report(results: Sequence[RunResult], *, metric: str = "accuracy",
                 published: bool = True) -> Report:
    """Aggregate finished runs into a :class:`Report` (see
    :func:`cotprompt.experiments.tables.build_tables`)."""
    tables = build_tables(results, metric=metric, published=published)
    return Report(tables=tuple(tables), metric=metric, runs=len(results))


def report_from_folder(output: str | Path, *, metric: str = "accuracy",
                       published: bool = True) -> Report:
    """:func:`load_results` of a sweep's output folder, then :func:`build_report`."""
    return build_report(load_results(output), metric=metric, published=published)


def parse_formats(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"md,csv"`` (or a list) -> ``("md", "csv")``, in :data:`FORMATS` order.

    Raises:
        ConfigError: An unknown or no format.
    """
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    unknown = sorted(set(names) - set(FORMATS))
    if unknown or not names:
        raise ConfigError(f"report formats are {', '.join(FORMATS)} (comma-separated), got "
                          f"{','.join(names) if names else 'none'}")
    return tuple(f for f in FORMATS if f in names)


def write_report(report: Report, folder: str | Path, *, formats: Iterable[str] = FORMATS,
                 plots: bool = False) -> list[Path]:
    """Write the report's files (and PNG plots with ``plots``) into ``folder``; returns their
    paths. Each file is written atomically; files of other formats already there are left.

    Raises:
        ConfigError: An unknown format, or ``plots`` without matplotlib.
    """
    chosen = parse_formats(formats)
    folder = Path(folder)
    if plots:  # fail before writing anything when matplotlib is missing
        from cotprompt.experiments.plots import require_matplotlib

        require_matplotlib()
    folder.mkdir(parents=True, exist_ok=True)
    texts = {"md": report.to_markdown, "csv": report.to_csv,
             "json": lambda: json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n"}
    written = []
    for name in chosen:
        path = folder / FILE_NAMES[name]
        write_text_atomic(path, texts[name]())
        written.append(path)
    if plots:
        from cotprompt.experiments.plots import write_plots

        written += write_plots(report.tables, folder)
    for path in written:
        logger.info("wrote %s", path)
    return written
