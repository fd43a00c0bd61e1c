"""Progress bars and log lines (issue 15, "Plots and progress"): the command line's log records
are written around tqdm bars, never inside one; the per-epoch line is formatted; ``TQDM_DISABLE``
turns cotprompt's bars off and ``-q`` turns off huggingface_hub's too."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from golden import cases
from huggingface_hub.utils import are_progress_bars_disabled

from cotprompt.cli import main
from cotprompt.cli._common import configure_logging
from cotprompt.training.loop import epoch_summary, progress_disabled

EPOCH_LINE = re.compile(
    r"^epoch (\d+)/(\d+): loss [-\d.e+]+, lr \d\.\d{2}e[-+]\d{2}(, \w+ [-\d.e+]+)*, \d+\.\d s$"
)


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """Leave the root logger, ``TQDM_DISABLE`` and huggingface_hub's bars as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    package = logging.getLogger("cotprompt")
    package_level = package.level
    yield
    configure_logging()  # undoes what a quiet call turned off
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    package.setLevel(package_level)


def rendered_lines(text: str) -> list[str]:
    """``text`` as a terminal shows it: each ``\\r`` returns to the start of the line, and what
    follows overwrites what was there."""
    lines = []
    for raw in text.split("\n"):
        line: list[str] = []
        column = 0
        for char in raw:
            if char == "\r":
                column = 0
                continue
            if column < len(line):
                line[column] = char
            else:
                line.append(char)
            column += 1
        lines.append("".join(line).rstrip())
    return lines


def fit(training: dict[str, Any], *, validate: bool = False) -> tuple[Any, str]:
    """Train the tiny CoT-PT case with ``training`` options; the result and what went to
    stderr (the bar and, where the CLI's logging is configured, the log records)."""
    pipeline = cases.build("cotpt")
    data = cases.dataset("cotpt")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        configure_logging()  # after the redirect, as the CLI does: records go to ``err`` too
        if validate:
            pipeline.set_classes(cases.CLASSES)
            result = pipeline.fit(data, val=cases.dataset("cotpt"), training=training)
        else:
            result = pipeline.fit(data, training=training)
    return result, err.getvalue()


def test_log_lines_never_land_inside_the_bar(cli_logging, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    _, text = fit({"progress": True, "log_every": 1})
    lines = rendered_lines(text)
    records = [line for line in lines if "INFO cotprompt" in line]
    assert any(line.startswith("INFO cotprompt.training.trainer: epoch 2/2: ") for line in records)
    assert any(line.startswith("INFO cotprompt.training.trainer: step 1, epoch 1/2: ")
               for line in records)
    assert any(line.startswith("training: ") and "|" in line for line in lines), text
    for line in lines:
        has_bar = "training:" in line or "it/s]" in line or "s/it]" in line
        assert not (has_bar and "INFO" in line), repr(line)
        assert "INFO" not in line or line.startswith("INFO "), repr(line)


def test_the_epoch_line_is_formatted_and_the_history_is_not(cli_logging, caplog):
    with caplog.at_level(logging.INFO, logger="cotprompt"):
        result, _ = fit({"progress": False}, validate=True)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 2
    for number, line in enumerate(lines, start=1):
        match = EPOCH_LINE.match(line)
        assert match, line
        assert match.groups()[:2] == (str(number), "2")
        assert "val_accuracy " in line
        assert not re.search(r"\d\.\d{5,}", line), line  # no 17-digit floats
    record = result.history[0]
    assert isinstance(record["loss"], float) and isinstance(record["seconds"], float)
    assert set(record) >= {"epoch", "loss", "lr", "seconds"}


def test_epoch_summary():
    record = {"epoch": 3, "loss": 0.696912345678, "lr": 1e-05, "seconds": 2.04321,
              "val_accuracy": 81.25000000001}
    assert epoch_summary(record, 10) == (
        "epoch 3/10: loss 0.6969, lr 1.00e-05, val_accuracy 81.25, 2.0 s")
    assert record["loss"] == 0.696912345678  # unchanged
    assert epoch_summary({"epoch": 1, "loss": float("nan"), "lr": 0.002, "seconds": 0.0}, 1) == (
        "epoch 1/1: loss nan, lr 2.00e-03, 0.0 s")


@pytest.mark.parametrize("value", ["1", "true", "True"])
def test_tqdm_disable_turns_the_training_bar_off(cli_logging, monkeypatch, value):
    monkeypatch.setenv("TQDM_DISABLE", value)
    assert progress_disabled()
    _, text = fit({"progress": True})
    assert "training:" not in text and "%|" not in text, text
    assert "INFO cotprompt.training.trainer: epoch 2/2: " in text  # the log lines stay


def test_tqdm_disable_unset_or_zero_leaves_bars_on(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert not progress_disabled()
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert not progress_disabled()


def test_quiet_turns_off_hub_and_tqdm_bars_and_a_later_call_turns_them_back_on(
    cli_logging, monkeypatch
):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    if are_progress_bars_disabled():
        pytest.skip("huggingface_hub's bars are turned off by this environment")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["plugins", "-q"]) == 0
        assert are_progress_bars_disabled()
        assert os.environ.get("TQDM_DISABLE") == "1" and progress_disabled()
        assert main(["plugins"]) == 0
    assert not are_progress_bars_disabled()
    assert "TQDM_DISABLE" not in os.environ


def test_quiet_leaves_a_users_own_tqdm_disable(cli_logging, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    configure_logging(quiet=True)
    configure_logging()
    assert os.environ.get("TQDM_DISABLE") == "1"
