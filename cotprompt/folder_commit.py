"""Replace a set of files in a folder all-or-nothing, with recovery after a crash.

:func:`commit_files` uses a redo journal kept inside the folder:

1. it takes an exclusive advisory lock on the folder (``fcntl.flock`` on the folder itself, so no
   lock file is left behind; skipped where ``fcntl`` is missing) and finishes or discards any
   earlier interrupted commit (:func:`recover`);
2. it creates the staging folder ``<folder>/.cotprompt-staging/`` and, first thing inside it, the
   ownership file ``.cotprompt-journal`` (a fixed signature): only a staging folder holding it is
   ever removed by this module;
3. it writes every new file into the staging folder and flushes each to disk;
4. it writes the commit marker ``.committed.json`` (the list of files) into the staging folder
   atomically: **this is the moment the new set of files replaces the old one**;
5. it moves each staged file over the live one (``os.replace``; a file the commit deletes is
   unlinked), flushes the folder, then removes the marker and the staging folder (the ownership
   file last).

Whatever stops it (an exception, a full disk, ``kill -9``, a power cut), the folder then holds
the complete old set (no marker: the staging folder is discarded later) or the complete new one
(marker: the remaining moves are finished later). :func:`recover` does that, and is called at the
start of every commit and by readers (``cotprompt.artifact.read_config``). Where the folder cannot
be written (a read-only mount), readers use :func:`resolve`, which picks each file from a
committed journal when the journal holds it. Other files in the folder are never touched.

A journal is only acted on when it is one this module could have written for the caller: every
function takes the names of the files the caller's commits may hold (``allowed``; the artifact
layer passes its three file names). A journal naming any other file, a marker that cannot be read,
an odd staged entry, or a ``.cotprompt-staging`` that is not a folder holding the ownership file
(a user's own file, folder or link of that name; an empty folder holds nothing and is removed) is
left exactly as it is: loads ignore it (with a warning, once) and :func:`commit_files` refuses
to save until it is moved away. A committed journal is never discarded, so an unusable one can
never roll a folder back into a mix of old and new files: the caller's own checks (a checksum)
then fail instead.

Readers that read several files take a shared lock (:func:`reading`), so that they never see a
commit half-way.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Literal

from cotprompt.io import folder_lock, fsync_folder, new_file_mode, reading

logger = logging.getLogger(__name__)

__all__ = ["COMMIT_MARKER", "OWNER_FILE", "STAGING_DIR", "Writer", "commit_files", "folder_lock",
           "reading", "recover", "resolve"]

STAGING_DIR = ".cotprompt-staging"
COMMIT_MARKER = ".committed.json"
OWNER_FILE = ".cotprompt-journal"
OWNER_SIGNATURE = b"cotprompt folder-commit journal, format 1\n"

Writer = Callable[[Path], None]
"""Writes one new file at the path it is given (a path inside the staging folder)."""

RecoveryOutcome = Literal["rolled-forward", "discarded", "pending", "busy", "left-alone"]

_State = Literal["none", "foreign", "uncommitted", "committed", "unusable"]

_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def _valid_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and bool(name)
        and name not in (".", "..")
        and not name.startswith(".")
        and "/" not in name
        and os.sep not in name
        and (os.altsep is None or os.altsep not in name)
        and "\0" not in name
    )


def _warn_once(folder: Path, key: str, message: str, *args: object) -> None:
    with _warned_lock:
        if (str(folder), key) in _warned:
            return
        _warned.add((str(folder), key))
    logger.warning(message, *args)


# -- inspecting a journal ------------------------------------------------------------------------


def _owned(staging: Path) -> bool:
    """Whether ``staging`` (a real folder) is one this module created: it holds the ownership
    file with the signature, or, when a commit was stopped while writing that file, only that
    file with the beginning of the signature."""
    owner = staging / OWNER_FILE
    if owner.is_symlink() or not owner.is_file():
        return False
    try:
        with open(owner, "rb") as handle:
            data = handle.read(len(OWNER_SIGNATURE) + 1)
    except OSError:
        return False
    if data == OWNER_SIGNATURE:
        return True
    try:
        alone = os.listdir(staging) == [OWNER_FILE]
    except OSError:
        return False
    return alone and OWNER_SIGNATURE.startswith(data)


def _is_empty_dir(path: Path) -> bool:
    try:
        return not path.is_symlink() and path.is_dir() and not os.listdir(path)
    except OSError:
        return False


def _read_marker(
    staging: Path, allowed: Collection[str]
) -> tuple[tuple[list[str], list[str]] | None, str]:
    """``((files, remove), "")`` of a committed journal, or ``(None, why it cannot be used)``."""
    marker = staging / COMMIT_MARKER
    if marker.is_symlink() or not marker.is_file():
        return None, "its commit marker is not a regular file"
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        return None, f"its commit marker cannot be read ({exc})"
    if not isinstance(data, dict):
        return None, "its commit marker is malformed"
    files, remove = data.get("files"), data.get("remove", [])
    if not isinstance(files, list) or not isinstance(remove, list):
        return None, "its commit marker is malformed"
    names = [*files, *remove]
    if not all(_valid_name(n) for n in names):
        return None, "its commit marker is malformed"
    others = sorted({str(n) for n in names} - set(allowed))
    if others:
        return None, f"it names files that are not this folder's to replace: {others}"
    for name in files:  # every staged file still there must be one this module wrote
        staged = staging / name
        if staged.is_symlink() or (os.path.lexists(staged) and not staged.is_file()):
            return None, f"its staged {name} is not a regular file"
    for name in remove:
        if os.path.lexists(staging / name):
            return None, f"it stages {name} and also removes it"
    return (files, remove), ""


def _inspect(
    folder: Path, allowed: Collection[str]
) -> tuple[_State, tuple[list[str], list[str]] | None, str]:
    """What ``folder``'s staging path is: ``(state, journal, why)``."""
    staging = folder / STAGING_DIR
    if not os.path.lexists(staging):
        return "none", None, ""
    if staging.is_symlink() or not staging.is_dir():
        return "foreign", None, "it is not a folder"
    if not _owned(staging):
        if _is_empty_dir(staging):  # a commit stopped right after creating it; holds nothing
            return "uncommitted", None, ""
        return "foreign", None, f"it does not hold cotprompt's {OWNER_FILE}"
    if not os.path.lexists(staging / COMMIT_MARKER):
        return "uncommitted", None, ""
    journal, why = _read_marker(staging, allowed)
    if journal is None:
        return "unusable", None, why
    return "committed", journal, ""


