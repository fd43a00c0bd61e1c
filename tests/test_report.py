"""The sweep report (issue 14): mean ± std over seeds into the papers' tables, published reference
numbers beside the measured ones, Markdown / CSV / JSON files, PNG plots and ``cotprompt report``.
The fixture results are written by hand, so every expected number is computed here."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from pathlib import Path

import pytest

from cotprompt.cli import report as report_cli
from cotprompt.errors import ConfigError, DataError
from cotprompt.experiments.published import PUBLISHED, SOURCES
from cotprompt.experiments.report import (
    FILE_NAMES,
    Report,
    build_report,
    load_results,
    parse_formats,
    report_from_folder,
    write_report,
)
from cotprompt.experiments.results import EvalTarget, RunResult, RunSpec, write_result
from cotprompt.experiments.tables import Table, seed_cell

DG_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
XD_TARGETS = ("caltech101", "dtd")

#: base-to-new accuracies: (method, dataset) -> ({seed: base}, {seed: new}); cocoop's DTD has no
#: seed 3 on the new classes (a partial sweep).
B2N = {
    ("coop", "caltech101"): ({1: 90.0, 2: 92.0, 3: 94.0}, {1: 60.0, 2: 62.0, 3: 64.0}),
    ("coop", "dtd"): ({1: 70.0, 2: 71.0, 3: 72.0}, {1: 50.0, 2: 52.0, 3: 54.0}),
    ("cocoop", "caltech101"): ({1: 88.0, 2: 89.0, 3: 90.0}, {1: 70.0, 2: 71.0, 3: 72.0}),
    ("cocoop", "dtd"): ({1: 68.0, 2: 69.0, 3: 70.0}, {1: 55.0, 2: 56.0}),
}


def _result(protocol: str, method: str, dataset: str, seed: int, shots: int,
            metrics: dict[str, float], classes: str = "all") -> RunResult:
    targets = tuple(EvalTarget(*key.split("/")) for key in metrics)  # type: ignore[arg-type]
    spec = RunSpec(protocol, method, dataset, seed, shots, classes, targets)  # type: ignore[arg-type]
    return RunResult(run=spec, method={"name": method},
                     metrics={k: {"accuracy": v, "mean_per_class_accuracy": v - 1.0,
                                  "num_images": 10} for k, v in metrics.items()})


def sweep() -> list[RunResult]:
    results = []
    for (method, dataset), (base, new) in B2N.items():
        for seed in (1, 2, 3):
            metrics = {f"{dataset}/base": base[seed]}
            if seed in new:
                metrics[f"{dataset}/new"] = new[seed]
            results.append(_result("base2new", method, dataset, seed, 16, metrics, "base"))
    # zero-shot CLIP: one untrained run per dataset (seed 0, 0 shots), as the sweep runs it
    for dataset, (base, new) in (("caltech101", (70.0, 75.0)), ("dtd", (45.0, 55.0))):
        results.append(_result("base2new", "zsclip", dataset, 0, 0,
                               {f"{dataset}/base": base, f"{dataset}/new": new}, "base"))
        results.append(_result("few_shot", "zsclip", dataset, 0, 0,
                               {f"{dataset}/all": base - 10.0}))
    results.append(_result("domain_generalization", "zsclip", "imagenet", 0, 0,
                           {"imagenet/all": 66.0, **{f"{t}/all": 50.0 for t in DG_TARGETS}}))
    for method, offset in (("coop", 0.0), ("cocoop", 2.0)):
        for seed in (1, 2):
            dg = {"imagenet/all": 70.0 + seed + offset}
            dg.update({f"{t}/all": 50.0 + 2 * i + seed + offset for i, t in enumerate(DG_TARGETS)})
            results.append(_result("domain_generalization", method, "imagenet", seed, 16, dg))
            xd = {"imagenet/all": 70.0 + seed + offset, "caltech101/all": 90.0 + seed + offset,
                  "dtd/all": 40.0 + seed + offset}
            results.append(_result("cross_dataset", method, "imagenet", seed, 16, xd))
        for dataset, base in (("caltech101", 80.0), ("dtd", 40.0)):
            for shots in (1, 2, 4):
                if (method, dataset, shots) == ("cocoop", "dtd", 4):
                    continue  # a missing cell of the few-shot table
                for seed in (1, 2, 3):
                    acc = base + 2 * shots + seed + offset
                    results.append(_result("few_shot", method, dataset, seed, shots,
                                           {f"{dataset}/all": acc}))
    return results


@pytest.fixture
def output(tmp_path: Path) -> Path:
    """A sweep's output folder, its runs split over two shard folders."""
    folder = tmp_path / "sweep"
    for index, result in enumerate(sweep()):
        write_result(folder / f"shard{index % 2}" / result.run.run_id, result)
    return folder


