"""Saves are all-or-nothing: kills, SIGTERM, full disks and file-size limits at any moment of a
save leave the complete old artifact or the complete new one, and loading recovers by itself.

Real files and real processes: the saving processes are forked from this one (which already
built the tiny pipeline) and killed; the command line runs as a subprocess.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import pathlib
import random
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cotprompt import CoTPipeline
from cotprompt.artifact.format import (
    ARTIFACT_FILES,
    CARD_NAME,
    CONFIG_NAME,
    WEIGHTS_NAME,
    read_artifact,
    read_config,
    write_artifact,
)
from cotprompt.errors import ArtifactError, ConfigError
from cotprompt.folder_commit import (
    COMMIT_MARKER,
    OWNER_FILE,
    OWNER_SIGNATURE,
    STAGING_DIR,
    commit_files,
)
from cotprompt.io import check_writable, current_umask, write_text_atomic

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["cat", "dog", "sea turtle", "traffic light"]
FORK = multiprocessing.get_context("fork")


# -- two artifacts that differ in weights, config checksum and card ----------------------------


class Versions:
    """Two versions (0 and 1) of one pipeline's artifact: the arguments of ``write_artifact``
    and the bytes a clean save writes, to compare a folder with after anything happened."""

    def __init__(self, backbone, root: Path) -> None:
        pipeline = CoTPipeline.for_method("coop", backbone=backbone, class_names=CLASSES)
        config = pipeline.artifact_config()
        base = {k: v.detach().clone() for k, v in pipeline.model.trainable_state().items()}
        self.args = []
        self.files = []
        for version in (0, 1):
            gen = torch.Generator().manual_seed(100 + version)
            tensors = {k: v + torch.randn(v.shape, generator=gen) for k, v in base.items()}
            card = f"# version {version}\n\n" + f"The card of version {version}.\n" * 500
            folder = write_artifact(root / f"ref{version}", config, tensors, card)
            self.args.append((config, tensors, card))
            self.files.append({name: (folder / name).read_bytes() for name in ARTIFACT_FILES})
        self.backbone = backbone

    def place(self, folder: Path, version: int) -> Path:
        """Make ``folder`` hold exactly a clean copy of ``version`` (and nothing else)."""
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for name, data in self.files[version].items():
            (folder / name).write_bytes(data)
        return folder

    def save(self, folder: Path, version: int) -> Path:
        return write_artifact(folder, *self.args[version])

    def which(self, folder: Path) -> int:
        """Load ``folder`` the way users do and say which version it holds, exactly (all three
        files byte-identical to that version's, the loaded tensors equal to its tensors)."""
        loaded = CoTPipeline.from_pretrained(folder, backbone=self.backbone)
        live = {name: (folder / name).read_bytes() for name in ARTIFACT_FILES}
        matches = [v for v in (0, 1) if live == self.files[v]]
        assert len(matches) == 1, f"{folder} holds neither version: {sorted(live)}"
        version = matches[0]
        state = loaded.model.trainable_state()
        for name, tensor in self.args[version][1].items():
            assert torch.equal(state[name], tensor), name
        return version


@pytest.fixture(scope="module")
def versions(tiny_backbone, tmp_path_factory) -> Versions:
    return Versions(tiny_backbone, tmp_path_factory.mktemp("versions"))


def _phase(folder: Path) -> str:
    staging = folder / STAGING_DIR
    if not staging.exists():
        return "idle"
    return "committed" if (staging / COMMIT_MARKER).exists() else "staged"


# -- killed at random moments --------------------------------------------------------------------


def _slowly(function):
    """The same file-system call, 1 ms later: stretches every phase of a save in the killed
    child so that random kills land in all of them."""

    def slow(*args, **kwargs):
        time.sleep(0.001)
        return function(*args, **kwargs)

    return slow


def _save_forever(versions: Versions, folder: Path, first: int, ready) -> None:
    os.fsync = _slowly(os.fsync)
    os.replace = _slowly(os.replace)
    ready.set()
    version = first
    while True:
        versions.save(folder, version)
        version ^= 1


def test_random_kills_leave_the_old_or_the_new_artifact(versions, tmp_path):
    rng = random.Random(20240611)
    folder = versions.place(tmp_path / "artifact", 0)
    kills = 40
    for i in range(kills):
        sig = signal.SIGKILL if i % 2 == 0 else signal.SIGTERM
        ready = FORK.Event()
        child = FORK.Process(
            target=_save_forever, args=(versions, folder, rng.randrange(2), ready), daemon=True
        )
        child.start()
        assert ready.wait(30)
        time.sleep(rng.uniform(0.0, 0.06))
        os.kill(child.pid, sig)
        child.join(30)
        assert child.exitcode == -sig
        versions.which(folder)  # loads (recovering), and finds exactly version 0 or 1
        assert _phase(folder) == "idle"  # loading finished or discarded the interrupted save
    # Which phases the random kills hit depends on timing, so it is not asserted here: the
    # kill-at-every-step test below covers every phase deterministically.


# -- killed at every file-system step in turn ---------------------------------------------------

_STEPS = ("fsync", "replace", "unlink", "rmdir", "mkdir", "chmod")


def _count_steps(
    monkeypatch: pytest.MonkeyPatch, at: int | None, action, *, writes: bool = False
) -> list[str]:
    """Wrap the file-system calls a save makes (and, with ``writes``, the writes of file
    contents); the ``at``-th call (1-based) runs ``action`` first."""
    seen: list[str] = []

    def wrap(name: str, real):
        def step(*args, **kwargs):
            seen.append(name)
            if len(seen) == at:
                action(name)
            return real(*args, **kwargs)

        return step

    for name in _STEPS:
        monkeypatch.setattr(os, name, wrap(name, getattr(os, name)))
    if writes:
        for name in ("write_text", "write_bytes"):
            monkeypatch.setattr(pathlib.Path, name, wrap(name, getattr(pathlib.Path, name)))
    return seen


def _die(_name: str) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _save_and_die_at(versions: Versions, folder: Path, version: int, at: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        _count_steps(patch, at, _die)
        versions.save(folder, version)


def test_kill_at_every_step_of_a_save(versions, tmp_path, monkeypatch):
    folder = tmp_path / "artifact"
    versions.place(folder, 0)
    with pytest.MonkeyPatch.context() as patch:
        steps = _count_steps(patch, None, _die)
        versions.save(folder, 1)
    assert len(steps) > 10 and "replace" in steps
    outcomes = []
    for at in range(1, len(steps) + 1):
        versions.place(folder, 0)
        child = FORK.Process(target=_save_and_die_at, args=(versions, folder, 1, at))
        child.start()
        child.join(30)
        assert child.exitcode == -signal.SIGKILL, at
        outcomes.append((_phase(folder), versions.which(folder)))
    # old until the commit marker is in place, new from then on: one switch, never a mix
    found = [version for _, version in outcomes]
    assert found == sorted(found) and found[0] == 0 and found[-1] == 1, outcomes
    assert {phase for phase, _ in outcomes} >= {"idle", "staged", "committed"}, outcomes


# -- full disks and file-size limits ------------------------------------------------------------


def _save_with_size_limit(versions: Versions, folder: Path, limit: int, conn) -> None:
    _limit_file_size(limit)
    try:
        versions.save(folder, 1)
    except OSError as exc:
        conn.send((exc.errno, str(exc)))
    else:
        conn.send((None, "saved"))


@pytest.mark.parametrize("which", ["first file", "a later file"])
def test_file_size_limit_keeps_the_old_artifact(versions, tmp_path, which):
    folder = versions.place(tmp_path / "artifact", 0)
    size = {name: len(data) for name, data in versions.files[1].items()}
    if which == "first file":  # the weights, written first
        limit = size[WEIGHTS_NAME] // 2
    else:  # the (long) card, written second: the weights are staged by then
        limit = size[CARD_NAME] - 1
        assert size[WEIGHTS_NAME] <= limit
    receive, send = FORK.Pipe(duplex=False)
    child = FORK.Process(target=_save_with_size_limit, args=(versions, folder, limit, send))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    code, message = receive.recv()
    assert code == errno.EFBIG, message
    assert str(folder) in message and "keeps its previous files" in message
    assert not (folder / STAGING_DIR).exists()
    assert versions.which(folder) == 0


def test_disk_full_at_every_step(versions, tmp_path):
    folder = tmp_path / "artifact"

    def disk_full(name: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    versions.place(folder, 0)
    with pytest.MonkeyPatch.context() as patch:
        steps = _count_steps(patch, None, disk_full, writes=True)
        versions.save(folder, 1)
    assert len([s for s in steps if s.startswith("write")]) >= 4  # 3 files, commit marker
    failed = committed = 0
    for at in range(1, len(steps) + 1):
        versions.place(folder, 0)
        with pytest.MonkeyPatch.context() as patch:
            _count_steps(patch, at, disk_full, writes=True)
            try:
                versions.save(folder, 1)
            except OSError as exc:
                error: OSError | None = exc
            else:
                error = None
        if error is not None:  # before the commit point: the save failed, nothing changed
            failed += 1
            assert error.errno == errno.ENOSPC and "keeps its previous files" in str(error)
            assert not (folder / STAGING_DIR).exists(), at
            assert versions.which(folder) == 0, at
        else:  # after it: the save stands; what is left is finished by the next load
            committed += 1
            assert versions.which(folder) == 1, at
        assert _phase(folder) == "idle"
        versions.save(folder, 0)  # nothing left behind gets in the way of the next save
        assert versions.which(folder) == 0
    assert failed and committed


# -- recovery on load ----------------------------------------------------------------------------


def _journal(versions: Versions, folder: Path, *, committed: bool, moved: tuple[str, ...] = ()):
    """An interrupted save of version 1 over version 0, as the commit leaves it."""
    versions.place(folder, 0)
    staging = folder / STAGING_DIR
    staging.mkdir()
    (staging / OWNER_FILE).write_bytes(OWNER_SIGNATURE)
    names = [WEIGHTS_NAME, CARD_NAME, CONFIG_NAME]
    for name in names:
        (staging / name).write_bytes(versions.files[1][name])
    if committed:
        (staging / COMMIT_MARKER).write_text(json.dumps({"files": names}))
    else:
        (staging / ".committing.tmp").write_text("{")
    for name in moved:
        os.replace(staging / name, folder / name)


def test_committed_journal_is_finished_on_load(versions, tmp_path, caplog):
    folder = tmp_path / "artifact"
    _journal(versions, folder, committed=True, moved=(WEIGHTS_NAME,))  # new weights, old config
    caplog.set_level("WARNING", logger="cotprompt")
    assert versions.which(folder) == 1
    assert "interrupted after it was committed" in caplog.text and str(folder) in caplog.text
    assert not (folder / STAGING_DIR).exists()


def test_uncommitted_journal_is_discarded_on_load(versions, tmp_path, caplog):
    folder = tmp_path / "artifact"
    _journal(versions, folder, committed=False)
    caplog.set_level("WARNING", logger="cotprompt")
    assert versions.which(folder) == 0
    assert "interrupted before it was committed" in caplog.text
    assert not (folder / STAGING_DIR).exists()


def test_interrupted_save_is_finished_before_the_next_save(versions, tmp_path, caplog):
    folder = tmp_path / "artifact"
    _journal(versions, folder, committed=True, moved=(CARD_NAME,))
    caplog.set_level("WARNING", logger="cotprompt")
    versions.save(folder, 0)
    assert "finished an interrupted save" in caplog.text
    assert versions.which(folder) == 0


def test_read_only_folder_with_a_committed_journal_loads_the_new_artifact(
    versions, tmp_path, monkeypatch, caplog
):
    folder = tmp_path / "artifact"
    caplog.set_level("WARNING", logger="cotprompt")
    for moved in ((), (WEIGHTS_NAME,), (WEIGHTS_NAME, CARD_NAME)):
        _journal(versions, folder, committed=True, moved=moved)
        with pytest.MonkeyPatch.context() as patch:  # a read-only mount, even for root

            def refuse(*args, **kwargs):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))

            for name in ("replace", "unlink", "rmdir"):
                patch.setattr(os, name, refuse)
            loaded = CoTPipeline.from_pretrained(folder, backbone=versions.backbone)
        assert "cannot be finished or discarded here" in caplog.text
        for name, tensor in versions.args[1][1].items():
            assert torch.equal(loaded.model.trainable_state()[name], tensor)
        assert _phase(folder) == "committed"  # untouched
    # an uncommitted journal in a read-only folder: the old artifact, untouched
    _journal(versions, folder, committed=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shutil, "rmtree", lambda *a, **k: (_ for _ in ()).throw(PermissionError(
            errno.EACCES, "Permission denied")))
        loaded = CoTPipeline.from_pretrained(folder, backbone=versions.backbone)
    for name, tensor in versions.args[0][1].items():
        assert torch.equal(loaded.model.trainable_state()[name], tensor)
    if os.geteuid() != 0:  # a real read-only folder (root writes through chmod)
        _journal(versions, folder, committed=True, moved=(WEIGHTS_NAME,))
        folder.chmod(0o555)
        (folder / STAGING_DIR).chmod(0o555)
        try:
            loaded = CoTPipeline.from_pretrained(folder, backbone=versions.backbone)
        finally:
            (folder / STAGING_DIR).chmod(0o755)
            folder.chmod(0o755)
        for name, tensor in versions.args[1][1].items():
            assert torch.equal(loaded.model.trainable_state()[name], tensor)


def _staged(folder: Path) -> dict[str, bytes]:
    staging = folder / STAGING_DIR
    return {p.name: p.read_bytes() for p in staging.iterdir() if p.is_file()}


def test_an_unusable_committed_journal_is_left_alone_not_rolled_back(versions, tmp_path, caplog):
    folder = tmp_path / "artifact"
    caplog.set_level("WARNING", logger="cotprompt")
    # a marker naming a path outside the folder is not one this library wrote
    _journal(versions, folder, committed=True)
    marker = folder / STAGING_DIR / COMMIT_MARKER
    marker.write_text(json.dumps({"files": ["../escape"]}))
    before = _staged(folder)
    assert versions.which(folder) == 0  # the journal is ignored: the live files load
    assert not (tmp_path / "escape").exists() and _staged(folder) == before
    # committed, the new weights already moved, then the marker became unreadable or a staged
    # entry odd: discarding the journal would leave new weights with the old config for good
    for damage in ("unreadable marker", "odd staged entry"):
        _journal(versions, folder, committed=True, moved=(WEIGHTS_NAME,))
        if damage == "unreadable marker":
            marker.write_text("{ not json")
        else:
            (folder / STAGING_DIR / CARD_NAME).unlink()
            (folder / STAGING_DIR / CARD_NAME).mkdir()
        before = _staged(folder)
        caplog.clear()
        with pytest.raises(ArtifactError, match="does not match the checksum"):
            CoTPipeline.from_pretrained(folder, backbone=versions.backbone)
        assert _staged(folder) == before, damage  # left as it was, marker included
        assert (folder / STAGING_DIR / CONFIG_NAME).read_bytes() == versions.files[1][CONFIG_NAME]
        assert "cannot be finished" in caplog.text, damage
        # a save does not guess either: it refuses until the journal is looked at
        with pytest.raises(FileExistsError, match="holds a committed save that cannot be "
                                                   "finished") as info:
            versions.save(folder, 0)
        assert str(folder) in str(info.value) and "\n" not in str(info.value)
        assert _staged(folder) == before


def test_a_journal_naming_other_files_is_ignored_on_load(versions, tmp_path, caplog):
    from cotprompt.hub.download import check_artifact

    caplog.set_level("WARNING", logger="cotprompt")
    shipped = [
        ({"files": ["notes.txt"]}, {"notes.txt": b"shipped text"}),
        ({"files": [], "remove": ["thesis.tex"]}, {}),
        ({"files": [WEIGHTS_NAME, "notes.txt"]},
         {WEIGHTS_NAME: versions.files[1][WEIGHTS_NAME], "notes.txt": b"shipped text"}),
    ]
    for signed in (True, False):
        for i, (marker, staged) in enumerate(shipped):
            folder = versions.place(tmp_path / f"artifact-{signed}-{i}", 0)
            (folder / "notes.txt").write_text("my notes")
            (folder / "thesis.tex").write_text("my thesis")
            staging = folder / STAGING_DIR
            staging.mkdir()
            if signed:  # a shipped folder can carry the signature too
                (staging / OWNER_FILE).write_bytes(OWNER_SIGNATURE)
            for name, data in staged.items():
                (staging / name).write_bytes(data)
            (staging / COMMIT_MARKER).write_text(json.dumps(marker))
            before = _staged(folder)
            caplog.clear()
            read_config(folder)
            check_artifact(folder)
            assert versions.which(folder) == 0
            read_artifact(folder)
            assert (folder / "notes.txt").read_text() == "my notes"
            assert (folder / "thesis.tex").read_text() == "my thesis"
            assert _staged(folder) == before  # not rolled forward, not deleted
            warnings = [r for r in caplog.records if STAGING_DIR in r.getMessage()]
            assert len(warnings) == 1, (marker, [r.getMessage() for r in warnings])  # once


def test_a_users_own_staging_path_is_never_deleted(versions, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "data.txt").write_text("linked data")
    for kind in ("file", "folder", "link", "folder with a marker"):
        folder = versions.place(tmp_path / "artifact", 0)
        staging = folder / STAGING_DIR
        if kind == "file":
            staging.write_text("my data")
        elif kind == "link":
            staging.symlink_to(outside, target_is_directory=True)
        else:
            staging.mkdir()
            (staging / "data.txt").write_text("my data")
            if kind == "folder with a marker":  # no ownership file: still not cotprompt's
                (staging / COMMIT_MARKER).write_text(json.dumps({"files": []}))
        assert versions.which(folder) == 0
        read_artifact(folder)
        assert os.path.lexists(staging), kind
        with pytest.raises(OSError, match="is in the way and is not cotprompt's") as info:
            versions.save(folder, 1)
        message = str(info.value)
        assert "\n" not in message and str(staging) in message and "previous files" in message
        assert versions.which(folder) == 0
        if kind == "file":
            assert staging.read_text() == "my data"
        elif kind == "link":
            assert staging.is_symlink() and (outside / "data.txt").read_text() == "linked data"
        else:
            assert (staging / "data.txt").read_text() == "my data"


# -- what a save keeps ----------------------------------------------------------------------------


def test_user_files_and_custom_card_text_survive_saves(tiny_backbone, tmp_path):
    pipeline = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES)
    folder = pipeline.save_pretrained(tmp_path / "artifact")
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "runs").mkdir()
    (folder / "runs" / "log.json").write_text("{}")
    (folder / ".env").write_text("X=1\n")
    card = (folder / CARD_NAME).read_text()
    (folder / CARD_NAME).write_text(card + "\n## My notes\nTrained on my cats.\n")
    with torch.no_grad():
        pipeline.tuner.ctx[0].add_(1.0)
    pipeline.save_pretrained(folder)
    assert (folder / "notes.txt").read_text() == "my notes\n"
    assert (folder / "runs" / "log.json").read_text() == "{}"
    assert (folder / ".env").read_text() == "X=1\n"
    again = (folder / CARD_NAME).read_text()
    assert "Trained on my cats." in again and again.count("cotprompt:generated:start") == 1
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*ARTIFACT_FILES, "notes.txt", "runs", ".env"]
    )
    loaded = CoTPipeline.from_pretrained(folder, backbone=tiny_backbone)
    assert torch.equal(loaded.tuner.ctx[0], pipeline.tuner.ctx[0])


