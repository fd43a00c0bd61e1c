"""A sweep's results aggregated over seeds into the papers' tables.

- **base-to-new** (CoCoOp's Table 1): per dataset and method Base, New and H, where H is the
  harmonic mean of the *mean* Base and *mean* New accuracies (as CoCoOp computes it, not a mean of
  per-seed H), both taken over the seeds that have Base *and* New (in a partial sweep, a cell can
  have more seeds than its neighbour; H then says over how many); an "Average over N datasets"
  block first, whose Base and New average the datasets' means and whose H is the harmonic mean of
  the averages of those seeds' means;
- **cross-dataset transfer** and **domain generalisation**: per method the source dataset
  (ImageNet), each target dataset, and the average over the targets (the source excluded);
- **few-shot**: per dataset and method the accuracy at each number of shots, with an average over
  the datasets first.

Mean and standard deviation are taken over seeds; the deviation is the *population* one
(``numpy.std``, ``ddof=0``), as the research code's ``parse_test_res.py`` reports it. Every cell
keeps its seeds, so a partial sweep shows how many each cell has. Published numbers
(:mod:`cotprompt.experiments.published`) are rows of their own, never averaged with measured ones.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from cotprompt.errors import ConfigError, DataError
from cotprompt.evaluation import harmonic_mean
from cotprompt.experiments.published import PublishedResult, published_for
from cotprompt.experiments.results import RunResult

__all__ = [
    "BASE2NEW",
    "CROSS_DATASET",
    "DOMAIN_GENERALIZATION",
    "FEW_SHOT",
    "METRICS",
    "PROTOCOLS",
    "Cell",
    "Column",
    "Row",
    "Table",
    "build_tables",
    "display_dataset",
    "seed_cell",
]

logger = logging.getLogger(__name__)

BASE2NEW = "base2new"
CROSS_DATASET = "cross_dataset"
DOMAIN_GENERALIZATION = "domain_generalization"
FEW_SHOT = "few_shot"
#: The protocols tabulated, in report order.
PROTOCOLS = (BASE2NEW, CROSS_DATASET, DOMAIN_GENERALIZATION, FEW_SHOT)
#: The metrics of ``results.json`` a report can aggregate.
METRICS = ("accuracy", "mean_per_class_accuracy")

#: The papers' order of the datasets, and their names in the papers' tables.
_DATASETS: dict[str, str] = {
    "imagenet": "ImageNet", "caltech101": "Caltech101", "oxford_pets": "OxfordPets",
    "stanford_cars": "StanfordCars", "oxford_flowers": "Flowers102", "food101": "Food101",
    "fgvc_aircraft": "FGVCAircraft", "sun397": "SUN397", "dtd": "DTD", "eurosat": "EuroSAT",
    "ucf101": "UCF101", "imagenetv2": "ImageNetV2", "imagenet_sketch": "ImageNet-Sketch",
    "imagenet_a": "ImageNet-A", "imagenet_r": "ImageNet-R",
}
_METHODS = ("clip", "zsclip", "zeroshot", "zero_shot", "zero-shot", "coop", "coop_ctxv1", "cocoop",
            "cotpt")

RowKind = Literal["measured", "average", "published"]


def display_dataset(name: str) -> str:
    """A dataset's name in the papers' tables (``oxford_pets`` -> ``OxfordPets``); other names
    as they are."""
    return _DATASETS.get(name, name)


def _dataset_order(names: Iterable[str]) -> list[str]:
    known = list(_DATASETS)
    return sorted(set(names), key=lambda n: (0, known.index(n), n) if n in _DATASETS else (1, 0, n))


def _method_order(names: Iterable[str]) -> list[str]:
    return sorted(set(names),
                  key=lambda n: (0, _METHODS.index(n), n) if n in _METHODS else (1, 0, n))


@dataclass(frozen=True)
class Cell:
    """One number of a table.

    Attributes:
        mean: Accuracy in percent: the mean over seeds, or over datasets (an average), or as
            published.
        std: Population standard deviation over ``seeds``; ``None`` where the number is derived
            (H, averages), published or of a zero-shot run.
        seeds: The seeds the mean is over (H: the seeds with both Base and New; empty for
            averages over datasets and published numbers).
        datasets: For an average over datasets: how many it covers.
        of: For an average over datasets: how many the table has (``datasets < of``: partial).
        zero_shot: Of an untrained method (one deterministic run, never partial).
    """

    mean: float
    std: float | None = None
    seeds: tuple[int, ...] = ()
    datasets: int | None = None
    of: int | None = None
    zero_shot: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dictionary of the fields (``n``: the number of seeds)."""
        return {"mean": self.mean, "std": self.std, "n": len(self.seeds),
                "seeds": list(self.seeds), "datasets": self.datasets, "of": self.of}