def _table(report: Report, name: str) -> Table:
    return next(t for t in report.tables if t.name == name)


def _row(table: Table, *labels: str, kind: str | None = None):
    return next(r for r in table.rows if r.labels == labels and (kind is None or r.kind == kind))


def _h(base: float, new: float) -> float:
    return 2 * base * new / (base + new)


def test_seed_cells_take_the_population_std_as_the_research_code() -> None:
    cell = seed_cell({3: 94.0, 1: 90.0, 2: 92.0})
    assert cell.mean == pytest.approx(92.0)
    assert cell.std == pytest.approx(math.sqrt(8 / 3))  # numpy.std (ddof=0), not the sample 2.0
    assert cell.seeds == (1, 2, 3)
    assert seed_cell({5: 70.0}).std == 0.0


def test_base_to_new_means_h_from_means_and_the_average_over_datasets(output: Path) -> None:
    report = report_from_folder(output)
    table = _table(report, "base2new")
    assert [c.key for c in table.columns] == ["base", "new", "h"]
    assert table.datasets == ("caltech101", "dtd")
    base, new, h = _row(table, "caltech101", "coop").cells
    assert (base.mean, new.mean) == pytest.approx((92.0, 62.0))
    assert base.std == pytest.approx(math.sqrt(8 / 3)) and base.seeds == (1, 2, 3)
    assert h.mean == pytest.approx(_h(92.0, 62.0)) and h.std is None
    # the average: Base and New averaged over the datasets, H of those averages (CoCoOp)
    avg_base, avg_new, avg_h = _row(table, "average", "coop", kind="average").cells
    assert avg_base.mean == pytest.approx((92.0 + 71.0) / 2)
    assert avg_new.mean == pytest.approx((62.0 + 52.0) / 2)
    assert avg_h.mean == pytest.approx(_h(81.5, 57.0))
    mean_of_h = (_h(92.0, 62.0) + _h(71.0, 52.0)) / 2
    assert abs(avg_h.mean - mean_of_h) > 0.01  # not the mean of the per-dataset H
    assert (avg_base.datasets, avg_base.of) == (2, 2)
    # the partial cell: cocoop's DTD new classes have seeds 1 and 2 only; its Base keeps its
    # three seeds, its H takes the two seeds with both (not the Base of seeds 1-3)
    partial_base, partial, partial_h = _row(table, "dtd", "cocoop").cells
    assert partial.seeds == (1, 2) and partial.mean == pytest.approx(55.5)
    assert partial.std == pytest.approx(0.5)
    assert partial_base.seeds == (1, 2, 3) and partial_base.mean == pytest.approx(69.0)
    assert partial_h.mean == pytest.approx(_h(68.5, 55.5)) and partial_h.seeds == (1, 2)
    assert partial_h.std is None and h.seeds == (1, 2, 3)
    # the average's H: of the averages of each dataset's means over its seeds with both
    cocoop_avg = _row(table, "average", "cocoop", kind="average").cells
    assert cocoop_avg[0].mean == pytest.approx((89.0 + 69.0) / 2)  # Base: all seeds
    assert cocoop_avg[2].mean == pytest.approx(_h((89.0 + 68.5) / 2, (71.0 + 55.5) / 2))
    zero_base, _, _ = _row(table, "caltech101", "zsclip").cells
    assert (zero_base.mean, zero_base.std, zero_base.seeds) == (70.0, None, (0,))


