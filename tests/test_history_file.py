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
import re
import shutil
import threading
from pathlib import Path

import pytest
import test_hub
import torch
from test_artifact_saves import _count_steps, _phase
from test_hub import ALICE, assert_same_weights
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
from cotprompt.artifact.model_card import END, START, CardOptions, render_card
from cotprompt.cli.app import main
from cotprompt.errors import ArtifactError, ConfigError

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


# -- untrusted text and the model card (review R1, finding 1) ------------------------------------

INJECTED = (END + "\n\n## Important\nRe-download the weights from [here](https://evil.example/x)\n"
            + START)


def _record_history(folder: Path, data: bytes) -> None:
    """Put ``data`` in the folder's history.json and record it as the saver would (an artifact
    whose author wrote both)."""
    _rewrite(folder, data, record=True)


def test_a_history_text_holding_the_cards_markers_never_reaches_a_card(trained, tiny_backbone,
                                                                        tmp_path, caplog):
    evil = trained.save_pretrained(tmp_path / "evil")
    _record_history(evil, json.dumps([{"epoch": 1, "loss": 0.5, "note": INJECTED}]).encode())
    with caplog.at_level(logging.WARNING, logger="cotprompt.artifact"):
        loaded = CoTPipeline.from_pretrained(evil, backbone=tiny_backbone)
    assert loaded.training_history is None
    assert any("control character, '<', '>' or '|' under 'note'" in r.getMessage()
               for r in caplog.records)
    mine = loaded.save_pretrained(tmp_path / "mine")
    fresh = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES)
    fresh.save_pretrained(mine)  # a save without history re-renders the card
    card = (mine / CARD_NAME).read_text()
    assert card.count(START) == card.count(END) == 1
    assert "evil.example" not in card and "## Important" not in card


@pytest.mark.parametrize("key", ["a|b", "a<b", "b>a", "a\nb", "a\tb", "a\u202eb", "\x00",
                                 "a\u2066b", "a\u200fb", "a\u2028b", "\x1b[2J"])
def test_keys_and_texts_with_markup_or_control_characters_are_refused(key):
    for record in ({key: 1.0}, {"note": key}):
        data = json.dumps([{"epoch": 1, **record}]).encode()
        with pytest.raises(ArtifactError, match=r"control character, '<', '>' or '\|'"):
            parse_history(data, "h.json")
        with pytest.raises(ValueError, match=r"control character, '<', '>' or '\|'"):
            encode_history([{"epoch": 1, **record}])  # a save never writes what loading refuses
    plain = [{"epoch": 1, "val_i2t_recall@1": 50.0, "note": "SGD (momentum 0.9) & cosine"}]
    assert parse_history(encode_history(plain).encode(), "h.json") == plain


def test_texts_with_the_joiners_of_scripts_and_emoji_are_kept():
    """Zero-width (non-)joiners are text (a Persian word, an emoji sequence), not controls
    (review R4, finding 7)."""
    history = [{"epoch": 1, "\u0645\u06cc\u200c\u062e": 0.5, "note": "\U0001F469\u200d\U0001F4BB"}]
    assert parse_history(encode_history(history).encode(), "h.json") == history


def test_the_card_shows_history_text_as_text_and_a_later_save_drops_it(trained):
    """A history given in-process (not parsed) still reaches the card only as escaped text."""
    config = trained.artifact_config()
    history = [{"epoch": 1, "loss": 0.5, "a|b": "x", INJECTED: "y", "note": INJECTED + " **b**"}]
    card = render_card(config, options=CardOptions(history=history))
    assert card.count(START) == card.count(END) == 1
    assert "<" not in results_table(card) and "\n## Important" not in card
    assert "\\[here\\](https://evil.example/x)" in results_table(card)  # shown, not linked
    header, rule, row = results_table(card).strip().splitlines()
    for line in (header, row):  # one cell per column: no `|` breaks the table
        assert len(re.split(r"(?<!\\)\|", line)[1:-1]) == rule.count("---") == 5
    assert "\\*\\*b\\*\\*" in row  # no emphasis
    again = render_card(config, existing=card)  # a save without history
    assert again.count(START) == again.count(END) == 1
    assert "evil.example" not in again and "## Training results" not in again


def test_a_card_an_older_version_let_markers_into_is_repaired_on_the_next_save(trained):
    config = trained.artifact_config()
    clean = render_card(config)
    body = clean.split(START, 1)[1]
    older = (clean.split(START, 1)[0] + START + "\n| note |\n" + INJECTED.replace(START, "")
             + body + "\nMy own text.\n")
    again = render_card(config, existing=older)
    assert again.count(START) == again.count(END) == 1
    assert "evil.example" not in again and "My own text." in again


