"""Behaviour pinned before the package was restructured (issue 13): saved artifacts load with the
same scores and save to the same bytes, a fixed-seed two-epoch run has the same history and
weights, a checkpoint written before resumes to the same result, and the CLI's help texts and
``--json`` outputs are unchanged.

The golden files are written by ``python tests/golden/make_golden.py`` (see its docstring: only
on purpose, with a CHANGELOG entry). Floats are compared to 1e-5 relative rather than bit for
bit: the files travel between machines whose CPUs may round differently; everything that is not
a float computed on the CPU (bytes of a re-save, keys, texts) is compared exactly.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from golden.cases import (
    CASES,
    CLI_HELP_COMMANDS,
    cli_json_outputs,
    cli_output,
    dataset,
    feature_cache_namespaces,
    history_record,
    image_folder,
    scores,
    train_case,
)
from safetensors.torch import load_file

from cotprompt import CoTPipeline

GOLDEN = Path(__file__).parent / "golden" / "data"
ARTIFACT_FILES = ("cotprompt_config.json", "prompt_weights.safetensors", "README.md")


def assert_close_tree(actual: Any, expected: Any, where: str = "") -> None:
    """Equal structure, keys and strings; floats to 1e-5 relative."""
    if isinstance(expected, float) or isinstance(actual, float):
        assert math.isclose(actual, expected, rel_tol=1e-5, abs_tol=1e-6), (where, actual, expected)
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and list(actual) == list(expected), where
        for key in expected:
            assert_close_tree(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for n, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_close_tree(a, e, f"{where}[{n}]")
    else:
        assert actual == expected, (where, actual, expected)


def copy_artifact(name: str, tmp_path: Path) -> Path:
    target = tmp_path / f"{name}-artifact"
    shutil.copytree(GOLDEN / f"{name}-artifact", target)
    return target


@pytest.mark.parametrize("name", CASES)
def test_golden_artifact_loads_with_the_same_scores_and_saves_the_same_bytes(name, tmp_path):
    pipeline = CoTPipeline.from_pretrained(copy_artifact(name, tmp_path), device="cpu")
    expected = load_file(str(GOLDEN / f"{name}-logits.safetensors"))
    actual = scores(name.removesuffix("-val"), pipeline)
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=1e-5, atol=1e-6)
    pipeline.save_pretrained(tmp_path / "again")
    for file in ARTIFACT_FILES:
        assert (tmp_path / "again" / file).read_bytes() == \
            (GOLDEN / f"{name}-artifact" / file).read_bytes(), file


@pytest.fixture(scope="module")
def histories() -> dict[str, Any]:
    return json.loads((GOLDEN / "histories.json").read_text())


def assert_same_weights(pipeline: CoTPipeline, name: str) -> None:
    saved = load_file(str(GOLDEN / f"{name}-artifact" / "prompt_weights.safetensors"))
    state = pipeline.model.trainable_state()
    assert sorted(state) == sorted(saved) and saved
    for key, value in saved.items():
        torch.testing.assert_close(state[key].detach().cpu(), value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_fixed_seed_training_has_the_golden_history_and_weights(name, histories, tmp_path):
    result, pipeline, _ = train_case(name, tmp_path / "checkpoints")
    assert_close_tree(history_record(result), histories[name])
    assert_same_weights(pipeline, name)
    saved = json.loads(pipeline.save_pretrained(tmp_path / "artifact").joinpath(
        "cotprompt_config.json").read_text())
    golden = json.loads((GOLDEN / f"{name}-artifact" / "cotprompt_config.json").read_text())
    # checksums: of weights computed on this CPU, of a history holding wall times
    saved, golden = (
        {k: v for k, v in config.items() if k not in ("weights", "history")}
        for config in (saved, golden))
    # the one intended change since the golden files were written: training loads images in
    # worker processes by default (issue 15), and the saved options say so
    assert (saved["training"]["num_workers"], golden["training"]["num_workers"]) == ("auto", 0)
    saved["training"]["num_workers"] = 0
    assert_close_tree(saved, golden)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == \
        sorted(p.name for p in (GOLDEN / f"{name}-checkpoints").iterdir())


@pytest.mark.parametrize("name", CASES)
def test_a_checkpoint_written_before_resumes_to_the_golden_run(name, histories, tmp_path):
    from golden.cases import VALIDATED, bind, build

    folder = tmp_path / "checkpoints"
    shutil.copytree(GOLDEN / f"{name}-checkpoints", folder)
    first = min(folder.iterdir(), key=lambda p: int(p.name.split("-")[1]))
    for later in folder.iterdir():
        if later != first:
            shutil.rmtree(later)
    base = name.removesuffix("-val")
    pipeline = build(base)
    bind(name, pipeline)
    options: dict[str, Any] = {"checkpoint_dir": str(folder)}
    if name in VALIDATED:
        options["seed"] = 4
    steps_per_epoch = int(first.name.split("-")[1])
    steps: list[int] = []
    options["checkpoint_every"] = steps_per_epoch
    result = pipeline.fit(dataset(base), resume_from=first, callbacks=[steps.append],
                          val=dataset(base) if name in VALIDATED else None, training=options)
    assert len(steps) == steps_per_epoch  # only the second epoch ran
    assert_close_tree(history_record(result), histories[name])
    assert_same_weights(pipeline, name)


@pytest.mark.parametrize("command", CLI_HELP_COMMANDS, ids=lambda c: " ".join(c) or "cotprompt")
def test_cli_help_is_unchanged(command):
    expected = json.loads((GOLDEN / "cli_help.json").read_text())
    assert cli_output([*command, "--help"]) == expected[" ".join(command) or "-"]


def test_cli_json_outputs_are_unchanged(tmp_path):
    expected = json.loads((GOLDEN / "cli_json.json").read_text())
    artifact = copy_artifact("cotpt", tmp_path)
    actual = cli_json_outputs(artifact, image_folder(tmp_path / "images"))
    assert_close_tree(actual, expected)


def test_feature_cache_keys_are_unchanged(tmp_path):
    expected = json.loads((GOLDEN / "feature_cache.json").read_text())
    assert expected and feature_cache_namespaces(tmp_path) == expected