def test_concurrent_saves_do_not_interleave(versions, tmp_path):
    folder = versions.place(tmp_path / "artifact", 0)
    children = [
        FORK.Process(target=_save_n_times, args=(versions, folder, version, 15))
        for version in (0, 1)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    assert versions.which(folder) in (0, 1)
    assert _phase(folder) == "idle"


def _save_n_times(versions: Versions, folder: Path, version: int, times: int) -> None:
    for _ in range(times):
        versions.save(folder, version)


def test_commit_files_refuses_names_outside_the_folder(tmp_path):
    for name in ("../x", "a/b", ".hidden", "", STAGING_DIR):
        with pytest.raises(ValueError, match="invalid file names"):
            commit_files(tmp_path, {name: lambda path: path.write_text("x")})
    assert list(tmp_path.iterdir()) == []


def test_failing_writer_leaves_the_old_files(tmp_path):
    (tmp_path / "a.txt").write_text("old a")
    (tmp_path / "b.txt").write_text("old b")

    def broken(path: Path) -> None:
        raise RuntimeError("generator broke")

    with pytest.raises(RuntimeError, match="generator broke"):
        commit_files(tmp_path, {"a.txt": lambda p: p.write_text("new a"), "b.txt": broken})
    assert (tmp_path / "a.txt").read_text() == "old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_pull_into_local_dir_is_all_or_nothing(versions, tmp_path, monkeypatch):
    import cotprompt.hub.download as hub_download
    from cotprompt.artifact.format import read_config

    cache = versions.place(tmp_path / "cache", 1)  # what the download brought
    monkeypatch.setattr(hub_download, "download_artifact",
                        lambda repo_id, **kwargs: (cache, {"commit": "c0ffee"}))
    monkeypatch.setattr(hub_download, "check_artifact", lambda folder, **_: read_config(folder))
    local = versions.place(tmp_path / "local", 0)
    real_copy, copies = shutil.copyfile, []

    def copy_then_fill_the_disk(src, dst):
        copies.append(dst)
        if len(copies) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_copy(src, dst)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shutil, "copyfile", copy_then_fill_the_disk)
        with pytest.raises(OSError, match="keeps its previous files"):
            hub_download.pull("alice/prompts", local_dir=local)
    assert versions.which(local) == 0 and _phase(local) == "idle"
    assert hub_download.pull("alice/prompts", local_dir=local).folder == local
    assert versions.which(local) == 1
    assert sorted(p.name for p in local.iterdir()) == sorted(ARTIFACT_FILES)