def _warn_left_alone(folder: Path, state: _State, why: str) -> None:
    staging = folder / STAGING_DIR
    if state == "foreign":
        _warn_once(folder, f"foreign: {why}",
                   "%s is not a journal of cotprompt's (%s); leaving it alone and ignoring it",
                   staging, why)
    else:
        _warn_once(folder, f"unusable: {why}",
                   "%s holds a committed save that cannot be finished (%s); leaving it alone "
                   "for you to look at: the folder may hold a mix of old and new files, which "
                   "its checks will refuse", staging, why)


# -- acting on a journal -------------------------------------------------------------------------


def _remove_staging(staging: Path) -> None:
    """Remove a staging folder this module owns: the marker first (so that a journal is never
    left committed with staged files missing: those would read as already moved), the ownership
    file last (so that a staging folder left half-removed is still recognised as ours, or is
    empty)."""
    if os.path.lexists(staging / COMMIT_MARKER):
        (staging / COMMIT_MARKER).unlink()
        fsync_folder(staging)
    for entry in os.listdir(staging):
        if entry == OWNER_FILE:
            continue
        path = staging / entry
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    with contextlib.suppress(FileNotFoundError):
        (staging / OWNER_FILE).unlink()
    os.rmdir(staging)


def _recover_locked(
    folder: Path, allowed: Collection[str]
) -> tuple[RecoveryOutcome | None, _State, str]:
    state, journal, why = _inspect(folder, allowed)
    staging = folder / STAGING_DIR
    if state == "none":
        return None, state, why
    if state in ("foreign", "unusable"):
        _warn_left_alone(folder, state, why)
        return "left-alone", state, why
    if state == "uncommitted":  # no marker: nothing was moved; the old files stand
        _remove_staging(staging)
        fsync_folder(folder)
        return "discarded", state, why
    assert journal is not None
    files, remove = journal
    for name in files:
        if os.path.lexists(staging / name):
            os.replace(staging / name, folder / name)
    for name in remove:
        path = folder / name
        if path.is_symlink() or path.is_file():
            path.unlink()
    fsync_folder(folder)
    _remove_staging(staging)  # the marker goes first: until here a crash re-runs the moves
    fsync_folder(folder)
    return "rolled-forward", state, why


