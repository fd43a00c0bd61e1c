"""Benchmark: how fast the command line answers (issue 15).

Runs, each ``--repeats`` times in fresh subprocesses (the cases interleaved, so that a change of
the machine's load hits them alike), the old eager start-up (``import torch``,
``cotprompt.pipeline`` and ``cotprompt.tasks``, as ``import cotprompt`` did before its names
became lazy, then ``--version``) and the lazy command line (``cotprompt --version``,
``cotprompt --help``, ``cotprompt train --help``, ``import cotprompt``); prints the median wall
time of each and its ratio to the eager start-up, and writes a Markdown report with
``--output``. ``--quick`` (one run each, no warm-up) only checks that the script works.
``--before DIR`` adds the package as it was before (a copy of its ``cotprompt`` folder in
``DIR``, e.g. from ``git archive``), run with ``PYTHONPATH=DIR``.

Usage::

    python benchmarks/bench_cli_startup.py --output benchmarks/results/cli_startup_cpu.md
    python benchmarks/bench_cli_startup.py --quick
    mkdir /tmp/before && git archive HEAD cotprompt | tar -x -C /tmp/before
    python benchmarks/bench_cli_startup.py --before /tmp/before
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EAGER = "eager import (before)"
BEFORE = "before: python -m cotprompt"


def cotprompt_command() -> list[str]:
    """The installed ``cotprompt`` console script next to this Python, else ``python -m
    cotprompt``."""
    script = Path(sys.executable).parent / "cotprompt"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cotprompt"]


def cases(before: Path | None = None) -> dict[str, list[str]]:
    """Name -> command line of every case, in report order (with ``before``: also the
    package in that folder, see :func:`run_once`)."""
    cli = cotprompt_command()
    eager = ("import torch, cotprompt.pipeline, cotprompt.tasks; "
             'from cotprompt.cli import main; main(["--version"])')
    old = {} if before is None else {
        f"{BEFORE} --version": [sys.executable, "-m", "cotprompt", "--version"],
        f"{BEFORE} --help": [sys.executable, "-m", "cotprompt", "--help"],
    }
    return {
        **old,
        EAGER: [sys.executable, "-c", eager],
        "cotprompt --version": [*cli, "--version"],
        "cotprompt --help": [*cli, "--help"],
        "cotprompt train --help": [*cli, "train", "--help"],
        "import cotprompt": [sys.executable, "-c", "import cotprompt"],
    }


def run_once(command: list[str], before: Path | None = None) -> float:
    """Wall seconds of one run of ``command`` (which must succeed); with ``before``, Python
    imports ``cotprompt`` from that folder (``PYTHONPATH``) instead of this checkout."""
    env = dict(os.environ)
    if before is not None:
        env["PYTHONPATH"] = str(before)
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT if before is None else before, env=env,
                          capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"error: {shlex.join(command)} failed: {proc.stderr.strip()[-500:]}")
    return elapsed


def machine() -> str:
    """This machine as ``lscpu`` and ``nproc`` describe it (``platform`` where they are
    missing)."""
    model = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        lscpu = ""
    for line in lscpu.splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    return (f"{model}, {os.cpu_count()} CPU cores available (nproc), "
            f"{platform.system()} {platform.machine()}, Python {platform.python_version()}")


def load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:  # pragma: no cover - not on every platform
        return "n/a"


def measure(repeats: int, warm_up: bool = True, before: Path | None = None
            ) -> dict[str, list[float]]:
    """``repeats`` wall times per case, after one untimed warm-up run of each (file cache)."""
    commands = cases(before)

    def run(name: str) -> float:
        return run_once(commands[name], before if name.startswith(BEFORE) else None)

    for name in commands if warm_up else ():
        run(name)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name in commands:
            times[name].append(run(name))
    return times


def report(times: dict[str, list[float]], argv: list[str], load_before: str,
           load_after: str, quick: bool = False, before: Path | None = None) -> str:
    eager = statistics.median(times[EAGER])
    rows = []
    for name, command in cases(before).items():
        values = times[name]
        median = statistics.median(values)
        ratio = "1.0x" if name == EAGER else f"{eager / median:.2g}x" if median > eager / 2 \
            else f"{eager / median:.1f}x faster"
        shown = shlex.join(["python" if part == sys.executable else
                            "cotprompt" if part.endswith("/cotprompt") else part
                            for part in command])
        if name.startswith(BEFORE):
            shown = f"PYTHONPATH={before} {shown}"
        rows.append(f"| {name} | `{shown}` | {median:.3f} | {min(values):.3f} | "
                    f"{max(values):.3f} | {ratio} |")
    command = "python " + shlex.join(["benchmarks/bench_cli_startup.py", *argv])
    return "\n".join([
        "# Command-line start-up time (CPU)",
        "",
        f"- date: {dt.date.today().isoformat()}",
        f"- machine: {machine()}; load average before / after: {load_before} / {load_after}",
        f"- command: `{command}`",
        f"- runs: {len(times[EAGER])} per case in fresh subprocesses, interleaved"
        + ("" if quick else ", after one warm-up run each") + "; wall time in seconds",
        "",
        "| case | command | median s | min s | max s | vs eager |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        *rows,
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="runs per case (default: 10)")
    parser.add_argument("--quick", action="store_true",
                        help="one run per case, no warm-up: a smoke run")
    parser.add_argument("--output", type=Path, help="write the Markdown report here")
    parser.add_argument("--before", type=Path, metavar="DIR",
                        help="also time the cotprompt package in DIR (PYTHONPATH=DIR)")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    if repeats < 1:
        parser.error("--repeats must be >= 1")
    load_before = load()
    if args.before is not None and not (args.before / "cotprompt" / "__init__.py").is_file():
        parser.error(f"--before: no cotprompt package in {args.before}")
    times = measure(repeats, warm_up=not args.quick, before=args.before)
    text = report(times, sys.argv[1:] if argv is None else argv, load_before, load(),
                  quick=args.quick, before=args.before)
    eager = statistics.median(times[EAGER])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:40} median {median:.3f} s  ({eager / median:.1f}x vs eager)")
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
