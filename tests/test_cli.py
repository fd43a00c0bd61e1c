"""The ``cotprompt`` command line, run in-process through ``main()`` and, for a few checks, as a
real ``python -m cotprompt`` subprocess.

Training uses the small random-weight backbone (no pretrained weights can be downloaded here) and
the shared CIFAR-10 sample at ``../shared/data/cifar10-mini`` (skipped where it is absent).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cotprompt.artifact.format import CONFIG_NAME, WEIGHTS_NAME
from cotprompt.backbones import TINY_MODEL
from cotprompt.cli.app import main
from cotprompt.data.spec import DataSpec, build_datasets
from cotprompt.errors import ConfigError, DataError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR = SHARED_DATA / "cifar10-mini"
REPO_ROOT = Path(__file__).resolve().parents[1]

TINY_BACKBONE = {"name": "open_clip", "config": {"model_name": TINY_MODEL, "pretrained": None}}
FAST_TRAINING = {
    "epochs": 2,
    "batch_size": 16,
    "optimizer": "adamw",
    "lr": 0.01,
    "warmup_epochs": 0,
    "weight_decay": 0.0,
    "scheduler": "constant",
    "augment": False,
    "progress": False,
    "checkpoint_every": 1,
}


@pytest.fixture(scope="module")
def cifar() -> Path:
    if not CIFAR.is_dir():
        pytest.skip(f"shared test data not found at {CIFAR}")
    return CIFAR


@pytest.fixture(scope="module")
def mini(cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smaller copy of cifar10-mini: 4 train and 10 test images of each of the 10 classes."""
    root = tmp_path_factory.mktemp("cifar")
    for split, count in (("train", 4), ("test", 10)):
        for folder in sorted((cifar / split).iterdir()):
            (root / split / folder.name).mkdir(parents=True)
            for image in sorted(folder.iterdir())[:count]:
                shutil.copy(image, root / split / folder.name / image.name)
    return root


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``main(args)`` in-process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def run_subprocess(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cotprompt", *args],
        capture_output=True, text=True, timeout=120, cwd=cwd or REPO_ROOT,
    )


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def train_config(data: dict[str, Any], **sections: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "backbone": TINY_BACKBONE,
        "tuner": {"name": "coop", "config": {"n_ctx": 4}},
        "training": FAST_TRAINING,
        "data": data,
    }
    config.update(sections)
    return config