def test_transfer_tables_average_the_targets_without_the_source(output: Path) -> None:
    report = report_from_folder(output)
    dg = _table(report, "domain_generalization")
    assert [c.key for c in dg.columns] == ["imagenet", *DG_TARGETS, "average"]
    assert dg.columns[0].header == "ImageNet (source)"
    cells = _row(dg, "coop").cells
    assert cells[0].mean == pytest.approx(71.5)  # seeds 1, 2
    targets = [50.0 + 2 * i + 1.5 for i in range(4)]
    assert [c.mean for c in cells[1:5]] == pytest.approx(targets)
    assert cells[5].mean == pytest.approx(sum(targets) / 4) and cells[5].of == 4
    xd = _table(report, "cross_dataset")
    assert [c.key for c in xd.columns] == ["imagenet", *XD_TARGETS, "average"]
    cocoop = _row(xd, "cocoop").cells
    assert cocoop[3].mean == pytest.approx((93.5 + 43.5) / 2)
    published = _row(xd, "coop_ctxv1", kind="published").cells
    assert published[0].mean == 71.51 and published[3].mean == 63.88  # source, average
    assert published[1] is None and published[2] is None


def test_few_shot_table_per_shots_and_the_average_over_datasets(output: Path) -> None:
    table = _table(report_from_folder(output), "few_shot")
    assert [c.key for c in table.columns] == ["0", "1", "2", "4"]
    assert [c.header for c in table.columns] == ["0 shots (zero-shot)", "1 shot", "2 shots",
                                                 "4 shots"]
    caltech = _row(table, "caltech101", "coop").cells
    assert caltech[0] is None
    assert [c.mean for c in caltech[1:]] == pytest.approx([84.0, 86.0, 90.0])
    average = _row(table, "average", "cocoop", kind="average").cells
    assert average[1].mean == pytest.approx(((86.0) + (46.0)) / 2)
    assert (average[3].mean, average[3].datasets, average[3].of) == (pytest.approx(92.0), 1, 2)
    assert _row(table, "dtd", "cocoop").cells[3] is None
    zero = _row(table, "average", "zsclip", kind="average").cells
    assert zero[0].mean == pytest.approx((60.0 + 35.0) / 2) and zero[1:] == (None, None, None)
    assert not [r for r in table.rows if r.kind == "published"]  # no published few-shot numbers


def test_published_numbers_have_a_source_and_are_rows_of_their_own(output: Path) -> None:
    results = load_results(output)
    with_published = build_report(results)
    without = build_report(results, published=False)
    for table, bare in zip(with_published.tables, without.tables, strict=True):
        assert table.measured() == bare.measured()  # published numbers change no measured one
        assert not [r for r in bare.rows if r.kind == "published"]
        for row in table.rows:
            assert (row.kind == "published") == (row.published is not None)
            if row.published is not None:
                assert all(c is None or (c.std is None and not c.seeds) for c in row.cells)
    b2n = _table(with_published, "base2new")
    rows = {r.labels[1]: r for r in b2n.rows if r.kind == "published"}
    assert [c.mean for c in rows["clip"].cells] == [69.34, 74.22, 71.70]
    assert [c.mean for c in rows["coop_ctxv1"].cells] == [82.69, 63.22, 71.66]
    assert [c.mean for c in rows["cocoop"].cells] == [80.47, 71.69, 75.83]


def test_published_coop_is_cocoops_ctxv1_baseline_not_the_coop_preset(output: Path) -> None:
    """CoCoOp's CoOp baseline (Tables 1-3) is CoOp's ctxv1 config: cotprompt's coop_ctxv1."""
    coop = [p for p in PUBLISHED if p.label == "CoOp"]
    assert len(coop) == 3 and all(p.method == "coop_ctxv1" for p in coop)
    assert {p.protocol for p in coop} == {"base2new", "cross_dataset", "domain_generalization"}
    assert not [p for p in PUBLISHED if p.method == "coop"]
    report = report_from_folder(output)
    for table in report.tables:
        published = {r.labels[-1] for r in table.rows if r.kind == "published"}
        measured = {r.labels[-1] for r in table.measured()}
        assert "coop" in measured and "coop" not in published  # never coop's counterpart
        if "coop_ctxv1" in published:
            row = _row(table, *(("average",) if len(table.label_columns) == 2 else ()),
                       "coop_ctxv1", kind="published")
            assert row.display[-1] == "CoOp (published, CoCoOp's ctxv1 baseline)"
            assert any("coop_ctxv1" in n and "not the counterpart of coop" in n
                       for n in table.notes)
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert {r["method"] for r in rows if r["kind"] == "published"} == {"clip", "coop_ctxv1",
                                                                      "cocoop"}