def seed_cell(values: Mapping[int, float], *, zero_shot: bool = False) -> Cell:
    """Mean and population standard deviation (``numpy.std``) of ``{seed: accuracy}``.

    A zero-shot cell (an untrained method: 0 shots, one deterministic run) has no deviation.
    """
    seeds = tuple(sorted(values))
    array = np.array([values[s] for s in seeds], dtype=np.float64)
    std = None if zero_shot else float(array.std())
    return Cell(mean=float(array.mean()), std=std, seeds=seeds, zero_shot=zero_shot)


def _average(cells: Sequence[Cell], of: int) -> Cell:
    return Cell(mean=float(np.mean([c.mean for c in cells])), datasets=len(cells), of=of)


@dataclass(frozen=True)
class Column:
    """A value column: its key (CSV, JSON) and its header (Markdown)."""

    key: str
    header: str


@dataclass(frozen=True)
class Row:
    """A row: its labels (raw: dataset name or ``average``; the method, ``"coop (8 shots)"`` where
    a method ran with several numbers of shots), their display text, its cells in column order,
    and for a published row where its numbers come from."""

    labels: tuple[str, ...]
    display: tuple[str, ...]
    cells: tuple[Cell | None, ...]
    kind: RowKind = "measured"
    published: PublishedResult | None = None


@dataclass(frozen=True)
class Table:
    """A table in a paper's layout.

    Attributes:
        name: Unique in a report (``base2new``, ``cross_dataset``, ``few_shot``; with the source
            dataset appended when a protocol has several).
        protocol: The runs' protocol.
        title: The Markdown heading.
        label_columns: The label columns (``dataset``, ``method``).
        columns: The value columns.
        rows: Measured, average and published rows.
        notes: How the numbers are computed, printed under the table.
        datasets: The measured datasets, in table order.
        source_dataset: The training dataset of a transfer table.
    """

    name: str
    protocol: str
    title: str
    label_columns: tuple[str, ...]
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    source_dataset: str | None = None

    def measured(self) -> list[Row]:
        """The rows of measured numbers (averages included), without the published ones."""
        return [r for r in self.rows if r.kind != "published"]


def _metric(result: RunResult, key: str, metric: str) -> float | None:
    """``metrics[key][metric]`` of a run, ``None`` if it has no such key.

    Raises:
        DataError: The value is not a finite number (naming the run).
    """
    entry = result.metrics.get(key)
    if entry is None:
        return None
    value = entry.get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"run {result.run.run_id}: metrics {key!r} has {metric}={value!r}, "
                        "not a finite number")
    return float(value)