def recover(
    folder: str | os.PathLike[str], allowed: Collection[str], *, blocking: bool = False
) -> RecoveryOutcome | None:
    """Finish (committed) or discard (not committed) a commit interrupted in ``folder``.

    Cheap when there is nothing to do (one ``lstat``). What it does is logged as a warning on the
    ``cotprompt.folder_commit`` logger.

    Args:
        folder: The folder; one that does not exist needs no recovery.
        allowed: The names of the files a commit into ``folder`` may hold; a journal naming any
            other file is left alone.
        blocking: Wait when another process or thread is committing into (or reading) ``folder``;
            by default leave its journal alone (it is not interrupted, only in progress).

    Returns:
        ``None`` when there was nothing to recover, ``"rolled-forward"`` or ``"discarded"`` when
        that was done, ``"busy"`` when a commit or a reader holds the folder, ``"pending"`` when
        the folder cannot be written (a read-only mount): :func:`resolve` then still finds the
        committed files, ``"left-alone"`` when the staging path is not a usable journal of this
        module's (logged once; see the module doc).

    Raises:
        OSError: Recovery failed for another reason than a read-only folder (which returns
            ``"pending"``).
    """
    folder = Path(folder)
    if not os.path.lexists(folder / STAGING_DIR):
        return None
    try:
        with folder_lock(folder, blocking=blocking) as locked:
            if not locked:
                logger.debug("a save into %s is in progress; not recovering it", folder)
                return "busy"
            outcome, _state, _why = _recover_locked(folder, allowed)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        logger.warning(
            "%s holds an interrupted save that cannot be finished or discarded here (%s); "
            "reading the files it committed, if any, from %s",
            folder, exc.strerror or exc, folder / STAGING_DIR,
        )
        return "pending"
    if outcome == "rolled-forward":
        logger.warning("finished a save into %s that had been interrupted after it was "
                       "committed: the folder holds the new files", folder)
    elif outcome == "discarded":
        logger.warning("discarded a save into %s that had been interrupted before it was "
                       "committed: the folder holds the previous files", folder)
    return outcome


def resolve(folder: str | os.PathLike[str], name: str, allowed: Collection[str]) -> Path:
    """The path to read ``name`` from: the staged copy of a committed, unfinished journal when
    there is one (a folder :func:`recover` could not write), else ``folder / name``. A journal
    that is not usable (see :func:`recover`) is ignored."""
    folder = Path(folder)
    state, journal, why = _inspect(folder, allowed)
    if state in ("foreign", "unusable"):
        _warn_left_alone(folder, state, why)
    elif state == "committed" and journal is not None and name in journal[0]:
        staged = folder / STAGING_DIR / name
        if staged.is_file() and not staged.is_symlink():
            return staged
    return folder / name


# -- committing ----------------------------------------------------------------------------------


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _save_error(
    folder: Path, exc: OSError, detail: str | None = None, *, kept: bool = True
) -> OSError:
    """``exc`` as the same kind of error, naming the folder (and saying it keeps its files)."""
    message = f"cannot save into {folder} ({detail or exc.strerror or exc})"
    if kept:
        message += "; it keeps its previous files"
    args = (message,) if exc.errno is None else (exc.errno, message)
    try:
        error = type(exc)(*args)
    except TypeError:  # an OSError subclass with its own constructor
        error = OSError(*args)
    return error


def _make_staging(folder: Path, staging: Path) -> None:
    """Sign a new, empty staging folder as this module's and flush it to disk."""
    fd = os.open(staging / OWNER_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, new_file_mode())
    try:
        os.write(fd, OWNER_SIGNATURE)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_folder(staging)
    fsync_folder(folder)


