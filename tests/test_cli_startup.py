"""A command line that answers fast (issue 15): ``cotprompt --version``, ``--help`` and every
``COMMAND --help`` build the parser without importing torch or the other heavy libraries;
``import cotprompt`` is light and its public names resolve on first use; the task heads are
still found when only ``cotprompt.pipeline`` is imported. Timings are benchmarked
(benchmarks/bench_cli_startup.py), not tested."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cotprompt
from cotprompt.backbones import TINY_DEMO_MODEL
from cotprompt.cli import build_parser, demo

ROOT = Path(__file__).resolve().parents[1]

#: Libraries that must not be imported to print help or the version.
HEAVY = ("torch", "torchvision", "open_clip", "accelerate", "pydantic", "numpy", "PIL",
         "huggingface_hub", "safetensors", "sklearn", "transformers", "matplotlib", "yaml",
         "pluggy", "tqdm", "shtab")

#: Runs ``cotprompt.cli.main`` on each argv of the JSON list ``sys.argv[1]`` (its output
#: swallowed) and prints, as JSON, the heavy modules each call imported first.
CLI_WRAPPER = textwrap.dedent("""
    import contextlib, io, json, sys
    heavy = json.loads(sys.argv[2])
    from cotprompt.cli import main
    report = {"after import": sorted(m for m in heavy if m in sys.modules)}
    for argv in json.loads(sys.argv[1]):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            status = main(argv)
        report[" ".join(argv)] = [status, sorted(m for m in heavy if m in sys.modules)]
    print(json.dumps(report))
""")


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -c code args`` in a fresh interpreter, in the repository root."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=240, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))


def commands() -> list[str]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(subparsers.choices)


def test_every_command_is_covered():
    assert {"train", "eval", "predict", "demo", "sweep", "completion"} <= set(commands())


def test_version_and_every_help_do_not_import_heavy_libraries():
    argvs = [["--version"], ["--help"], *([name, "--help"] for name in commands())]
    proc = run_python(CLI_WRAPPER, json.dumps(argvs), json.dumps(HEAVY))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report.pop("after import") == []
    assert set(report) == {" ".join(argv) for argv in argvs}
    for argv, (status, imported) in report.items():
        assert status == 0, argv
        assert imported == [], f"`cotprompt {argv}` imported {imported}"


def test_the_check_sees_a_heavy_import():
    """The wrapper above can fail: a command that does import torch is reported."""
    proc = run_python(CLI_WRAPPER, json.dumps([["plugins"]]), json.dumps(["torch"]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["plugins"] == [0, ["torch"]]


def test_the_console_script_module_is_light():
    code = ("import sys, runpy; sys.argv = ['cotprompt', '--version']\n"
            "try:\n    runpy.run_module('cotprompt', run_name='__main__')\n"
            "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            "print('torch' in sys.modules)")
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [f"cotprompt {cotprompt.__version__}", "False"]


def test_import_cotprompt_is_light_and_its_public_names_resolve():
    code = textwrap.dedent("""
        import json, sys
        import cotprompt
        light = sorted(m for m in ("torch", "pydantic", "pluggy", "cotprompt.tasks",
                                   "cotprompt.pipeline") if m in sys.modules)
        listed = set(cotprompt.__all__) <= set(dir(cotprompt))
        from cotprompt import CoTPipeline, PipelineConfig, TrainingConfig, hookimpl
        from cotprompt.pipeline import CoTPipeline as Direct
        resolved = {name: type(getattr(cotprompt, name)).__name__ for name in cotprompt.__all__}
        try:
            cotprompt.NoSuchName
            missing = "no error"
        except AttributeError as exc:
            missing = str(exc)
        print(json.dumps({"light": light, "listed": listed, "same": CoTPipeline is Direct,
                          "resolved": resolved, "missing": missing}))
    """)
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["light"] == []
    assert result["listed"] and result["same"]
    assert set(result["resolved"]) == set(cotprompt.__all__)
    assert result["missing"] == "module 'cotprompt' has no attribute 'NoSuchName'"


def test_public_names_are_the_modules_objects_in_this_process():
    from cotprompt.pipeline import CoTPipeline
    from cotprompt.training.config import TrainingConfig

    assert cotprompt.CoTPipeline is CoTPipeline
    assert cotprompt.TrainingConfig is TrainingConfig
    assert "CoTPipeline" in dir(cotprompt)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = cotprompt.nope


#: Fits and evaluates a retrieval dataset with only ``cotprompt.pipeline`` (and data, backbone)
#: imported: ``fit`` / ``evaluate`` must find the retrieval head themselves.
HEADS_CODE = textwrap.dedent("""
    import json, sys
    import torch
    from PIL import Image
    from cotprompt.pipeline import CoTPipeline
    from cotprompt.pipeline import heads
    from cotprompt.backbones import TINY_MODEL
    from cotprompt.data import ImageRecord
    from cotprompt.data.retrieval import RetrievalDataset
    from cotprompt.errors import DataError
    torch.set_num_threads(1)
    before = "cotprompt.tasks" in sys.modules
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)] * 2
    records = [ImageRecord(path=None, label=0, image=Image.new("RGB", (32, 32), c))
               for c in colours]
    captions = [[f"colour {i % 3}"] for i in range(len(colours))]
    data = RetrievalDataset(records, captions)
    pipeline = CoTPipeline.create(
        backbone_config={"model_name": TINY_MODEL, "pretrained": None}, generator="caption",
        tuner="coop", tuner_config={"n_ctx": 2},
        training={"epochs": 1, "batch_size": 3, "progress": False, "augment": False,
                  "warmup_epochs": 0},
        device="cpu")
    pipeline.fit(data)
    result = pipeline.evaluate(data, split="train")
    try:
        heads.task_head_for([1, 2])
        refused = ""
    except DataError as exc:
        refused = str(exc)
    print(json.dumps({"before": before, "task": pipeline.task.kind,
                      "head": type(heads.task_head_for(data)).__name__,
                      "metrics": sorted(result.metrics()), "refused": refused}))