@pytest.fixture(scope="module")
def trained(mini: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One ``cotprompt train`` run (coop, 2 shots, 2 epochs) and its JSON summary."""
    folder = tmp_path_factory.mktemp("train")
    data = {"format": "folder", "train": str(mini / "train"), "test": str(mini / "test"),
            "shots": 2, "seed": 1}
    config = write_config(folder / "config.yaml", train_config(data, output="artifact"))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["train", "--config", str(config), "--json", "-q"])
    assert code == 0
    summary = json.loads(stdout.getvalue())
    return {"config": config, "output": folder / "artifact", "summary": summary}


# -- plugins ----------------------------------------------------------------------------------


def test_plugins_json_lists_builtins_in_a_subprocess() -> None:
    proc = run_subprocess("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    components = json.loads(proc.stdout)
    assert isinstance(components, list)
    for entry in components:
        assert {"kind", "name", "package"} <= set(entry)
    found = {(c["kind"], c["name"]): c["package"] for c in components}
    for key in [("backbone", "open_clip"), ("generator", "rule-based"), ("tuner", "coop"),
                ("tuner", "cocoop"), ("tuner", "cotpt"), ("aggregator", "mean"),
                ("aggregator", "adaptive"), ("aggregator", "attention")]:
        assert found.get(key) == "cotprompt", key


def test_plugins_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0
    header, rule, *rows = out.splitlines()
    assert header.split() == ["kind", "name", "package", "version"]
    assert set(rule) <= {"-", " "}
    assert any(row.split()[:3] == ["tuner", "cotpt", "cotprompt"] for row in rows)


def test_plugins_reports_failures_on_stderr(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cotprompt import hookimpl, plugins

    class BrokenPlugin:
        @hookimpl
        def register_tuners(self, register: Any) -> None:
            raise ImportError("nope")

    registry = plugins.Registry(extra_plugins=[BrokenPlugin()])
    monkeypatch.setattr("cotprompt.plugins.registry.get_registry", lambda: registry)
    code, out, err = run_cli(capsys, "plugins", "--json")
    assert code == 0
    components = json.loads(out)  # stdout stays a JSON list of the working components
    assert isinstance(components, list)
    assert ("tuner", "coop") in {(c["kind"], c["name"]) for c in components}
    [failure] = registry.failures
    assert f"warning: plugin {failure.name!r}" in err and "failed to load" in err
    assert "ImportError: nope" in err


# -- train, eval, predict ---------------------------------------------------------------------


def test_train_saves_an_artifact_with_test_metrics(trained: dict[str, Any]) -> None:
    output = trained["output"]  # the config's `output`, relative to the config file
    assert (output / CONFIG_NAME).is_file() and (output / WEIGHTS_NAME).is_file()
    config = json.loads((output / CONFIG_NAME).read_text())
    assert config["tuner"]["name"] == "coop"
    assert config["training_data"]["num_images"] == 20  # 2 shots x 10 classes
    assert set(config["metrics"]) == {"test"}  # the zero-shot baseline is not this model's
    assert 0 <= config["metrics"]["test"]["accuracy"] <= 100
    summary = trained["summary"]
    assert summary["output"] == str(output) and summary["num_train_images"] == 20
    assert summary["metrics"] == config["metrics"]
    assert 0 <= summary["zero_shot_test_accuracy"] <= 100
    assert list((output / "checkpoints").iterdir())  # checkpoint_every puts them beside it
    assert "## Evaluation" in (output / "README.md").read_text()


def test_train_resume_latest_continues_from_the_last_checkpoint(
    trained: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    output = tmp_path / "resumed"
    shutil.copytree(trained["output"], output)
    code, out, err = run_cli(capsys, "train", "--config", str(trained["config"]), "--output",
                             str(output), "--resume", "latest", "--json", "-q")
    assert code == 0, err
    summary = json.loads(out)
    assert len(json.loads((output / CONFIG_NAME).read_text())["chain"]["labels"]) == 10
    assert summary["output"] == str(output)
    original = json.loads((trained["output"] / CONFIG_NAME).read_text())["metrics"]["test"]
    assert summary["metrics"]["test"]["accuracy"] == pytest.approx(original["accuracy"])


def test_eval_json_matches_the_recorded_test_accuracy(
    trained: dict[str, Any], mini: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "eval", str(trained["output"]), "--data",
                             str(mini / "test"), "--zero-shot", "--json", "-q")
    assert code == 0, err
    report = json.loads(out)
    assert report["num_images"] == 100 and report["num_classes"] == 10
    recorded = json.loads((trained["output"] / CONFIG_NAME).read_text())["metrics"]
    assert report["results"]["tuned"]["accuracy"] == pytest.approx(recorded["test"]["accuracy"])
    assert report["results"]["zero_shot"]["accuracy"] == pytest.approx(
        trained["summary"]["zero_shot_test_accuracy"])
    assert set(report["results"]["tuned"]["per_class"]) == {
        p.name for p in (mini / "test").iterdir()}

    code, out, _ = run_cli(capsys, "eval", str(trained["output"]), "--data",
                           str(mini / "test"), "-q")
    assert code == 0
    assert out.splitlines()[1].split()[:2] == ["classifier", "accuracy"]
    assert f"{report['results']['tuned']['accuracy']:.2f}" in out


def test_eval_applies_unified_prompts_to_other_classes(
    trained: dict[str, Any], mini: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    subset = tmp_path / "three"
    for name in ("cat", "dog", "ship"):
        (subset / name).mkdir(parents=True)
        for image in sorted((mini / "test" / name).iterdir())[:4]:
            shutil.copy(image, subset / name / image.name)
    code, out, err = run_cli(capsys, "eval", str(trained["output"]), "--data", str(subset),
                             "--json", "-q")
    assert code == 0, err
    report = json.loads(out)
    assert report["num_classes"] == 3 and report["num_images"] == 12
    assert set(report["results"]["tuned"]["per_class"]) == {"cat", "dog", "ship"}


def test_eval_refuses_class_specific_prompts_on_other_classes(
    mini: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_backbone: Any
) -> None:
    from cotprompt import CoTPipeline

    pipeline = CoTPipeline.create(backbone=tiny_backbone, tuner="coop",
                                  tuner_config={"n_ctx": 2, "class_specific": True},
                                  class_names=["cat", "dog"])
    pipeline.save_pretrained(tmp_path / "csc")
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "csc"), "--data", str(mini / "test"),
                           "-q")
    assert code == 2
    [line] = error_lines(err)
    assert "class-specific" in line and "Traceback" not in err


def test_predict_json_and_table(
    trained: dict[str, Any], mini: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = [str(sorted((mini / "test" / name).iterdir())[0]) for name in ("cat", "ship")]
    code, out, err = run_cli(capsys, "predict", str(trained["output"]), *images, "--top-k", "3",
                             "--json", "-q")
    assert code == 0, err
    predictions = json.loads(out)
    labels = sorted(p.name for p in (mini / "test").iterdir())
    assert [p["image"] for p in predictions] == images
    for prediction in predictions:
        assert prediction["label"] in labels
        assert len(prediction["top_k"]) == 3
        assert prediction["top_k"][0] == {"label": prediction["label"],
                                          "score": prediction["score"]}
        scores = [entry["score"] for entry in prediction["top_k"]]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6

    # a folder stands for its images
    folder = str(mini / "test" / "cat")
    code, out, _ = run_cli(capsys, "predict", str(trained["output"]), folder, "--top-k", "1", "-q")
    assert code == 0
    assert len(out.splitlines()) == 2 + 10  # header, rule, one row per image


# -- demo -------------------------------------------------------------------------------------


def test_demo_trains_all_methods_saves_and_reloads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run_cli(capsys, "demo", "--epochs", "1", "--shots", "2", "--test-images",
                             "40", "--output", str(tmp_path), "--json", "-q")
    assert code == 0, err
    summary = json.loads(out)
    assert [r["method"] for r in summary["results"]] == ["coop", "cocoop", "cotpt"]
    assert summary["num_train_images"] == 20 and summary["num_test_images"] == 40
    for row in summary["results"]:
        assert row["epochs"] == 1
        assert 0 <= row["zero_shot_accuracy"] <= 100 and 0 <= row["tuned_accuracy"] <= 100
        assert (Path(row["artifact"]) / CONFIG_NAME).is_file()
    assert summary["reload"]["method"] == "cotpt" and summary["reload"]["match"] is True
    assert len(summary["reload"]["predictions"]) == 6


def test_demo_table_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "demo", "--methods", "coop", "--epochs", "2", "--shots",
                             "1", "--test-images", "20", "--output", str(tmp_path), "-q")
    assert code == 0, err
    assert "zero-shot acc %" in out and "tuned acc %" in out
    assert any(line.split()[:2] == ["coop", "2"] for line in out.splitlines())
    assert "predictions equal the in-memory ones" in out


def test_demo_unknown_method(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "demo", "--methods", "coop,cocop")
    assert code == 2
    [line] = error_lines(err)
    assert "'cocop'" in line and "did you mean 'cocoop'" in line


# -- bad inputs -------------------------------------------------------------------------------


def test_unknown_tuner_names_close_matches_in_a_subprocess(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", train_config(
        {"format": "digits", "shots": 1}, tuner={"name": "cotp"}))
    proc = run_subprocess("train", "--config", str(config))
    assert proc.returncode == 2
    [line] = error_lines(proc.stderr)
    assert "unknown tuner 'cotp'" in line and "'cotpt'" in line
    assert "Traceback" not in proc.stderr


def test_debug_prints_the_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", train_config(
        {"format": "digits"}, tuner={"name": "coopp"}))
    code, _, err = run_cli(capsys, "train", "--config", str(config), "--debug")
    assert code == 2
    assert "Traceback" in err and "UnknownComponentError" in err
    assert "did you mean" in error_lines(err)[0].lower()


def test_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    code, out, err = run_cli(capsys, "train", "--config", str(missing))
    assert code == 2 and out == ""
    [line] = error_lines(err)
    assert str(missing) in line and "does not exist" in line


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"foo": 1}, "foo"),
        ({"tuner": {"name": "coop", "config": {"n_ctxx": 4}}}, "n_ctxx: unknown option"),
        ({"training": {"epoch": 3}}, "training.epoch"),
        ({"data": {"format": "digits", "shot": 2}}, "data.shot: unknown option"),
        ({"data": {"format": "folder"}}, "needs `train`"),
        ({"data": None}, "no `data` section"),
    ],
)
def test_bad_config_options_are_rejected(
    change: dict[str, Any], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = train_config({"format": "digits"})
    config.update(change)
    if config["data"] is None:
        del config["data"]
    code, _, err = run_cli(capsys, "train", "--config",
                           str(write_config(tmp_path / "c.yaml", config)))
    assert code == 2
    [line] = error_lines(err)
    assert expected in line


def test_malformed_yaml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("tuner: [unclosed\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "train", "--config", str(path))
    assert code == 2
    assert "cannot parse" in error_lines(err)[0]


def test_predict_missing_image_names_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-image.jpg"
    code, out, err = run_cli(capsys, "predict", str(tmp_path), str(missing))
    assert code == 2 and out == ""
    [line] = error_lines(err)
    assert str(missing) in line and "do not exist" in line


def test_predict_corrupt_image_names_the_file(
    trained: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"this is not a JPEG")
    code, _, err = run_cli(capsys, "predict", str(trained["output"]), str(corrupt), "-q")
    assert code == 2
    [line] = error_lines(err)
    assert str(corrupt) in line and "not a recognised image format" in line


def test_train_reports_a_corrupt_image_before_training(
    cifar: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = tmp_path / "data"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for image in sorted((cifar / "train" / name).iterdir())[:2]:
            shutil.copy(image, root / name / image.name)
    truncated = root / "dog" / "truncated.jpg"
    truncated.write_bytes((root / "dog" / "0000.jpg").read_bytes()[:100])
    config = write_config(tmp_path / "c.yaml", train_config(
        {"format": "folder", "train": "data", "shots": None}))  # relative to the config
    code, _, err = run_cli(capsys, "train", "--config", str(config), "-q")
    assert code == 2
    [line] = error_lines(err)
    assert str(truncated) in line and "unreadable" in line


def test_eval_missing_dataset_folder(trained: dict[str, Any],
                                     capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "eval", str(trained["output"]), "--data",
                           str(tmp_path / "absent"))
    assert code == 2
    assert "does not exist" in error_lines(err)[0]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "train")[0] == 2  # --config is required
    assert run_cli(capsys, "no-such-command")[0] == 2
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and "cotprompt" in out


# -- the data section from Python -------------------------------------------------------------


def test_build_datasets_base_new_and_shots(cifar: Path) -> None:
    spec = DataSpec(format="folder", train=str(cifar / "train"), test=str(cifar / "test"),
                    shots=3, classes="new", verify=False)
    datasets = build_datasets(spec)
    assert set(datasets) == {"train", "test"}
    assert datasets["train"].class_names == ["dog", "frog", "horse", "ship", "truck"]
    assert len(datasets["train"]) == 15
    assert datasets["test"].class_names == datasets["train"].class_names
    assert len(datasets["test"]) == 500


def test_build_datasets_csv_and_mismatched_splits(cifar: Path, tmp_path: Path) -> None:
    rows = ["path,label"] + [
        f"{cifar / 'train' / name / '0000.jpg'},{name}" for name in ("cat", "dog")]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "test.csv").write_text("\n".join(rows[:2]) + "\n")
    datasets = build_datasets({"format": "csv", "train": "train.csv", "test": "test.csv",
                               "shots": 1}, base_dir=tmp_path)
    assert datasets["train"].class_names == ["cat", "dog"]
    assert datasets["test"].class_names == ["cat", "dog"]  # the train split's classes
    assert len(datasets["test"]) == 1

    with pytest.raises(ConfigError, match=r"data\.shots"):
        build_datasets({"format": "csv", "train": "train.csv", "shots": 0}, base_dir=tmp_path)
    (cat := tmp_path / "f" / "cat").mkdir(parents=True)
    shutil.copy(cifar / "train" / "cat" / "0000.jpg", cat / "a.jpg")
    (other := tmp_path / "g" / "horse").mkdir(parents=True)
    shutil.copy(cifar / "train" / "cat" / "0000.jpg", other / "a.jpg")
    with pytest.raises(DataError, match="classes differ"):
        build_datasets({"format": "folder", "train": "f", "test": "g", "shots": None},
                       base_dir=tmp_path)


def test_demo_default_training_beats_zero_shot(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    """The default demo backbone (random weights, average-pooled patches) shows learning."""
    code, out, err = run_cli(capsys, "demo", "--methods", "coop", "--output", str(tmp_path),
                             "--json", "-q")
    assert code == 0, err
    [row] = json.loads(out)["results"]
    assert row["epochs"] == 150
    assert row["tuned_accuracy"] >= max(2 * row["zero_shot_accuracy"], 20), row


# -- structure of the command line (issue 13) -------------------------------------------------

CLI_PACKAGE = REPO_ROOT / "cotprompt" / "cli"


def test_logger_names_are_kept(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The command line logs as ``cotprompt.cli`` (the task commands' logger stays
    ``cotprompt.cli_tasks``), the names users filter on and read in the log lines."""
    from cotprompt.cli import _common, demo, pipeline, tasks

    assert _common.logger.name == "cotprompt.cli"
    assert pipeline.logger is _common.logger and demo.logger is _common.logger
    assert tasks.logger.name == "cotprompt.cli_tasks"
    code, _, err = run_cli(capsys, "demo", "--methods", "coop", "--epochs", "1", "--shots", "1",
                           "--test-images", "10", "--output", str(tmp_path))
    assert code == 0, err
    assert "INFO cotprompt.cli: building backbone" in err


def test_every_command_module_follows_the_one_convention() -> None:
    """``app`` builds the parser from the command modules alone; each exposes
    ``add_commands(subparsers, common)``, and the commands, in help order, are theirs."""
    import inspect

    from cotprompt.cli import app

    commands: list[str] = []
    for module in app.COMMAND_MODULES:
        assert list(inspect.signature(module.add_commands).parameters) == ["subparsers",
                                                                            "common"]
        parser = argparse.ArgumentParser(prog="cotprompt")
        module.add_commands(parser.add_subparsers(), argparse.ArgumentParser(add_help=False))
        commands += list(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert commands == ["train", "eval", "predict", "plugins", "demo", "push", "pull",
                        "eval-retrieval", "eval-vqa", "sweep", "report", "env", "interpret",
                        "completion"]


def test_cli_modules_share_only_public_names_through_common() -> None:
    """A command module imports from the cli only ``cotprompt.cli._common`` (never one of its
    modules), no private name crosses a file, and no module is longer than 500 lines."""
    import ast

    entry_modules = {"__init__.py", "app.py"}  # they import the command modules
    for path in sorted(CLI_PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        assert len(source.splitlines()) <= 500, path
        in_common = path.parent.name == "_common"
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(
                    "cotprompt"):
                continue
            private = [a.name for a in node.names
                       if a.name.startswith("_") and not a.name.startswith("__")]
            assert not private, f"{path.name}: from {node.module} import {private}"
            if node.module.startswith("cotprompt.cli") and not in_common:
                if path.name in entry_modules:
                    continue
                assert node.module == "cotprompt.cli._common", f"{path.name}: {node.module}"


def test_table_cells_from_files_cannot_drive_the_terminal() -> None:
    from cotprompt.cli._common import table

    label = "cat\x1b[2J\x1b[31m\nFAKE ROW\u202e"  # clear screen, red, a new line, RTL override
    text = table(["label", "score"], [[label, "0.9"]], [False, True])
    assert "\x1b" not in text and "\u202e" not in text
    assert len(text.splitlines()) == 3  # header, rule, one row: no fake line
    assert "cat\\x1b[2J\\x1b[31m\\nFAKE ROW\\u202e" in text
    assert table(["label"], [["Abyssinian é"]], [False]).splitlines()[2] == "Abyssinian é"
    # the joiners of scripts and emoji are text; bidirectional isolates are escaped
    for honest in ("\u0645\u06cc\u200c\u062e", "\U0001F469\u200d\U0001F4BB"):
        assert table(["label"], [[honest]], [False]).splitlines()[2] == honest
    assert table(["label"], [["a\u2067b"]], [False]).splitlines()[2] == "a\\u2067b"