def test_every_published_number_names_where_it_was_read() -> None:
    assert {p.protocol for p in PUBLISHED} == {"base2new", "cross_dataset",
                                               "domain_generalization"}
    for source in SOURCES.values():
        for url in (source.read_at, *source.also_at):
            assert re.match(r"https://github\.com/[\w.-]+/[\w.-]+/blob/[0-9a-f]{40}/", url), url
        assert source.origin and source.note
    for p in PUBLISHED:
        assert p.source is SOURCES[p.source.key] and p.values and p.scope
        if {"base", "new", "h"} <= set(p.values):  # H of the averages, as CoCoOp
            assert _h(p.values["base"], p.values["new"]) == pytest.approx(p.values["h"], abs=0.01)
    assert not [p for p in PUBLISHED if "cotpt" in p.method.lower()]


def test_markdown_layout(output: Path) -> None:
    text = report_from_folder(output).to_markdown()
    lines = text.splitlines()
    start = lines.index("## Base-to-new generalisation")
    assert lines[start + 2] == "| Dataset | Method | Base | New | H |"
    assert lines[start + 4].startswith("| Average over 2 datasets | zsclip | 57.50 | 65.00 |")
    assert lines[start + 5] == "| Average over 2 datasets | coop | 81.50 | 57.00 | 67.08 |"
    assert "| Caltech101 | coop | 92.00 ± 1.63 | 62.00 ± 1.63 | 74.08 |" in lines
    assert (f"| DTD | cocoop | 69.00 ± 0.82 | 55.50 ± 0.50 (n=2) | {_h(68.5, 55.5):.2f} (n=2) |"
            in lines)
    # a legend line under each table with the mark, and only there
    legends = [i for i, line in enumerate(lines) if line.startswith("(n=k): ")]
    marked = [i for i, line in enumerate(lines) if "(n=" in line and line.startswith("|")]
    assert legends and marked
    for index in marked:  # the next legend follows the table, before the next heading
        following = next(i for i in legends if i > index)
        assert not [line for line in lines[index:following] if line.startswith("## ")]
    b2n_legend = lines[next(i for i in legends if i > start)]
    assert b2n_legend.startswith("(n=k): a cell over only k of the 3 seeds")
    assert "H so marked is computed from the k seeds that have both Base and New" in b2n_legend
    assert ("| Average over 11 datasets | *CoOp (published, CoCoOp's ctxv1 baseline)* [1] | "
            "82.69 | 63.22 | 71.66 |") in lines
    assert "| DTD | cocoop | – | 46.00 ± 0.82 | 48.00 ± 0.82 | – |" in lines
    assert "| Average over 2 datasets | cocoop | – | 66.00 | 68.00 | 92.00 (1/2) |" in lines
    # zero-shot: one deterministic run, no std and no partial-sweep mark
    assert f"| Caltech101 | zsclip | 70.00 | 75.00 | {_h(70.0, 75.0):.2f} |" in lines
    assert "A zero-shot method (0 shots) is one deterministic run: no ± std." in lines
    assert "(n=1)" not in text
    assert "## Sources of the published numbers" in lines
    assert any(line.startswith("1. CoCoOp: Zhou et al.") and SOURCES[
        "cocoop-table1-avg"].read_at.split(" ")[0] in line for line in lines)
    assert "population standard deviation" in text and "\r" not in text


def test_csv_one_line_per_cell(output: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(report_from_folder(output).to_csv())))
    base = next(r for r in rows if r["table"] == "base2new" and r["kind"] == "measured"
                and r["dataset"] == "caltech101" and r["method"] == "coop"
                and r["column"] == "base")
    assert float(base["mean"]) == 92.0 and float(base["std"]) == pytest.approx(math.sqrt(8 / 3))
    assert (base["n"], base["seeds"], base["source"]) == ("3", "1 2 3", "")
    partial = next(r for r in rows if r["table"] == "base2new" and r["dataset"] == "dtd"
                   and r["method"] == "cocoop" and r["column"] == "new")
    assert (partial["n"], partial["seeds"]) == ("2", "1 2")
    h = next(r for r in rows if r["table"] == "base2new" and r["dataset"] == "dtd"
             and r["method"] == "cocoop" and r["column"] == "h")
    assert (h["n"], h["seeds"], h["std"]) == ("2", "1 2", "")  # the seeds H is computed from
    published = [r for r in rows if r["kind"] == "published"]
    assert published and all(r["source"] in SOURCES and not r["std"] and not r["n"]
                             for r in published)
    assert all(r["source"] == "" for r in rows if r["kind"] != "published")
    dg_average = next(r for r in rows if r["table"] == "domain_generalization"
                      and r["method"] == "coop" and r["column"] == "average"
                      and r["kind"] == "measured")
    assert (dg_average["datasets"], dg_average["of"]) == ("4", "4")