""")


def test_fit_and_evaluate_find_the_built_in_heads_without_importing_cotprompt_tasks():
    proc = run_python(HEADS_CODE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["before"] is False  # nothing had registered the heads yet
    assert result["task"] == "retrieval"
    assert result["head"] == "RetrievalHead"
    assert {"i2t_recall@1", "t2i_recall@1"} <= set(result["metrics"])  # the retrieval head's
    assert "'classification', 'retrieval', 'vqa'" in result["refused"]


#: A head registered before the built-in ones are loaded is still asked before them.
CUSTOM_HEAD_CODE = textwrap.dedent("""
    import json, sys
    from cotprompt.pipeline import heads
    from cotprompt.data.retrieval import RetrievalDataset

    class MyRetrievalHead:
        kind = "retrieval"
        data_parallel = False
        def accepts(self, dataset): return isinstance(dataset, RetrievalDataset)
        prepare = plan = training_scope = training_record = evaluate = None

    heads.register_task_head(MyRetrievalHead())
    dataset = RetrievalDataset.__new__(RetrievalDataset)
    print(json.dumps({"found": type(heads.task_head_for(dataset)).__name__,
                      "kinds": [h.kind for h in heads.task_heads()]}))
""")


def test_a_head_registered_before_the_built_in_ones_load_keeps_precedence():
    proc = run_python(CUSTOM_HEAD_CODE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["found"] == "MyRetrievalHead"
    assert result["kinds"] == ["retrieval", "vqa", "retrieval", "classification"]


def test_subpackages_are_attributes_of_a_plain_import_cotprompt():
    code = textwrap.dedent("""
        import json, pkgutil, sys
        import cotprompt
        names = sorted(m.name for m in pkgutil.iter_modules(cotprompt.__path__)
                       if not m.name.startswith("_"))
        reached = {name: getattr(cotprompt, name).__name__ for name in names}
        print(json.dumps({"reached": reached, "listed": sorted(set(names) - set(dir(cotprompt))),
                          "few_shot": callable(cotprompt.data.few_shot)}))
    """)
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["reached"] == {name: f"cotprompt.{name}" for name in result["reached"]}
    assert "data" in result["reached"] and result["few_shot"]
    assert result["listed"] == []


#: Several threads asking the registry for the first time at once (a server's thread pool).
THREADED_HEADS_CODE = textwrap.dedent("""
    import json, threading
    from cotprompt.pipeline import heads
    found = {}
    barrier = threading.Barrier(4)
    def ask(n):
        barrier.wait()
        found[n] = sorted(h.kind for h in heads.task_heads())
    threads = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print(json.dumps(found))
""")


def test_threads_looking_up_heads_at_once_all_find_the_built_in_ones():
    proc = run_python(THREADED_HEADS_CODE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(json.loads(proc.stdout).values()) == [["classification", "retrieval", "vqa"]] * 4


def test_the_demo_default_model_is_the_backbones_demo_model():
    """The demo's parser spells the model out (so as not to import the backbones)."""
    assert demo.DEMO_MODEL == TINY_DEMO_MODEL


def test_startup_benchmark_quick_run_writes_its_report(tmp_path):
    report = tmp_path / "startup.md"
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_cli_startup.py", "--quick", "--output", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = report.read_text()
    assert "- command: `" in text and "- date: " in text and "- machine: " in text
    for row in ("eager import (before)", "cotprompt --version", "cotprompt --help",
                "cotprompt train --help"):
        assert f"| {row} |" in text, row
