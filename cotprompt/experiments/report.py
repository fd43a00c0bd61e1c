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

A report refuses to average runs of different settings (:func:`check_settings`): the runs of one
cell (protocol, dataset, method, shots, classes) must have the same ``fingerprint`` (which leaves
the seed out; results without one, from older files: the same method record, the seed aside),
and the runs of one table the same backbone.
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
from cotprompt.experiments.tables import (
    CROSS_DATASET,
    DOMAIN_GENERALIZATION,
    METRICS,
    Cell,
    Row,
    Table,
    build_tables,
)
from cotprompt.io import write_text_atomic

__all__ = [
    "FILE_NAMES",
    "FORMATS",
    "REPORT_FORMAT",
    "STD",
    "Report",
    "build_report",
    "check_settings",
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
    check_settings(results, [str(where[r.run.run_id]) for r in results])
    return sorted(results, key=lambda r: r.run.run_id)


def _record(result: RunResult) -> dict[str, Any]:
    """The method record without what the run's spec sets (the training seed)."""
    record = dict(result.method)
    if isinstance(record.get("training"), dict):
        record["training"] = {k: v for k, v in record["training"].items() if k != "seed"}
    return record


def _record_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    """The entries two method records differ in (``training.epochs, tuner``)."""
    names = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key):
            continue
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            names += [f"{key}.{k}" for k in sorted(set(a[key]) | set(b[key]))
                      if a[key].get(k) != b[key].get(k)]
        else:
            names.append(key)
    return ", ".join(names)


def _shared(result: RunResult) -> bool | None:
    """Whether the run shared its frozen features, read from its fingerprint (``None``: the
    fingerprint is not :func:`~cotprompt.experiments.methods.run_fingerprint` of its record)."""
    from cotprompt.experiments.methods import run_fingerprint

    spec = result.backbone.get("spec", result.backbone)
    for share in (True, False):
        if run_fingerprint(result.method, spec, share_features=share) == result.fingerprint:
            return share
    return None


def _fingerprint_difference(a: RunResult, b: RunResult) -> str:
    """What two runs of one cell with different fingerprints differ in, as `` (...)`` (empty
    when it cannot be told)."""
    differ = _record_difference(_record(a), _record(b))
    if differ:
        return f" ({differ})"
    shared = _shared(a), _shared(b)
    if None not in shared and shared[0] != shared[1]:
        return " (features shared in one, not the other)"
    return ""


def _backbone_text(backbone: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(backbone.items())) or "none recorded"


def check_settings(results: Sequence[RunResult], names: Sequence[str] | None = None) -> None:
    """Refuse results a table would average although their settings differ.

    The runs of one cell (protocol, dataset, method, shots, training classes: what the seeds
    are averaged over) must have the same ``fingerprint`` (which leaves the seed out); where a
    result has none (an older file) the cell's method records (training seed aside) must be the
    same. The runs of one
    table (a protocol; a transfer protocol per source dataset) must have the same backbone.

    Args:
        results: The runs.
        names: How the message names each result (its file); default: ``run <run id>``.

    Raises:
        DataError: One line naming two of the results and what differs.
    """
    names = list(names) if names is not None else [f"run {r.run.run_id}" for r in results]
    cells: dict[tuple[Any, ...], list[int]] = {}
    tables: dict[tuple[str, ...], int] = {}
    for index, result in enumerate(results):
        run = result.run
        table = (run.protocol, run.dataset) if run.protocol in (
            CROSS_DATASET, DOMAIN_GENERALIZATION) else (run.protocol,)
        first = tables.setdefault(table, index)
        if results[first].backbone != result.backbone:
            raise DataError(
                f"{names[first]} and {names[index]} were run with different backbones "
                f"({_backbone_text(results[first].backbone)} and "
                f"{_backbone_text(result.backbone)}); a {run.protocol} table cannot mix them: "
                "report them from separate folders")
        cells.setdefault((run.protocol, run.dataset, run.method, run.shots, run.train_classes),
                         []).append(index)
    for (protocol, dataset, method, shots, classes), members in cells.items():
        cell = f"{protocol}/{dataset}/{method}, {shots} shots, {classes} classes"
        prints = [i for i in members if results[i].fingerprint]
        for i in prints[1:]:
            reference = results[prints[0]]
            if results[i].fingerprint == reference.fingerprint:
                continue
            raise DataError(
                f"{names[prints[0]]} and {names[i]} are runs of one cell ({cell}) with "
                f"different fingerprints{_fingerprint_difference(reference, results[i])}: their "
                "method, training options, backbone or feature sharing differ; a report does not "
                "average them: rerun or remove one")
        if len(prints) == len(members):
            continue
        record = _record(results[members[0]])
        for i in members[1:]:
            differ = _record_difference(record, _record(results[i]))
            if differ:
                raise DataError(
                    f"{names[members[0]]} and {names[i]} are runs of one cell ({cell}) with "
                    f"different method records ({differ}); a report does not average them: "
                    "rerun or remove one")