# -- file modes ---------------------------------------------------------------------------------


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def _modes(folder: Path) -> set[int]:
    return {stat.S_IMODE((folder / name).stat().st_mode) for name in ARTIFACT_FILES}


def test_files_follow_the_umask(versions, tmp_path, umask):
    umask(0o022)
    assert current_umask() == 0o022
    folder = versions.save(tmp_path / "a", 0)
    assert _modes(folder) == {0o644}
    versions.save(folder, 1)  # a re-save keeps 0644
    assert _modes(folder) == {0o644}
    write_text_atomic(tmp_path / "plain.txt", "x")  # every atomic write (caches, checkpoints)
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o644
    umask(0o077)
    assert current_umask() == 0o077
    assert _modes(versions.save(tmp_path / "b", 0)) == {0o600}
    umask(0o002)
    assert _modes(versions.save(tmp_path / "c", 0)) == {0o664}


def test_umask_fallback_without_proc(monkeypatch, umask):
    import cotprompt.io as cio

    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(cio, "open", no_proc, raising=False)
    umask(0o027)
    assert cio.current_umask() == 0o027
    assert os.umask(0o027) == 0o027  # left as it was


# -- output places are checked before training --------------------------------------------------


def test_check_writable(tmp_path):
    check_writable(tmp_path / "new" / "deeper", 1000)  # a missing folder: its parent is checked
    assert not (tmp_path / "new").exists()  # nothing created
    assert list(tmp_path.iterdir()) == []  # probe removed
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"output folder .*afile.*out: .*afile is not a folder"):
        check_writable(tmp_path / "afile" / "out")
    with pytest.raises(ConfigError, match=r"checkpoint folder .*afile: not a folder"):
        check_writable(tmp_path / "afile", what="checkpoint folder")