def test_json_report(output: Path) -> None:
    data = json.loads(json.dumps(report_from_folder(output).to_json(), allow_nan=False))
    assert data["format"] == 1 and data["metric"] == "accuracy" and "ddof=0" in data["std"]
    assert data["runs"] == len(sweep())
    names = [t["name"] for t in data["tables"]]
    assert names == ["base2new", "cross_dataset", "domain_generalization", "few_shot"]
    b2n = data["tables"][0]
    row = next(r for r in b2n["rows"] if r["labels"] == {"dataset": "dtd", "method": "cocoop"})
    assert row["kind"] == "measured" and row["cells"]["new"]["n"] == 2
    published = [r for r in b2n["rows"] if r["kind"] == "published"]
    assert {r["published"]["source"] for r in published} == {"cocoop-table1-avg"}
    assert {s["key"] for s in data["sources"]} == {"cocoop-table1-avg", "xd-fuseprompt",
                                                   "xd-dg-lweib"}


def test_a_method_run_with_several_shots_gets_a_row_per_shots() -> None:
    results = [_result("base2new", "coop", "dtd", seed, shots,
                       {"dtd/base": 60.0 + shots + seed, "dtd/new": 50.0}, "base")
               for shots in (16, 8) for seed in (1, 2)]
    table = build_report(results, published=False).tables[0]
    assert [r.labels for r in table.rows] == [("average", "coop (8 shots)"),
                                              ("average", "coop (16 shots)"),
                                              ("dtd", "coop (8 shots)"), ("dtd", "coop (16 shots)")]
    assert _row(table, "dtd", "coop (16 shots)").cells[0].mean == pytest.approx(77.5)


def test_other_metric_and_unknown_metric(output: Path) -> None:
    report = report_from_folder(output, metric="mean_per_class_accuracy")
    base = _row(_table(report, "base2new"), "caltech101", "coop").cells[0]
    assert base.mean == pytest.approx(91.0)
    with pytest.raises(ConfigError, match="metric must be one of"):
        report_from_folder(output, metric="top5")


def test_two_results_of_one_run_are_refused(tmp_path: Path) -> None:
    results = sweep()
    with pytest.raises(DataError, match="two results of the run base2new/caltech101/coop"):
        build_report([*results, results[0]])
    write_result(tmp_path / "a" / "one", results[0])
    write_result(tmp_path / "b" / "one", results[0])
    with pytest.raises(DataError, match="are results of the same run") as info:
        load_results(tmp_path)
    assert str(tmp_path / "a" / "one") in str(info.value)


def _settings(result: RunResult, *, fingerprint: str = "", epochs: int = 200,
              model: str = "ViT-B-16") -> RunResult:
    """``result`` with a fingerprint, a method record with training options and a backbone."""
    result.fingerprint = fingerprint
    result.method = {"name": result.run.method,
                     "training": {"epochs": epochs, "lr": 0.002, "seed": result.run.seed}}
    result.backbone = {"model_name": model, "pretrained": "openai"}
    return result


def _coop_dtd(seeds: tuple[int, ...] = (1, 2, 3), method: str = "coop") -> list[RunResult]:
    return [_result("base2new", method, "dtd", seed, 16, {"dtd/base": 70.0 + seed,
                                                          "dtd/new": 50.0}, "base")
            for seed in seeds]