@dataclass(frozen=True)
class Report:
    """A sweep's tables, ready to be written.

    Attributes:
        tables: The tables, in protocol order.
        metric: The aggregated metric (``accuracy``).
        runs: How many runs the tables are made of.
        settings: What the runs were run with (backbones, each method's epochs), as lines.
    """

    tables: tuple[Table, ...]
    metric: str = "accuracy"
    runs: int = 0
    settings: tuple[str, ...] = ()

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
        if self.settings:
            lines += ["", *self.settings]
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
                "settings": list(self.settings),
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
    return cell is not None and not cell.zero_shot and 0 < len(cell.seeds) < expected


def _expected_seeds(table: Table) -> int:
    return max((len(c.seeds) for r in table.rows for c in r.cells
                if c is not None and c.std is not None), default=0)


def _format_cell(cell: Cell | None, expected: int) -> str:
    if cell is None:
        return "–"
    text = f"{cell.mean:.2f}"
    if cell.std is not None and len(cell.seeds) > 1:  # one seed has no spread to show
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
    if any(c is not None and c.zero_shot for r in table.rows for c in r.cells):
        notes.append("A zero-shot method (0 shots) is one deterministic run: no ± std.")
    partial = [(column.key, c) for r in table.rows
               for column, c in zip(table.columns, r.cells, strict=True) if _partial(c, expected)]
    if partial:
        legend = (f"(n=k): a cell over only k of the {expected} seeds of the table's fullest "
                  "cells (a partial sweep: the other runs are missing)")
        if any(key == "h" for key, _ in partial):
            legend += ("; an H so marked is computed from the k seeds that have both Base and "
                       "New, so it may differ from the H of the Base and New shown")
        notes.append(legend + ".")
    if any(c is not None and c.datasets is not None and c.of is not None and c.datasets < c.of
           for r in table.rows for c in r.cells):
        notes.append("(k/N): an average over k of the table's N datasets (the others are "
                     "missing).")
    return [*lines, "", *notes] if notes else lines


def build_report(results: Sequence[RunResult], *, metric: str = "accuracy",
                 published: bool = True) -> Report:
    """Aggregate finished runs into a :class:`Report` (see
    :func:`cotprompt.experiments.tables.build_tables`).

    Raises:
        ConfigError: An unknown metric.
        DataError: Two results of one run, a metric that is not a finite number, or runs whose
            settings differ (:func:`check_settings`).
    """
    check_settings(results)
    tables = build_tables(results, metric=metric, published=published)
    return Report(tables=tuple(tables), metric=metric, runs=len(results),
                  settings=run_settings(results))


def run_settings(results: Sequence[RunResult]) -> tuple[str, ...]:
    """What the runs were run with, for the reader of a table: the backbones and each trained
    method's epochs (a quick ``--epochs`` trial shows here)."""
    backbones = sorted({f"{r.backbone.get('model_name', '?')} (pretrained: "
                        f"{r.backbone.get('pretrained') or 'none, random weights'})"
                        for r in results})
    epochs: dict[str, set[str]] = {}
    for result in results:
        training = result.method.get("training")
        if isinstance(training, dict) and "epochs" in training and result.run.shots:
            epochs.setdefault(result.run.method, set()).add(str(training["epochs"]))
    lines = [f"Backbone: {', '.join(backbones)}."] if backbones else []
    if epochs:
        lines.append("Epochs: " + ", ".join(f"{m} {'/'.join(sorted(e, key=int))}"
                                            for m, e in sorted(epochs.items())) + ".")
    return tuple(lines)


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