def _limit_file_size(limit: int = 1 << 16) -> None:
    """Writes past ``limit`` bytes fail with EFBIG (SIGXFSZ ignored, as Python does anyway)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def _limited_probe(folder: Path, conn) -> None:
    _limit_file_size()
    try:
        check_writable(folder, 1 << 20)
    except ConfigError as exc:
        conn.send(str(exc))
    else:
        conn.send("ok")


def test_check_writable_sees_a_file_size_limit(tmp_path):
    receive, send = FORK.Pipe(duplex=False)
    child = FORK.Process(target=_limited_probe, args=(tmp_path / "out", send))
    child.start()
    child.join(30)
    message = receive.recv()
    assert message.startswith("cannot write to the output folder") and "File too large" in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []


def _digits_config(path: Path, **extra) -> Path:
    config = {
        "backbone": {"name": "open_clip",
                     "config": {"model_name": "cotprompt-tiny", "pretrained": None}},
        "tuner": {"name": "coop", "config": {"n_ctx": 4}},
        "training": {"epochs": 1, "batch_size": 16, "progress": False},
        "data": {"format": "digits", "shots": 1},
        **extra,
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_train_refuses_an_unwritable_output_before_training(tmp_path):
    config = _digits_config(tmp_path / "train.yaml")
    (tmp_path / "afile").write_text("not a folder")
    blocked = tmp_path / "afile" / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "cotprompt", "train", "--config", str(config), "--output",
         str(blocked)],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: cannot write to the output folder {blocked}: {tmp_path / 'afile'} "
                     "is not a folder"], proc.stderr
    assert proc.stdout == ""
    # a full disk (here: a file-size limit) is found the same way, before any training
    proc = subprocess.run(
        [sys.executable, "-m", "cotprompt", "train", "--config", str(config), "--output",
         str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, preexec_fn=_limit_file_size,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if line.strip()]
    assert line.startswith(f"error: cannot write to the output folder {tmp_path / 'out'}")
    assert "File too large" in line
    assert not (tmp_path / "out").exists()


# -- readers and savers at the same time -----------------------------------------------------------


def _save_until_killed(versions: Versions, folder: Path, ready) -> None:
    version = 1
    versions.save(folder, version)
    ready.set()
    while True:
        version ^= 1
        versions.save(folder, version)


def test_loads_during_saves_never_fail(versions, tmp_path):
    folder = versions.place(tmp_path / "artifact", 0)
    ready = FORK.Event()
    child = FORK.Process(target=_save_until_killed, args=(versions, folder, ready), daemon=True)
    child.start()
    try:
        assert ready.wait(60)
        for _ in range(150):
            config, tensors = read_artifact(folder)  # never a checksum mismatch, never ENOENT
            matches = [v for v in (0, 1)
                       if all(torch.equal(tensors[k], t) for k, t in versions.args[v][1].items())]
            assert len(matches) == 1
            recorded = json.loads(versions.files[matches[0]][CONFIG_NAME])["weights"]["sha256"]
            assert config["weights"]["sha256"] == recorded
        assert child.is_alive()  # the saves went on all along
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)


def test_push_uploads_exactly_the_checked_bytes(versions, tmp_path, monkeypatch):
    import huggingface_hub

    import cotprompt.hub.push as hub_push

    uploads: list[dict[str, object]] = []

    class FakeApi:
        def __init__(self, **kwargs: object) -> None:
            pass

        def create_repo(self, *args: object, **kwargs: object) -> None:
            pass

        def file_exists(self, *args: object, **kwargs: object) -> bool:
            return False  # no history.json from an earlier push to remove

        def create_commit(self, repo_id, operations, **kwargs):
            uploads.append({op.path_in_repo: op.path_or_fileobj for op in operations})
            return "committed"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(hub_push, "_existing_card", lambda *args, **kwargs: None)
    folder = versions.place(tmp_path / "artifact", 0)
    hub_push.push_folder(folder, "alice/prompts")
    [upload] = uploads
    assert upload[CONFIG_NAME] == versions.files[0][CONFIG_NAME]
    assert upload[WEIGHTS_NAME] == versions.files[0][WEIGHTS_NAME]
    # a file changed after the check (not by a cotprompt save, which waits for the reader lock)
    # is not uploaded unchecked
    real_check = hub_push.check_artifact

    def check_then_change(path, **kwargs):
        config = real_check(path, **kwargs)
        (folder / WEIGHTS_NAME).write_bytes(versions.files[1][WEIGHTS_NAME])
        return config

    monkeypatch.setattr(hub_push, "check_artifact", check_then_change)
    with pytest.raises(ArtifactError, match="changed while it was being checked"):
        hub_push.push_folder(folder, "alice/prompts")
    assert len(uploads) == 1


# -- odd targets ----------------------------------------------------------------------------------


def test_saving_into_a_file_is_a_one_line_error(versions, tmp_path):
    target = tmp_path / "afile"
    target.write_text("my file")
    with pytest.raises(NotADirectoryError, match="exists and is not a folder") as info:
        versions.save(target, 0)
    assert str(target) in str(info.value) and "\n" not in str(info.value)
    assert target.read_text() == "my file"
    config = _digits_config(tmp_path / "train.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "cotprompt", "train", "--config", str(config), "--output",
         str(target)],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: cannot write to the output folder {target}: not a folder"], lines
    assert target.read_text() == "my file"


def test_a_symlinked_card_is_not_followed(tiny_backbone, tmp_path, caplog):
    secret = tmp_path / "secret.txt"
    secret.write_text("API_KEY=hunter2\n")
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / CARD_NAME).symlink_to(secret)
    caplog.set_level("WARNING", logger="cotprompt")
    pipeline = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES)
    pipeline.save_pretrained(folder)
    card = folder / CARD_NAME
    assert not card.is_symlink() and card.is_file()
    assert "hunter2" not in card.read_text()
    assert secret.read_text() == "API_KEY=hunter2\n"
    assert "symbolic link" in caplog.text


def test_pull_removes_a_stale_card_when_the_new_artifact_has_none(versions, tmp_path,
                                                                  monkeypatch):
    import cotprompt.hub.download as hub_download

    cache = versions.place(tmp_path / "cache", 1)
    (cache / CARD_NAME).unlink()  # the pulled artifact has no card
    monkeypatch.setattr(hub_download, "download_artifact",
                        lambda repo_id, **kwargs: (cache, {"commit": "c0ffee"}))
    monkeypatch.setattr(hub_download, "check_artifact", lambda folder, **_: read_config(folder))
    local = versions.place(tmp_path / "local", 0)
    (local / "notes.txt").write_text("my notes")
    hub_download.pull("alice/prompts", local_dir=local)
    assert sorted(p.name for p in local.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME,
                                                              "notes.txt"])
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        assert (local / name).read_bytes() == versions.files[1][name]
    # with a card, the card is copied as before
    (cache / CARD_NAME).write_bytes(versions.files[1][CARD_NAME])
    hub_download.pull("alice/prompts", local_dir=local)
    assert versions.which(local) == 1


def test_a_failed_recovery_before_a_save_names_the_folder(versions, tmp_path):
    folder = tmp_path / "artifact"
    _journal(versions, folder, committed=True)
    with pytest.MonkeyPatch.context() as patch:

        def broken(*args, **kwargs):
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        patch.setattr(os, "replace", broken)
        with pytest.raises(OSError, match="keeps its previous files") as info:
            versions.save(folder, 0)
    assert info.value.errno == errno.EIO
    assert str(folder) in str(info.value) and "\n" not in str(info.value)
    assert versions.which(folder) == 1  # the committed save is finished by the next load


# -- a save killed after its commit point, then a save or pull with a training history -----------


def _save_history_and_die_after_the_commit_point(versions: Versions, folder: Path) -> None:
    real_replace = os.replace

    def die_before_the_config(src, dst, *args, **kwargs):
        # history.json is moved in; the config that records it is not: killed (power cut)
        if Path(dst) == folder / CONFIG_NAME and STAGING_DIR in str(src):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = die_before_the_config
    write_artifact(folder, *versions.args[1], history=[{"epoch": 1, "loss": 0.25}])


def _killed_after_the_commit_point(versions: Versions, folder: Path) -> None:
    versions.save(folder, 0)
    child = FORK.Process(target=_save_history_and_die_after_the_commit_point,
                         args=(versions, folder))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    assert _phase(folder) == "committed" and (folder / "history.json").exists()


def test_a_save_with_history_after_a_save_killed_past_its_commit_point(versions, tmp_path):
    folder = tmp_path / "artifact"
    _killed_after_the_commit_point(versions, folder)
    # the interrupted save's history.json is its own artifact's once it is finished: replaced
    write_artifact(folder, *versions.args[0], history=[{"epoch": 1, "loss": 0.125}])
    assert _phase(folder) == "idle"
    assert (folder / WEIGHTS_NAME).read_bytes() == versions.files[0][WEIGHTS_NAME]
    loaded = CoTPipeline.from_pretrained(folder, backbone=versions.backbone)
    assert loaded.training_history == [{"epoch": 1, "loss": 0.125}]


def test_a_pull_after_a_save_killed_past_its_commit_point(versions, tmp_path, monkeypatch):
    import cotprompt.hub.download as hub_download

    cache = write_artifact(tmp_path / "cache", *versions.args[0],
                           history=[{"epoch": 3, "loss": 0.5}])
    monkeypatch.setattr(hub_download, "download_artifact",
                        lambda repo_id, **kwargs: (cache, {"commit": "c0ffee"}))
    monkeypatch.setattr(hub_download, "check_artifact", lambda folder, **_: read_config(folder))
    local = tmp_path / "local"
    _killed_after_the_commit_point(versions, local)
    assert hub_download.pull("alice/prompts", local_dir=local).folder == local
    assert _phase(local) == "idle"
    assert (local / "history.json").read_bytes() == (cache / "history.json").read_bytes()