def _labels(keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """``(method, shots)`` -> its label: the method, with the shots where it ran with several."""
    keys = set(keys)
    shots: dict[str, set[int]] = defaultdict(set)
    for method, k in keys:
        shots[method].add(k)
    return {(m, k): m if len(shots[m]) == 1 else f"{m} ({k} shots)" for m, k in keys}


def _ordered(keys: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    keys = set(keys)
    order = _method_order(m for m, _ in keys)
    return sorted(keys, key=lambda k: (order.index(k[0]), k[1]))


def _published_rows(protocol: str, columns: Sequence[Column], *, source: str | None = None,
                    dataset_label: bool) -> list[Row]:
    """The published numbers of ``protocol`` as rows (a transfer table's source column takes the
    published ``source`` value)."""
    rows = []
    for p in published_for(protocol, source):
        keys = ["source" if source is not None and c.key == source else c.key for c in columns]
        cells = tuple(Cell(mean=p.values[k]) if k in p.values else None for k in keys)
        method = p.display
        labels: tuple[str, ...]
        display: tuple[str, ...]
        if dataset_label:
            labels, display = ("average", p.method), (p.scope[:1].upper() + p.scope[1:], method)
        else:
            labels, display = (p.method,), (method,)
        rows.append(Row(labels, display, cells, kind="published", published=p))
    return rows


def _published_note(rows: Sequence[Row]) -> tuple[str, ...]:
    """A note naming what the published rows of a table cover."""
    scopes: dict[str, list[str]] = {}
    backbones: list[str] = []
    for row in rows:
        if row.published is not None:
            scopes.setdefault(row.published.scope, []).append(row.published.label)
            if row.published.backbone not in backbones:
                backbones.append(row.published.backbone)
    if not scopes:
        return ()
    parts = "; ".join(f"{', '.join(labels)}: {scope}" for scope, labels in scopes.items())
    notes = [f"Published (CLIP {', '.join(backbones)}, not measured here): {parts}."]
    if any(r.published is not None and r.published.method == "coop_ctxv1" for r in rows):
        notes.append("The published CoOp is CoCoOp's CoOp baseline: 4 context vectors "
                     'initialised from "a photo of a" (CoOp\'s ctxv1 config), cotprompt\'s '
                     "coop_ctxv1; it is not the counterpart of coop (16 vectors drawn at "
                     "random).")
    return tuple(notes)


def _base_to_new(results: Sequence[RunResult], metric: str, published: bool) -> Table:
    values: dict[tuple[str, int], dict[str, dict[str, dict[int, float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(dict)))
    for r in results:
        for split in ("base", "new"):
            acc = _metric(r, f"{r.run.dataset}/{split}", metric)
            if acc is not None:
                values[(r.run.method, r.run.shots)][r.run.dataset][split][r.run.seed] = acc
    keys = _ordered(values)
    labels = _labels(keys)
    datasets = _dataset_order(d for k in keys for d in values[k])
    columns = (Column("base", "Base"), Column("new", "New"), Column("h", "H"))
    per_dataset: list[Row] = []
    averages: list[Row] = []
    for key in keys:
        zero = key[1] == 0
        both: list[tuple[Cell, Cell, float, float]] = []
        for dataset in datasets:
            splits = values[key].get(dataset, {})
            base = seed_cell(splits["base"], zero_shot=zero) if splits.get("base") else None
            new = seed_cell(splits["new"], zero_shot=zero) if splits.get("new") else None
            h = None
            common = sorted(set(splits.get("base", {})) & set(splits.get("new", {})))
            if base and new and common:  # H of the means over the seeds that have both
                base_mean = float(np.mean([splits["base"][s] for s in common]))
                new_mean = float(np.mean([splits["new"][s] for s in common]))
                h = Cell(mean=harmonic_mean(base_mean, new_mean), seeds=tuple(common),
                         zero_shot=zero)
                both.append((base, new, base_mean, new_mean))
            per_dataset.append(Row((dataset, labels[key]),
                                   (display_dataset(dataset), labels[key]), (base, new, h)))
        if both:
            avg_base = _average([b for b, _, _, _ in both], len(datasets))
            avg_new = _average([n for _, n, _, _ in both], len(datasets))
            avg_h = Cell(mean=harmonic_mean(float(np.mean([b for _, _, b, _ in both])),
                                            float(np.mean([n for _, _, _, n in both]))),
                         datasets=len(both), of=len(datasets))
            cells: tuple[Cell | None, ...] = (avg_base, avg_new, avg_h)
        else:
            cells = (None, None, None)
        averages.append(Row(("average", labels[key]),
                            (f"Average over {len(datasets)} datasets", labels[key]), cells,
                            kind="average"))
    per_dataset.sort(key=lambda row: datasets.index(row.labels[0]))  # stable: methods in order
    rows = averages + (_published_rows(BASE2NEW, columns, dataset_label=True) if published
                       else []) + per_dataset
    return Table(
        name=BASE2NEW, protocol=BASE2NEW, title="Base-to-new generalisation",
        label_columns=("dataset", "method"), columns=columns, rows=tuple(rows),
        datasets=tuple(datasets),
        notes=("Base, New: accuracy on the base and the new classes, mean ± std over seeds.",
               "H: harmonic mean of the mean Base and the mean New accuracy (CoCoOp), over the "
               "seeds that have both.",
               "Average: Base and New averaged over the datasets that have both, H of those "
               "averages (each dataset's over its seeds with both).", *_published_note(rows)))


def _transfer_column(key: str, source_key: str) -> Column:
    """The column of an evaluation key (``imagenet_a/all`` -> ``imagenet_a``, ``ImageNet-A``)."""
    dataset, _, classes = key.partition("/")
    header = display_dataset(dataset) + ("" if classes == "all" else f" ({classes})")
    return Column(key.removesuffix("/all"), header + (" (source)" if key == source_key else ""))


def _transfer(results: Sequence[RunResult], protocol: str, metric: str,
              published: bool) -> list[Table]:
    by_source: dict[str, list[RunResult]] = defaultdict(list)
    for r in results:
        by_source[r.run.dataset].append(r)
    title = ("Cross-dataset transfer" if protocol == CROSS_DATASET
             else "Domain generalisation")
    tables = []
    for source in _dataset_order(by_source):
        values: dict[tuple[str, int], dict[str, dict[int, float]]] = defaultdict(
            lambda: defaultdict(dict))
        seen: list[str] = []
        for r in by_source[source]:
            keys = [t.key for t in r.run.eval] or sorted(r.metrics)
            for key in keys:
                acc = _metric(r, key, metric)
                if acc is None:
                    continue
                values[(r.run.method, r.run.shots)][key][r.run.seed] = acc
                if key not in seen:
                    seen.append(key)
        source_key = f"{source}/all"
        others = [k for k in seen if k != source_key]
        order = _dataset_order(k.split("/")[0] for k in others)
        others.sort(key=lambda k: (order.index(k.split("/")[0]), k))
        keys_in_order = ([source_key] if source_key in seen else []) + others
        columns = (*(_transfer_column(k, source_key) for k in keys_in_order),
                   Column("average", "Average"))
        method_keys = _ordered(values)
        labels = _labels(method_keys)
        rows: list[Row] = []
        for method_key in method_keys:
            cells = [seed_cell(values[method_key][k], zero_shot=method_key[1] == 0)
                     if values[method_key].get(k) else None
                     for k in keys_in_order]
            targets = [c for k, c in zip(keys_in_order, cells, strict=True)
                       if k != source_key and c is not None]
            cells.append(_average(targets, len(others)) if targets else None)
            rows.append(Row((labels[method_key],), (labels[method_key],), tuple(cells)))
        if published:
            rows += _published_rows(protocol, columns, source=source, dataset_label=False)
        name = protocol if len(by_source) == 1 else f"{protocol}_{source}"
        tables.append(Table(
            name=name, protocol=protocol,
            title=f"{title} (trained on {display_dataset(source)})",
            label_columns=("method",), columns=columns, rows=tuple(rows),
            datasets=tuple(k.removesuffix("/all") for k in keys_in_order), source_dataset=source,
            notes=("Each dataset: accuracy, mean ± std over seeds.",
                   f"Average: over the {len(others)} target datasets (the source excluded).",
                   *_published_note(rows))))
    return tables


def _few_shot(results: Sequence[RunResult], metric: str) -> Table:
    values: dict[str, dict[str, dict[int, dict[int, float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(dict)))
    for r in results:
        acc = _metric(r, f"{r.run.dataset}/all", metric)
        if acc is not None:
            values[r.run.method][r.run.dataset][r.run.shots][r.run.seed] = acc
    methods = _method_order(values)
    datasets = _dataset_order(d for m in methods for d in values[m])
    shots = sorted({k for m in methods for d in values[m] for k in values[m][d]})
    columns = tuple(Column(str(k), "0 shots (zero-shot)" if k == 0 else
                           f"{k} shot" if k == 1 else f"{k} shots") for k in shots)
    averages, per_dataset = [], []
    for method in methods:
        for dataset in datasets:
            found = values[method].get(dataset, {})
            per_dataset.append(Row((dataset, method), (display_dataset(dataset), method), tuple(
                seed_cell(found[k], zero_shot=k == 0) if found.get(k) else None
                for k in shots)))
        cells = []
        for k in shots:
            means = [seed_cell(values[method][d][k], zero_shot=k == 0) for d in datasets
                     if values[method].get(d, {}).get(k)]
            cells.append(_average(means, len(datasets)) if means else None)
        averages.append(Row(("average", method), (f"Average over {len(datasets)} datasets",
                                                  method), tuple(cells), kind="average"))
    per_dataset.sort(key=lambda row: datasets.index(row.labels[0]))
    return Table(
        name=FEW_SHOT, protocol=FEW_SHOT, title="Few-shot learning",
        label_columns=("dataset", "method"), columns=columns,
        rows=tuple(averages + per_dataset), datasets=tuple(datasets),
        notes=("Accuracy on all classes per number of shots (images per class), mean ± std "
               "over seeds.", "Average: over the datasets that have the cell."))


def build_tables(results: Sequence[RunResult], *, metric: str = "accuracy",
                 published: bool = True) -> list[Table]:
    """The tables of every protocol present in ``results``, in :data:`PROTOCOLS` order.

    Args:
        results: Finished runs (``results.json`` contents), of any protocols.
        metric: ``accuracy`` (what the papers report) or ``mean_per_class_accuracy``.
        published: Add the published reference rows (:mod:`cotprompt.experiments.published`).

    Raises:
        ConfigError: An unknown metric.
        DataError: Two results of the same run, or a metric that is not a finite number.
    """
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    seen: set[str] = set()
    by_protocol: dict[str, list[RunResult]] = defaultdict(list)
    for result in results:
        if result.run.run_id in seen:
            raise DataError(f"two results of the run {result.run.run_id}")
        seen.add(result.run.run_id)
        by_protocol[result.run.protocol].append(result)
    for protocol in sorted(set(by_protocol) - set(PROTOCOLS)):
        logger.warning("%d result(s) of protocol %r are not tabulated (known: %s)",
                       len(by_protocol[protocol]), protocol, ", ".join(PROTOCOLS))
    tables: list[Table] = []
    if by_protocol.get(BASE2NEW):
        tables.append(_base_to_new(by_protocol[BASE2NEW], metric, published))
    for protocol in (CROSS_DATASET, DOMAIN_GENERALIZATION):
        if by_protocol.get(protocol):
            tables += _transfer(by_protocol[protocol], protocol, metric, published)
    if by_protocol.get(FEW_SHOT):
        tables.append(_few_shot(by_protocol[FEW_SHOT], metric))
    return tables