# -- reading and fetching (review R1, findings 5 and 9) ------------------------------------------


def test_history_is_read_with_config_and_weights_under_one_lock(trained, tiny_backbone, tmp_path,
                                                                monkeypatch, caplog):
    """A save landing right after config and weights were read waits for the history too (it
    would otherwise give a spurious checksum warning and another save's history)."""
    from cotprompt.artifact import checked

    folder = trained.save_pretrained(tmp_path / "a")
    before = json.loads((folder / HISTORY_NAME).read_text())
    newer = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES)
    newer.training_history = [{"epoch": 1, "loss": 9.0}]
    read_artifact = checked.read_artifact
    saver: list[threading.Thread] = []

    def read_then_save(directory):
        found = read_artifact(directory)
        thread = threading.Thread(target=newer.save_pretrained, args=(folder,))
        thread.start()
        thread.join(timeout=1.0)  # done at once unless the save waits for this reader
        saver.append(thread)
        return found

    monkeypatch.setattr(checked, "read_artifact", read_then_save)
    with caplog.at_level(logging.WARNING, logger="cotprompt.artifact"):
        result = checked.read_checked(folder)
    saver[0].join()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert result.history == before
    assert json.loads((folder / HISTORY_NAME).read_text()) == newer.training_history


def test_the_history_entry_must_name_history_json(trained, tmp_path):
    folder = trained.save_pretrained(tmp_path / "a")
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["history"]["file"] = "../elsewhere.json"
    with pytest.raises(ArtifactError, match="malformed history entry"):
        read_history(folder, config)


def test_a_push_reads_the_history_once(hub, trained, tmp_path):
    import builtins

    folder = trained.save_pretrained(tmp_path / "a")
    opened: list[str] = []
    real_open, real_read_bytes = builtins.open, Path.read_bytes

    def counting_open(file, *args, **kwargs):
        opened.append(os.fspath(file) if isinstance(file, (str, os.PathLike)) else "")
        return real_open(file, *args, **kwargs)

    def counting_read_bytes(self):
        opened.append(str(self))
        return real_read_bytes(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(builtins, "open", counting_open)
        patch.setattr(Path, "read_bytes", counting_read_bytes)
        _push(folder, "alice/once")
    assert [p for p in opened if p.endswith(HISTORY_NAME)] == [str(folder / HISTORY_NAME)]
    assert hub.file("alice/once", HISTORY_NAME).data == (folder / HISTORY_NAME).read_bytes()


def test_a_history_over_the_cap_is_not_downloaded(hub, trained, tiny_backbone, caplog):
    trained.push_to_hub("alice/big", token=ALICE)
    size = len(hub.file("alice/big", HISTORY_NAME).data)
    with pytest.MonkeyPatch.context() as patch, caplog.at_level(logging.WARNING):
        patch.setattr("cotprompt.hub.download.MAX_HISTORY_BYTES", size - 1)
        loaded = CoTPipeline.from_pretrained("alice/big", backbone=tiny_backbone)
    assert loaded.training_history is None
    assert any(f"{size} bytes, over the {size - 1}" in r.getMessage() for r in caplog.records)
    assert hub.count("GET", f"/{HISTORY_NAME}") == 0  # its metadata only: nothing downloaded
    again = CoTPipeline.from_pretrained("alice/big", backbone=tiny_backbone)
    assert again.training_history == trained.training_history


def test_the_history_size_check_retries_and_a_dead_one_only_drops_the_history(
        hub, trained, tiny_backbone, caplog):
    """The history's size request is retried like the others; when the Hub still does not
    answer it, the artifact loads without its (optional) history (review R4, finding 8)."""
    trained.push_to_hub("alice/flaky-history", token=ALICE)
    hub.fail(f"/{HISTORY_NAME}", 503, times=2)
    loaded = CoTPipeline.from_pretrained("alice/flaky-history", backbone=tiny_backbone)
    assert loaded.training_history == trained.training_history
    trained.push_to_hub("alice/dead-history", token=ALICE)
    hub.fail(f"/{HISTORY_NAME}", 503, times=100)
    with caplog.at_level(logging.WARNING):
        loaded = CoTPipeline.from_pretrained("alice/dead-history", backbone=tiny_backbone)
    hub.clear_faults()
    assert loaded.training_history is None
    assert_same_weights(loaded, trained)
    assert any("going on without the training history" in r.getMessage()
               for r in caplog.records)


def test_a_push_without_history_removes_the_repositorys_history(hub, trained, tiny_backbone):
    trained.push_to_hub("alice/r", token=ALICE)
    commits = hub.count("POST", "/commit/")
    fresh = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES)
    fresh.push_to_hub("alice/r", token=ALICE)
    assert hub.count("POST", "/commit/") == commits + 1  # removed in the push's own commit
    assert "history" not in json.loads(hub.file("alice/r", CONFIG_NAME).data)
    with pytest.raises(KeyError):
        hub.file("alice/r", HISTORY_NAME)
    fresh.push_to_hub("alice/r", token=ALICE)  # nothing left to remove: no failing delete
    fresh.push_to_hub("alice/fresh", token=ALICE)


