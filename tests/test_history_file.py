"""``history.json`` (issue 15): the per-epoch records of the run that trained the prompts are
saved with the artifact in the same all-or-nothing commit, read back as untrusted JSON into
``training_history``, pushed with the artifact, and shown by the card ``cotprompt push FOLDER``
renders."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import test_hub
import torch
from test_artifact_saves import _count_steps, _phase
from test_hub import ALICE
from test_training import CLASSES, colour_dataset

from cotprompt import CoTPipeline
from cotprompt.artifact import history as history_module
from cotprompt.artifact.format import (
    CARD_NAME,
    CONFIG_NAME,
    FOLDER_FILES,
    HISTORY_NAME,
    read_history,
)
from cotprompt.artifact.history import encode_history, parse_history
from cotprompt.cli.app import main
from cotprompt.errors import ArtifactError

hf_home = test_hub.hf_home  # fixtures: huggingface_hub home under tmp_path, and the Hub server
hub = test_hub.hub

TRAINING = dict(optimizer="sgd", lr=0.05, epochs=2, batch_size=4, augment=False, progress=False,
                warmup_epochs=1, seed=3)


@pytest.fixture(scope="module")
def trained(tiny_backbone) -> CoTPipeline:
    pipeline = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES)
    pipeline.fit(colour_dataset(2), val=colour_dataset(1, seed=1), training=TRAINING)
    return pipeline


def files_of(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in FOLDER_FILES
            if (folder / name).exists()}


def results_table(card: str) -> str:
    return card.split("## Training results", 1)[1].split("\n## ", 1)[0]


def test_save_writes_the_history_and_its_checksum(trained, tmp_path):
    folder = trained.save_pretrained(tmp_path / "a")
    data = (folder / HISTORY_NAME).read_bytes()
    assert json.loads(data) == trained.training_history
    assert [r["epoch"] for r in trained.training_history] == [1, 2]
    assert "val_accuracy" in trained.training_history[0]
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["history"] == {"file": HISTORY_NAME,
                                 "sha256": hashlib.sha256(data).hexdigest()}


def test_load_gives_the_training_history_and_the_card_keeps_its_table(trained, tmp_path,
                                                                      tiny_backbone):
    folder = trained.save_pretrained(tmp_path / "a")
    assert "- torch " in (folder / CARD_NAME).read_text()  # trained in this process
    loaded = CoTPipeline.from_pretrained(folder, backbone=tiny_backbone)
    assert loaded.training_history == trained.training_history
    again = loaded.save_pretrained(tmp_path / "b")
    assert (again / HISTORY_NAME).read_bytes() == (folder / HISTORY_NAME).read_bytes()
    card = (again / CARD_NAME).read_text()
    assert "| epoch | loss | lr | val_accuracy |" in results_table(card)
    assert "- torch " not in card  # the versions it was trained with are not known here


def test_a_save_without_history_removes_an_earlier_ones(trained, tiny_backbone, tmp_path):
    folder = trained.save_pretrained(tmp_path / "a")
    fresh = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES)
    fresh.save_pretrained(folder)
    assert not (folder / HISTORY_NAME).exists()
    assert "history" not in json.loads((folder / CONFIG_NAME).read_text())
    assert CoTPipeline.from_pretrained(folder, backbone=tiny_backbone).training_history is None


def test_a_history_the_config_does_not_record_is_not_loaded(trained, tiny_backbone, tmp_path):
    fresh = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES)
    folder = fresh.save_pretrained(tmp_path / "a")
    (folder / HISTORY_NAME).write_text(encode_history(trained.training_history))
    assert CoTPipeline.from_pretrained(folder, backbone=tiny_backbone).training_history is None


def _rewrite(folder: Path, data: bytes, *, record: bool) -> None:
    """Put ``data`` in history.json; with ``record``, as the config's checksum says."""
    (folder / HISTORY_NAME).write_bytes(data)
    if record:
        config = json.loads((folder / CONFIG_NAME).read_text())
        config["history"]["sha256"] = hashlib.sha256(data).hexdigest()
        (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")


@pytest.mark.parametrize(("data", "record", "problem"), [
    (b'[{"epoch": 1, "loss": 0.5}]\n', False, "does not match the checksum"),
    (b"[{", True, "not a JSON training history"),
    (b'[{"epoch": 1, "loss": NaN}]', True, "NaN is not a finite number"),
    (b'[{"epoch": 1, "loss": 1e999}]', True, "non-finite number under 'loss'"),
    (b'{"epoch": 1}', True, "list of per-epoch records"),
    (b'[{"epoch": {"nested": 1}}]', True, "dict under 'epoch'"),
    (b"[1, 2]", True, "record 1 is int"),
    (None, False, "is missing"),
])
def test_a_bad_history_is_left_out_with_a_warning(trained, tiny_backbone, tmp_path, caplog,
                                                  data, record, problem):
    folder = trained.save_pretrained(tmp_path / "a")
    if data is None:
        (folder / HISTORY_NAME).unlink()
    else:
        _rewrite(folder, data, record=record)
    with caplog.at_level(logging.WARNING, logger="cotprompt.artifact"):
        loaded = CoTPipeline.from_pretrained(folder, backbone=tiny_backbone)
    assert loaded.training_history is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(problem in m and "without its training history" in m for m in warnings), warnings
    assert all("\n" not in m for m in warnings)
    for name, value in loaded.model.trainable_state().items():  # the prompts load all the same
        assert torch.equal(value, trained.model.trainable_state()[name])


def test_an_oversized_history_is_refused_before_it_is_read(trained, tmp_path, monkeypatch):
    folder = trained.save_pretrained(tmp_path / "a")
    config = json.loads((folder / CONFIG_NAME).read_text())
    monkeypatch.setattr("cotprompt.artifact.format.MAX_HISTORY_BYTES", 10)
    with pytest.raises(ArtifactError, match="over the 10 bytes"):
        read_history(folder, config)
    monkeypatch.setattr(history_module, "MAX_HISTORY_BYTES", 10)
    with pytest.raises(ArtifactError, match="over the 10"):
        parse_history(b"[]" + b" " * 20, "h.json")


def test_encoding_makes_non_finite_numbers_null_and_refuses_non_lists():
    text = encode_history([{"epoch": 1, "loss": float("nan"), "acc": torch.tensor(0.5).item(),
                            "n": 3, "tag": "x"}])
    assert json.loads(text) == [{"epoch": 1, "loss": None, "acc": 0.5, "n": 3, "tag": "x"}]
    assert parse_history(text.encode(), "h.json") == json.loads(text)
    for bad in ("epochs", {"epoch": 1}, [1]):
        with pytest.raises(ValueError, match="training history"):
            encode_history(bad)


# -- pushing -------------------------------------------------------------------------------------


def test_push_folder_uploads_the_history_and_the_card_shows_it(hub, trained, tmp_path):
    folder = trained.save_pretrained(tmp_path / "a")
    (folder / CARD_NAME).unlink()  # the card is rendered again from config and history alone
    assert main(["push", str(folder), "alice/hist", "--token", ALICE]) == 0
    assert hub.file("alice/hist", HISTORY_NAME).data == (folder / HISTORY_NAME).read_bytes()
    table = results_table(hub.file("alice/hist", CARD_NAME).data.decode())
    assert "| epoch | loss | lr | val_accuracy |" in table
    for record in trained.training_history:
        assert f"| {record['epoch']} | {record['loss']:.4g} |" in table


def test_push_to_hub_uploads_the_history(hub, trained):
    trained.push_to_hub("alice/direct", token=ALICE)
    pushed = json.loads(hub.file("alice/direct", HISTORY_NAME).data)
    assert pushed == trained.training_history


def test_push_refuses_an_edited_history(hub, trained, tmp_path):
    folder = trained.save_pretrained(tmp_path / "a")
    _rewrite(folder, b'[{"epoch": 1, "loss": 0.01}]\n', record=False)
    with pytest.raises(ArtifactError, match="does not match the checksum"):
        _push(folder, "alice/edited")
    assert "alice/edited" not in hub.repos


def _push(folder: Path, repo_id: str) -> None:
    from cotprompt.hub import push_folder

    push_folder(folder, repo_id, token=ALICE)


# -- all or nothing ------------------------------------------------------------------------------


def test_a_save_failing_at_any_step_keeps_the_old_history(trained, tiny_backbone, tmp_path):
    old = trained.save_pretrained(tmp_path / "old")
    newer = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES)
    newer.fit(colour_dataset(2, seed=5), training={**TRAINING, "epochs": 3})
    new = newer.save_pretrained(tmp_path / "new")
    old_files, new_files = files_of(old), files_of(new)
    assert set(old_files) == set(new_files) == set(FOLDER_FILES)
    assert old_files[HISTORY_NAME] != new_files[HISTORY_NAME]

    def disk_full(name: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    folder = tmp_path / "artifact"

    def place() -> None:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(old, folder)

    place()
    with pytest.MonkeyPatch.context() as patch:
        steps = _count_steps(patch, None, disk_full, writes=True)
        newer.save_pretrained(folder)
    outcomes = []
    for at in range(1, len(steps) + 1):
        place()
        with pytest.MonkeyPatch.context() as patch:
            _count_steps(patch, at, disk_full, writes=True)
            try:
                newer.save_pretrained(folder)
                failed = False
            except OSError as exc:
                assert "keeps its previous files" in str(exc)
                failed = True
        loaded = CoTPipeline.from_pretrained(folder, backbone=tiny_backbone)  # finishes a commit
        assert _phase(folder) == "idle"
        expected = old_files if failed else new_files
        assert files_of(folder) == expected, at
        assert loaded.training_history == json.loads(expected[HISTORY_NAME])
        outcomes.append(failed)
    assert any(outcomes) and not all(outcomes)  # both sides of the commit point were hit


def test_loading_and_pulling_from_the_hub_bring_the_history(hub, trained, tiny_backbone,
                                                            tmp_path):
    trained.push_to_hub("alice/pulled", token=ALICE)
    loaded = CoTPipeline.from_pretrained("alice/pulled", backbone=tiny_backbone)
    assert loaded.training_history == trained.training_history
    assert main(["pull", "alice/pulled", "--local-dir", str(tmp_path / "local")]) == 0
    assert (tmp_path / "local" / HISTORY_NAME).read_bytes() == \
        hub.file("alice/pulled", HISTORY_NAME).data