def commit_files(
    folder: str | os.PathLike[str],
    writers: Mapping[str, Writer | None],
    *,
    allowed: Collection[str] | None = None,
) -> Path:
    """Replace the files ``writers`` names in ``folder`` all-or-nothing (see the module doc).

    Args:
        folder: The target folder, created when missing.
        writers: File name -> a function writing that file's new content at the path it is
            given. They run in order, so a later writer may read a file an earlier one staged
            (in the same folder as its own path). ``None`` instead of a function deletes that
            file in the same commit. Names are plain file names not starting with ``.``.
        allowed: The names of the files commits into ``folder`` may hold (default: the names in
            ``writers``); an interrupted earlier commit is only finished when it names no other
            file. ``writers`` must name only these.

    Returns:
        The folder.

    Raises:
        ValueError: An invalid file name, or one outside ``allowed``.
        NotADirectoryError: ``folder`` exists and is not a folder.
        FileExistsError: ``folder/.cotprompt-staging`` is in the way: not cotprompt's (a user's
            file or folder of that name), or a committed save that cannot be finished; it is
            left as it is and so is the folder.
        OSError: Writing failed (``ENOSPC``, ``EFBIG``, permissions...), or finishing an earlier
            interrupted save failed; the folder holds its previous files and no staging folder
            of this save. A failure after the commit point is logged instead of raised: the new
            files are in place or are put there by the next :func:`recover`.
        Exception: Whatever a writer raises, with the same guarantee.
    """
    folder = Path(folder)
    names = list(writers)
    allowed = set(names) if allowed is None else set(allowed)
    bad = [n for n in names if not _valid_name(n)]
    if bad:
        raise ValueError(f"invalid file names for a folder commit: {bad}")
    outside = [n for n in names if n not in allowed]
    if outside:
        raise ValueError(f"file names outside the allowed ones for a folder commit: {outside}")
    written = [n for n in names if writers[n] is not None]
    removed = [n for n in names if writers[n] is None]
    if os.path.lexists(folder) and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR,
                                 f"cannot save into {folder}: it exists and is not a folder")
    if not folder.is_dir():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _save_error(folder, exc, f"cannot create it: {exc.strerror or exc}",
                                  kept=False) from exc
    staging = folder / STAGING_DIR
    with folder_lock(folder):
        try:
            outcome, state, why = _recover_locked(folder, allowed)
        except OSError as exc:
            raise _save_error(folder, exc, "finishing an earlier interrupted save failed: "
                              f"{exc.strerror or exc}") from exc
        if outcome in ("rolled-forward", "discarded"):
            logger.warning("%s an interrupted save into %s before saving again",
                           "finished" if outcome == "rolled-forward" else "discarded", folder)
        elif outcome == "left-alone":
            what = ("is in the way and is not cotprompt's" if state == "foreign"
                    else "holds a committed save that cannot be finished")
            raise FileExistsError(
                errno.EEXIST,
                f"cannot save into {folder}: {staging} {what} ({why}); move it away to save "
                "here. The folder keeps its previous files",
            )
        created = False
        try:
            staging.mkdir()
            created = True
            _make_staging(folder, staging)
            mode = new_file_mode()
            for name in written:
                writer = writers[name]
                assert writer is not None
                writer(staging / name)
                os.chmod(staging / name, mode)
                _fsync_file(staging / name)
            marker_tmp = staging / ".committing.tmp"
            marker_tmp.write_text(json.dumps({"files": written, "remove": removed}) + "\n",
                                  encoding="utf-8")
            _fsync_file(marker_tmp)
            fsync_folder(staging)
            os.replace(marker_tmp, staging / COMMIT_MARKER)  # the commit point
        except BaseException as exc:
            # Stopped before the commit point (nothing moved yet): the staging folder, ours, goes.
            if created:
                with contextlib.suppress(OSError):
                    _remove_staging(staging)
            if isinstance(exc, OSError):  # name the folder and what happened to it
                raise _save_error(folder, exc) from exc
            raise
        try:
            fsync_folder(staging)
            _recover_locked(folder, allowed)
        except OSError as exc:
            logger.warning(
                "the save into %s is committed but moving its files in place failed (%s); "
                "the next load or save of the folder finishes it", folder, exc
            )
    return folder