def test_pull_copies_only_a_recorded_history(hub, tiny_backbone, tmp_path):
    from huggingface_hub import hf_hub_download

    fresh = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES)
    fresh.push_to_hub("alice/stray", token=ALICE)
    hub.commit_files("alice/stray", {HISTORY_NAME: b'[{"epoch": 1, "loss": 0.5}]\n'})
    hf_hub_download("alice/stray", HISTORY_NAME)  # now in the cache snapshot pull reads from
    assert main(["pull", "alice/stray", "--local-dir", str(tmp_path / "local")]) == 0
    assert (tmp_path / "local" / CONFIG_NAME).is_file()
    assert not (tmp_path / "local" / HISTORY_NAME).exists()


# -- whose history.json (review R2, findings 1 to 3) ---------------------------------------------

MINE = b'{"mine": 1}\n'


def _fresh(tiny_backbone) -> CoTPipeline:
    return CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES)


def _foreign(kind: str, trained: CoTPipeline, folder: Path) -> bytes:
    """Give ``folder`` a history.json that is not its artifact's: a user's own file in a folder
    without artifact, or an artifact's history.json edited after the save."""
    if kind == "own file":
        folder.mkdir()
        (folder / HISTORY_NAME).write_bytes(MINE)
        return MINE
    trained.save_pretrained(folder)
    _rewrite(folder, b'[{"epoch": 1, "loss": 0.01}]\n', record=False)
    return (folder / HISTORY_NAME).read_bytes()


@pytest.mark.parametrize("kind", ["own file", "edited"])
def test_a_save_without_history_leaves_a_foreign_history_json_alone(trained, tiny_backbone,
                                                                    tmp_path, kind):
    folder = tmp_path / "a"
    data = _foreign(kind, trained, folder)
    _fresh(tiny_backbone).save_pretrained(folder)
    assert (folder / HISTORY_NAME).read_bytes() == data
    assert "history" not in json.loads((folder / CONFIG_NAME).read_text())
    assert CoTPipeline.from_pretrained(folder, backbone=tiny_backbone).training_history is None


@pytest.mark.parametrize("kind", ["own file", "edited"])
def test_a_save_with_history_refuses_a_foreign_history_json(trained, tmp_path, kind):
    folder = tmp_path / "a"
    data = _foreign(kind, trained, folder)
    before = files_of(folder)
    with pytest.raises(ArtifactError, match="is not the training history") as caught:
        trained.save_pretrained(folder)
    assert str(folder / HISTORY_NAME) in str(caught.value) and "\n" not in str(caught.value)
    assert files_of(folder) == before and (folder / HISTORY_NAME).read_bytes() == data
    assert sorted(p.name for p in folder.iterdir()) == sorted(before)  # no staging left


def test_a_save_rechecks_whose_history_it_is_under_the_lock(trained, tiny_backbone, tmp_path,
                                                            monkeypatch):
    """A save with a history landing between another save's check and its commit: the other
    save sees it under the commit lock and removes it (it is the folder's previous artifact's),
    rather than leaving a history.json that its config does not record."""
    from cotprompt.artifact import ownership

    folder = tmp_path / "a"
    real_commit = ownership.commit_files
    landed: list[bool] = []

    def another_save_first(directory, writers, **kwargs):
        if not landed:
            landed.append(True)
            trained.save_pretrained(folder)
        return real_commit(directory, writers, **kwargs)

    monkeypatch.setattr(ownership, "commit_files", another_save_first)
    _fresh(tiny_backbone).save_pretrained(folder)
    assert landed and not (folder / HISTORY_NAME).exists()
    assert "history" not in json.loads((folder / CONFIG_NAME).read_text())


def test_pull_refuses_a_local_dir_with_a_foreign_history_json(hub, trained, tmp_path):
    trained.push_to_hub("alice/p", token=ALICE)
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / HISTORY_NAME).write_bytes(MINE)
    requests = len(hub.requests)
    with pytest.raises(ArtifactError, match=r"holds a history\.json that its artifact does "
                                            r"not record") as caught:
        pull_hub("alice/p", local_dir=mine)
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in mine.iterdir()) == [HISTORY_NAME]
    assert (mine / HISTORY_NAME).read_bytes() == MINE
    assert len(hub.requests) == requests  # refused before anything is fetched


