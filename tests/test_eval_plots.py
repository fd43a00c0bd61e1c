"""PNG plots of an evaluation and a training run (:mod:`cotprompt.evaluation.plots`) and the
``--plots`` options of ``cotprompt eval`` and ``cotprompt train``."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cotprompt.backbones import TINY_MODEL
from cotprompt.cli.app import main
from cotprompt.errors import ConfigError, DataError
from cotprompt.evaluation import EvaluationResult, confusion_matrix
from cotprompt.evaluation.plots import (
    plot_confusion_matrix,
    plot_per_class_accuracy,
    plot_training_curves,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = ["cat", "dog", "ship"]
PREDS = [0, 1, 1, 2, 2, 0, 1]
LABELS = [0, 1, 2, 2, 2, 0, 0]
HISTORY = [{"epoch": 1, "loss": 1.5, "lr": 0.01, "seconds": 0.1, "val_accuracy": 40.0},
           {"epoch": 2, "loss": 1.1, "lr": 0.005, "seconds": 0.1, "val_accuracy": 55.0}]


def assert_png(path: Path) -> bytes:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    assert b"Software" not in data and b"matplotlib" not in data.lower()
    return data


@pytest.fixture
def result() -> EvaluationResult:
    return EvaluationResult.from_predictions(PREDS, LABELS, CLASSES)


def test_result_keeps_its_confusion_matrix_outside_to_dict(result: EvaluationResult) -> None:
    assert result.confusion is not None
    assert result.confusion.tolist() == confusion_matrix(PREDS, LABELS, 3).tolist()
    assert set(result.to_dict()) == {"accuracy", "mean_per_class_accuracy", "per_class",
                                     "num_samples"}
    assert result == EvaluationResult(**result.to_dict())  # the matrix is not compared


def test_plots_are_pngs_with_the_same_bytes_every_time(
    result: EvaluationResult, tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        plot_confusion_matrix(result, CLASSES, folder / "confusion.png")
        plot_confusion_matrix(confusion_matrix(PREDS, LABELS, 3), CLASSES,
                              folder / "matrix.png")
        plot_per_class_accuracy(result, folder / "per_class.png")
        plot_training_curves(HISTORY, folder / "curves.png")
        plot_training_curves([{k: v for k, v in r.items() if k != "val_accuracy"}
                              for r in HISTORY], folder / "curves_no_val.png")
    for name in ("confusion", "matrix", "per_class", "curves", "curves_no_val"):
        assert assert_png(first / f"{name}.png") == assert_png(second / f"{name}.png")
    assert (first / "confusion.png").read_bytes() == (first / "matrix.png").read_bytes()


def test_confusion_matrix_of_many_classes(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    names = [f"class {i}" for i in range(100)]
    labels = rng.integers(0, 100, 500)
    plot_confusion_matrix(confusion_matrix(rng.integers(0, 100, 500), labels, 100), names,
                          tmp_path / "many.png")
    assert_png(tmp_path / "many.png")


def test_bad_inputs(result: EvaluationResult, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with pytest.raises(DataError, match=r"\[2, 2\]"):
        plot_confusion_matrix(np.zeros((3, 3)), ["a", "b"], tmp_path / "x.png")
    with pytest.raises(DataError, match="no confusion matrix"):
        plot_confusion_matrix(EvaluationResult(**result.to_dict()), CLASSES, tmp_path / "x.png")
    with pytest.raises(DataError, match="empty"):
        plot_training_curves([], tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_without_matplotlib_say_how_to_install_it(
    result: EvaluationResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    for draw in (lambda: plot_confusion_matrix(result, CLASSES, tmp_path / "c.png"),
                 lambda: plot_per_class_accuracy(result, tmp_path / "p.png"),
                 lambda: plot_training_curves(HISTORY, tmp_path / "t.png")):
        with pytest.raises(ConfigError, match=r'pip install "matplotlib>=3.7"'):
            draw()
    # the command line fails before loading anything
    code = main(["eval", str(tmp_path / "missing"), "--digits", "--plots", str(tmp_path / "p"),
                 "-q"])
    assert code != 0
    assert 'pip install "matplotlib>=3.7"' in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def digits_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """``cotprompt train --plots`` of coop on 1-shot digits for 2 epochs (tiny random backbone)."""
    pytest.importorskip("matplotlib")
    folder = tmp_path_factory.mktemp("digits")
    config = {
        "backbone": {"name": "open_clip",
                     "config": {"model_name": TINY_MODEL, "pretrained": None}},
        "tuner": {"name": "coop", "config": {"n_ctx": 4}},
        "training": {"epochs": 2, "batch_size": 16, "optimizer": "adamw", "lr": 0.01,
                     "warmup_epochs": 0, "weight_decay": 0.0, "scheduler": "constant",
                     "augment": False, "progress": False},
        "data": {"format": "digits", "shots": 1},
        "output": "artifact",
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["train", "--config", str(path), "--plots", "--json", "-q"])
    assert code == 0
    return folder / "artifact", json.loads(stdout.getvalue())


def test_train_writes_plots_into_the_artifact(digits_artifact: tuple[Path, dict]) -> None:
    artifact, summary = digits_artifact
    plots = artifact / "plots"
    assert summary["plots"] == str(plots)
    names = {p.name for p in plots.iterdir()}
    assert "training_curves.png" in names
    assert names == {"training_curves.png", "tuned_confusion_matrix.png",
                     "tuned_per_class_accuracy.png", "zero_shot_confusion_matrix.png",
                     "zero_shot_per_class_accuracy.png"}
    for name in names:
        assert_png(plots / name)


def test_eval_plots_through_the_cli(
    digits_artifact: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact, _ = digits_artifact
    outputs = []
    for run in ("first", "second"):
        capsys.readouterr()
        code = main(["eval", str(artifact), "--digits", "--zero-shot", "--json", "-q",
                     "--plots", str(tmp_path / run)])
        out, err = capsys.readouterr()
        assert code == 0, err
        outputs.append(out)
    report = json.loads(outputs[0])
    assert set(report["results"]["tuned"]) == {"accuracy", "mean_per_class_accuracy",
                                               "per_class", "num_samples"}
    assert outputs[0] == outputs[1]
    names = sorted(p.name for p in (tmp_path / "first").iterdir())
    assert names == ["tuned_confusion_matrix.png", "tuned_per_class_accuracy.png",
                     "zero_shot_confusion_matrix.png", "zero_shot_per_class_accuracy.png"]
    for name in names:
        assert assert_png(tmp_path / "first" / name) == (tmp_path / "second" / name).read_bytes()
