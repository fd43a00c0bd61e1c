"""A command line that feels native: ``cotprompt train --set KEY=VALUE`` overrides, the
``tuner: cotpt`` shorthand in config files, and messages in command-line syntax."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from cotprompt.artifact.format import CONFIG_NAME
from cotprompt.backbones import TINY_MODEL
from cotprompt.cli._common import apply_overrides, parse_overrides
from cotprompt.cli.app import main
from cotprompt.errors import ConfigError
from cotprompt.pipeline.config_files import load_pipeline_config

TINY_BACKBONE = {"name": "open_clip", "config": {"model_name": TINY_MODEL, "pretrained": None}}
FAST_TRAINING = {"epochs": 3, "batch_size": 16, "optimizer": "adamw", "lr": 0.01,
                 "warmup_epochs": 0, "scheduler": "constant", "augment": False,
                 "progress": False}


def write_config(path: Path, **sections: Any) -> Path:
    config = {"backbone": TINY_BACKBONE, "tuner": {"name": "coop", "config": {"n_ctx": 4}},
              "training": FAST_TRAINING, "data": {"format": "digits", "shots": 2,
                                                  "image_size": 32}}
    config.update(sections)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_overrides_set_dotted_keys_with_yaml_values() -> None:
    data = {"tuner": "coop", "training": {"epochs": 5}}
    result = apply_overrides(data, parse_overrides([
        "training.epochs=2", "tuner.config.n_ctx=8", "data.classes=[a, b]", "data.verify=false",
        "training.epochs=3",  # a later one wins
    ]))
    assert result == {"tuner": {"name": "coop", "config": {"n_ctx": 8}},
                      "training": {"epochs": 3}, "data": {"classes": ["a", "b"], "verify": False}}
    assert data == {"tuner": "coop", "training": {"epochs": 5}}  # not changed


@pytest.mark.parametrize(("item", "problem"), [
    ("training.epochs", "expected KEY=VALUE"),
    ("=5", "expected KEY=VALUE"),
    ("training..epochs=5", "empty part"),
    ("training.epochs=[1", "cannot read the value as YAML"),
    ("training.epochs.x=1", "`training.epochs` is 5, not a section"),
])
def test_malformed_overrides_name_the_option(item: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="--set ") as info:
        apply_overrides({"training": {"epochs": 5}}, parse_overrides([item]))
    assert str(info.value).startswith(f"--set {item}: ")
    assert problem in str(info.value)


@pytest.mark.parametrize(("item", "problem"), [
    ("training.epochs=abc", "training.epochs"),
    ("tuner.config.n_ctx=abc", "n_ctx"),
    ("trainingg.epochs=1", "did you mean 'training'"),
    ("data.shots=0", "data.shots"),
])
def test_invalid_override_values_name_the_option(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, item: str, problem: str
) -> None:
    config = write_config(tmp_path / "config.yaml")
    code, out, err = run(capsys, "train", "--config", str(config), "--set", "training.epochs=1",
                         "--set", item)
    assert code == 2 and out == ""
    line = err.strip()
    assert line.startswith(f"error: --set {item}: ") and problem in line
    assert "Traceback" not in err


def test_overrides_do_not_bypass_caller_only_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.yaml")
    code, _, err = run(capsys, "train", "--config", str(config),
                       "--set", "backbone.config.allow_pickle=true")
    assert code == 2
    assert err.startswith("error: --set backbone.config.allow_pickle=true: ")
    assert "--allow-pickle" in err


def test_the_file_s_own_errors_are_not_blamed_on_overrides(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.yaml", training={"epochs": "abc"})
    code, _, err = run(capsys, "train", "--config", str(config), "--set", "data.shots=1")
    assert code == 2
    assert err.startswith(f"error: {config}: invalid pipeline config: training.epochs")


def test_train_applies_overrides_and_the_shorthand(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.yaml", tuner="coop", output="artifact")
    code, out, err = run(capsys, "train", "--config", str(config), "--json", "-q",
                         "--set", "training.epochs=1", "--set", "tuner.config.n_ctx=2",
                         "--set", "data.shots=1")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["epochs"] == 1 and summary["num_train_images"] == 10
    saved = json.loads((tmp_path / "artifact" / CONFIG_NAME).read_text())
    assert saved["tuner"]["config"]["n_ctx"] == 2


def test_config_files_accept_a_component_by_name(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("tuner: cotpt\naggregator: adaptive\n", encoding="utf-8")
    config = load_pipeline_config(path)
    assert (config.tuner.name, config.tuner.config) == ("cotpt", {})
    assert config.aggregator.name == "adaptive"


@pytest.mark.parametrize("training", ["{log_with: tensorbord}", "{num_workers: many}"])
def test_a_validator_s_message_in_a_config_file_has_no_pydantic_prefix(
        tmp_path: Path, training: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"training: {training}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_pipeline_config(path)
    assert "training." in str(caught.value)
    assert "Value error" not in str(caught.value)


def test_library_messages_are_printed_in_command_line_syntax() -> None:
    from cotprompt.backbones.weights_source import _PICKLE_HINT
    from cotprompt.cli._common.failures import cli_syntax

    assert cli_syntax("(pass allow_fewer=True to take all)") == "(pass --allow-fewer to take all)"
    assert cli_syntax(_PICKLE_HINT).endswith("opt in yourself: --allow-pickle")
    assert cli_syntax("only the caller may set (in code, or with --allow-pickle on the command "
                      "line)") == "only the caller may set (with --allow-pickle)"
    assert cli_syntax("unless trust_remote_code=True") == "unless --trust-remote-code"
    assert cli_syntax("other_option=True") == "other_option=True"  # no such flag


def test_too_few_images_suggest_the_allow_fewer_flag(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.yaml")
    code, _, err = run(capsys, "train", "--config", str(config), "--set", "data.shots=1000")
    assert code == 2
    assert "--allow-fewer" in err and "allow_fewer=True" not in err