def test_pull_replaces_and_removes_only_its_artifacts_history(hub, trained, tiny_backbone,
                                                             tmp_path):
    trained.push_to_hub("alice/with", token=ALICE)
    _fresh(tiny_backbone).push_to_hub("alice/without", token=ALICE)
    local = tmp_path / "local"
    pull_hub("alice/with", local_dir=local)
    assert json.loads((local / HISTORY_NAME).read_text()) == trained.training_history
    pull_hub("alice/with", local_dir=local)  # its own history: replaced
    pull_hub("alice/without", local_dir=local)  # the earlier artifact's: removed
    assert not (local / HISTORY_NAME).exists()


def pull_hub(repo_id: str, **kwargs):
    from cotprompt.hub import pull

    return pull(repo_id, **kwargs)


def _stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_a_tampered_history_pulled_says_so_once_and_push_says_how_to_fix(hub, trained,
                                                                        tmp_path, capsys):
    trained.push_to_hub("alice/t", token=ALICE)
    hub.commit_files("alice/t", {HISTORY_NAME: b'[{"epoch": 1, "loss": 0.01}]\n'})
    local = tmp_path / "local"
    assert main(["pull", "alice/t", "--local-dir", str(local)]) == 0
    lines = _stderr_lines(capsys)
    assert len(lines) == 1, lines
    assert re.search(r"alice/t@[0-9a-f]{40}/history\.json does not match the checksum", lines[0])
    assert "snapshots" not in lines[0] and "without its training history" in lines[0]
    assert not (local / HISTORY_NAME).exists()  # a history that failed its checks: not copied
    for quiet in ([], ["-q"]):
        assert main([*quiet, "push", str(local), "alice/u", "--token", ALICE]) == 2
        lines = _stderr_lines(capsys)
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        assert f"{local / HISTORY_NAME} is missing" in lines[0]
        assert f"CoTPipeline.from_pretrained({str(local)!r}).save_pretrained(" in lines[0]
    assert "alice/u" not in hub.repos
    CoTPipeline.from_pretrained(local).save_pretrained(local)  # the fix the error gives
    capsys.readouterr()
    assert main(["push", str(local), "alice/u", "--token", ALICE]) == 0


def test_push_of_an_edited_history_says_how_to_fix(hub, trained, tmp_path):
    folder = trained.save_pretrained(tmp_path / "a")
    _rewrite(folder, b'[{"epoch": 1, "loss": 0.01}]\n', record=False)
    with pytest.raises(ArtifactError, match=re.escape(
            f"move or delete {folder / HISTORY_NAME}, then load and save the folder again")):
        _push(folder, "alice/edited")
    (folder / HISTORY_NAME).rename(tmp_path / "kept.json")  # the fix the error gives
    CoTPipeline.from_pretrained(folder).save_pretrained(folder)
    _push(folder, "alice/edited")
    with pytest.raises(KeyError):
        hub.file("alice/edited", HISTORY_NAME)
    trained.save_pretrained(folder)  # nothing left in the way of a save with history (R4, 4)
    assert CoTPipeline.from_pretrained(folder).training_history == trained.training_history


@pytest.mark.parametrize(("history", "problem"), [
    (["x"], "records are mappings, not str"),
    ("abc", "list of per-epoch records, not str"),
    ({"epoch": 1}, "list of per-epoch records, not dict"),
    ([{"epoch": 1, "": 0.5}], "empty or overlong key"),
    ([{str(n): n for n in range(history_module.MAX_HISTORY_KEYS + 1)}], "keys, over"),
    ([{"epoch": 1, "note": "x" * 2000}], "overlong text under 'note'"),
    ([{"epoch": 1, "note": "a|b"}], "control character"),
    ([{"epoch": n, "loss": 0.5} for n in range(60)], "bytes as history.json, over the 1000"),
])
def test_a_save_refuses_a_bad_training_history_before_writing(trained, tiny_backbone, tmp_path,
                                                              monkeypatch, history, problem):
    monkeypatch.setattr(history_module, "MAX_HISTORY_BYTES", 1000)
    monkeypatch.setattr("cotprompt.artifact.format.MAX_HISTORY_BYTES", 1000)
    folder = trained.save_pretrained(tmp_path / "a")
    before = files_of(folder)
    pipeline = _fresh(tiny_backbone)
    pipeline.training_history = history
    with pytest.raises(ConfigError, match="training_history") as caught:
        pipeline.save_pretrained(folder)
    assert problem in str(caught.value) and "\n" not in str(caught.value)
    assert files_of(folder) == before
    with pytest.raises(ConfigError, match="training_history"):
        pipeline.save_pretrained(tmp_path / "new")
    assert not (tmp_path / "new").exists()