def test_runs_of_one_cell_with_different_fingerprints_are_refused(tmp_path: Path) -> None:
    one, two, three = (_settings(r, fingerprint="f1") for r in _coop_dtd())
    two.fingerprint = "f2"
    for result in (one, two, three):
        write_result(tmp_path / result.run.run_id, result)
    with pytest.raises(DataError, match=r"one cell \(base2new/dtd/coop, 16 shots, base classes\) "
                       "with different fingerprints") as info:
        load_results(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / one.run.run_id) in message and str(tmp_path / two.run.run_id) in message
    with pytest.raises(DataError, match="run base2new/dtd/coop/shots16_seed1 and run "
                       "base2new/dtd/coop/shots16_seed2 are runs of one cell"):
        build_report([one, two, three])
    # the same fingerprint over the seeds (the seed is the run's, not the settings'): averaged
    two.fingerprint = "f1"
    table = build_report([one, two, three], published=False).tables[0]
    assert _row(table, "dtd", "coop").cells[0].mean == pytest.approx(72.0)
    # other cells may have other settings (other methods, shots or datasets)
    others = [_settings(r, fingerprint="g") for r in _coop_dtd(method="cocoop")]
    assert len(build_report([one, two, three, *others]).tables) == 1


def test_the_seeds_of_one_cell_share_a_fingerprint_and_other_settings_are_refused() -> None:
    """The sweep's fingerprint hashes the method record without its training seed: the seeds of
    one cell share it; another feature sharing or training option makes it differ."""
    from cotprompt.experiments.runner import run_fingerprint

    def fingerprinted(result: RunResult, *, share: bool = True, epochs: int = 200) -> RunResult:
        result = _settings(result, epochs=epochs)
        result.backbone["spec"] = {"name": "open_clip", "config": {"model_name": "ViT-B-16"}}
        result.fingerprint = run_fingerprint(result.method, result.backbone["spec"],
                                             share_features=share)
        return result

    runs = [fingerprinted(r) for r in _coop_dtd()]
    assert len({r.fingerprint for r in runs}) == 1
    assert _row(build_report(runs).tables[0], "dtd", "coop").cells[0].seeds == (1, 2, 3)
    runs[1] = fingerprinted(runs[1], share=False)
    with pytest.raises(DataError, match=r"different fingerprints \(features shared in one, not "
                       r"the other\)"):
        build_report(runs)
    runs[1] = fingerprinted(runs[1], epochs=50)
    with pytest.raises(DataError, match=r"different fingerprints \(training\.epochs\)"):
        build_report(runs)


def test_results_without_a_fingerprint_are_compared_by_their_method_record() -> None:
    old = [_settings(r) for r in _coop_dtd()]  # older files: no fingerprint
    assert old[0].method != old[1].method  # the training seed differs, nothing else
    assert build_report(old).runs == 3
    old[2] = _settings(old[2], epochs=50)
    with pytest.raises(DataError, match=r"run base2new/dtd/coop/shots16_seed1 and run "
                       r"base2new/dtd/coop/shots16_seed3 are runs of one cell .* with different "
                       r"method records \(training\.epochs\)"):
        build_report(old)
    # a cell of new and old files: the records decide, for all of them
    mixed = [_settings(r, fingerprint="f1") for r in _coop_dtd((1, 2))] + [
        _settings(_coop_dtd((3,))[0], epochs=50)]
    with pytest.raises(DataError, match=r"different method records \(training\.epochs\)"):
        build_report(mixed)
    mixed[2] = _settings(mixed[2])
    assert build_report(mixed).runs == 3


def test_runs_of_one_table_with_different_backbones_are_refused(tmp_path: Path) -> None:
    coop = [_settings(r, fingerprint="f1") for r in _coop_dtd()]
    coop[1] = _settings(coop[1], fingerprint="f1", model="RN50")
    with pytest.raises(DataError, match="were run with different backbones") as info:
        build_report(coop)
    assert "model_name=RN50" in str(info.value) and "model_name=ViT-B-16" in str(info.value)
    # nor may two methods of one table: the table would compare them as if alike
    coop[1] = _settings(coop[1], fingerprint="f1")
    cocoop = [_settings(r, fingerprint="g", model="RN50") for r in _coop_dtd(method="cocoop")]
    for result in (*coop, *cocoop):
        write_result(tmp_path / result.run.run_id, result)
    with pytest.raises(DataError, match="a base2new table cannot mix them") as info:
        load_results(tmp_path)
    assert str(tmp_path / cocoop[0].run.run_id) in str(info.value)
    # other tables may have another backbone
    few = _settings(_result("few_shot", "coop", "dtd", 1, 4, {"dtd/all": 60.0}), model="RN50")
    assert build_report([*coop, few]).runs == 4


