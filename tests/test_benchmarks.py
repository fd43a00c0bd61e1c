"""The benchmark script runs end to end (its figures are not checked: speed is benchmarked, not
tested). ``--preset smoke`` on the tiny architecture, in a subprocess as a user runs it, so that
a broken script is found here and not on a lent GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_text_encoder_benchmark_smoke_run_writes_its_report(tmp_path):
    report, raw = tmp_path / "report.md", tmp_path / "raw.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/bench_text_encoder.py",
            "--preset", "smoke",
            "--model", "cotprompt-tiny",
            "--threads", "1",
            "--memory", "10,2,16",
            "--memory", "10,2,auto",
            "--output", str(report),
            "--json", str(raw),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(raw.read_text())
    assert [r["method"] for r in results["results"]] == ["coop", "cocoop"]
    for row in results["results"]:
        assert row["ref_source"] == "measured"
        assert row["fast_ms"] > 0 and row["ref_ms"] > 0 and row["ratio"] > 0
        assert row["min_gflop"] > 0
    budgets = [m["budget_mb"] for m in results["memory"]]
    assert budgets == [16.0, None]
    assert results["memory"][0]["chunks"] >= results["memory"][1]["chunks"] >= 1
    text = report.read_text()
    assert "- command: `" in text and "- date: " in text and "- machine: " in text
    assert "| coop | 1 | no | 10 | 2 |" in text and "| cocoop | 1 | yes | 10 | 2 |" in text
    assert "| 10 | 2 | auto |" in text