@pytest.mark.parametrize(("content", "expected"), [
    ("{not json", "cannot read"),
    ('{"format": 2}', "not a cotprompt results file"),
    ('{"format": 1, "run": {"protocol": "base2new"}}', "malformed results"),
    ("BAD_METRIC", "not a finite number"),
    ("BAD_SEED", "run.seed must be an integer"),
    ("BAD_ENTRY", "malformed results"),
])
def test_a_malformed_results_file_is_named_in_one_line(output: Path, content: str,
                                                       expected: str) -> None:
    data = sweep()[0].to_dict()
    if content == "BAD_METRIC":
        data["metrics"]["caltech101/base"]["accuracy"] = "high"
    elif content == "BAD_SEED":
        data["run"]["seed"] = "1"
    elif content == "BAD_ENTRY":
        data["metrics"]["caltech101/base"] = "abc"
    text = json.dumps(data) if content.startswith("BAD_") else content
    bad = output / "shard9" / "broken" / "results.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=expected) as info:
        load_results(output)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_no_results_or_no_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no results\.json under"):
        load_results(tmp_path)
    with pytest.raises(DataError, match="no such folder"):
        load_results(tmp_path / "missing")


def test_written_files_are_the_same_bytes_twice(output: Path, tmp_path: Path) -> None:
    report = report_from_folder(output)
    first = write_report(report, tmp_path / "r1")
    second = write_report(report_from_folder(output), tmp_path / "r2")
    assert [p.name for p in first] == [FILE_NAMES[f] for f in ("md", "csv", "json")]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes() and a.stat().st_size > 0
    only = write_report(report, tmp_path / "r3", formats="csv")
    assert [p.name for p in only] == ["report.csv"]
    assert parse_formats(" json , md ") == ("md", "json")
    with pytest.raises(ConfigError, match="report formats are md, csv, json"):
        parse_formats("md,xlsx")


def test_plots_are_pngs_and_identical_on_a_second_run(output: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = report_from_folder(output)
    first = [p for p in write_report(report, tmp_path / "p1", plots=True) if p.suffix == ".png"]
    second = [p for p in write_report(report, tmp_path / "p2", plots=True) if p.suffix == ".png"]
    assert sorted(p.name for p in first) == ["base2new.png", "cross_dataset.png",
                                            "domain_generalization.png", "few_shot.png"]
    for a, b in zip(first, second, strict=True):
        data = a.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
        assert data == b.read_bytes()
        assert b"Software" not in data and b"matplotlib" not in data.lower()


def test_plots_without_matplotlib_say_how_to_install_it(
    output: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    report = report_from_folder(output)
    with pytest.raises(ConfigError, match=re.escape('pip install "matplotlib>=3.7"')):
        write_report(report, tmp_path / "r", plots=True)
    assert not (tmp_path / "r").exists()  # refused before writing anything


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="cotprompt")
    common = argparse.ArgumentParser(add_help=False)
    report_cli.add_commands(parser.add_subparsers(dest="command"), common)
    return parser.parse_args(argv)


def test_cli_prints_the_markdown_and_writes_the_report(
    output: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _cli(["report", str(output)])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Sweep report") and "| Dataset | Method | Base | New | H |" in out
    assert sorted(p.name for p in (output / "report").iterdir()) == [
        "report.csv", "report.json", "report.md"]
    assert (output / "report" / "report.md").read_text(encoding="utf-8") == out


def test_cli_json_formats_and_folder(
    output: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _cli(["report", str(output), "--to", str(tmp_path / "out"), "--format", "json",
                 "--json", "--no-published"])
    assert args.handler(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["files"] == [str(tmp_path / "out" / "report.json")]
    assert data["report"]["sources"] == []
    args = _cli(["report", str(output), "--format", "pdf"])
    with pytest.raises(ConfigError, match="report formats are"):
        args.handler(args)
    args = _cli(["report", str(tmp_path / "nothing")])
    with pytest.raises(DataError, match="no such folder"):
        args.handler(args)


def test_the_report_says_what_the_runs_were_run_with() -> None:
    runs = _coop_dtd()
    for result in runs:
        result.backbone.update({"model_name": "ViT-B-16", "pretrained": "openai"})
        result.method.setdefault("training", {})["epochs"] = 2
    report = build_report(runs)
    assert report.settings == ("Backbone: ViT-B-16 (pretrained: openai).", "Epochs: coop 2.")
    assert "Epochs: coop 2." in report.to_markdown()
    assert report.to_json()["settings"] == list(report.settings)
