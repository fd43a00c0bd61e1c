"""Replace a set of files in a folder all-or-nothing, with recovery after a crash.

:func:`commit_files` uses a redo journal kept inside the folder:

1. it takes an advisory lock on the folder (``fcntl.flock`` on the folder itself, so no lock
   file is left behind; skipped where ``fcntl`` is missing) and finishes or discards any earlier
   interrupted commit (:func:`recover`);
2. it writes every new file into the staging folder ``<folder>/.cotprompt-staging/`` and flushes
   each to disk;
3. it writes the commit marker ``.committed.json`` (the list of files) into the staging folder
   atomically: **this is the moment the new set of files replaces the old one**;
4. it moves each staged file over the live one (``os.replace``), flushes the folder, then
   removes the marker and the staging folder.

Whatever stops it (an exception, a full disk, ``kill -9``, a power cut), the folder then holds
the complete old set (no marker: the staging folder is discarded later) or the complete new one
(marker: the remaining moves are finished later). :func:`recover` does that, and is called at the
start of every commit and by readers (``cotprompt.artifact.read_config``). Where the folder cannot
be written (a read-only mount), readers use :func:`resolve`, which picks each file from a
committed journal when the journal holds it. Other files in the folder are never touched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Literal

from cotprompt.io import fsync_folder, new_file_mode

try:  # POSIX only; elsewhere saves are not locked against each other
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

__all__ = ["COMMIT_MARKER", "STAGING_DIR", "Writer", "commit_files", "folder_lock", "recover",
           "resolve"]

STAGING_DIR = ".cotprompt-staging"
COMMIT_MARKER = ".committed.json"

Writer = Callable[[Path], None]
"""Writes one new file at the path it is given (a path inside the staging folder)."""

RecoveryOutcome = Literal["rolled-forward", "discarded", "pending", "busy"]


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


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], *, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive advisory lock on ``folder`` (``flock`` on the folder itself).

    Args:
        folder: An existing folder.
        blocking: Wait for the lock; otherwise yield ``False`` at once when another process or
            thread holds it.

    Yields:
        Whether the lock is held. Where locking is unavailable (no ``fcntl``, or a file system
        that refuses ``flock``) it yields ``True`` without a lock.

    Raises:
        OSError: ``folder`` cannot be opened.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield True
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        except OSError as exc:  # e.g. ENOLCK on some network file systems
            logger.debug("cannot lock %s (%s); going on without a lock", folder, exc)
        yield True
    finally:
        os.close(fd)  # also releases the lock


def _read_marker(staging: Path) -> tuple[list[str], list[str]] | None:
    """``(files, remove)`` of a committed journal, ``None`` when not committed or malformed."""
    marker = staging / COMMIT_MARKER
    if marker.is_symlink() or not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    files, remove = data.get("files"), data.get("remove", [])
    if not isinstance(files, list) or not isinstance(remove, list):
        return None
    if not all(_valid_name(n) for n in [*files, *remove]):
        return None
    for name in files:  # every staged file still there must be one this module wrote
        staged = staging / name
        if staged.is_symlink() or (staged.exists() and not staged.is_file()):
            return None
    return files, remove


def _discard(staging: Path) -> None:
    """Remove a journal; the marker goes first, so that a journal is never left committed with
    staged files missing (those would read as already moved)."""
    if staging.is_symlink() or not staging.is_dir():
        staging.unlink()
        return
    marker = staging / COMMIT_MARKER
    if os.path.lexists(marker):
        marker.unlink()
        fsync_folder(staging)
    shutil.rmtree(staging)


def _recover_locked(folder: Path) -> RecoveryOutcome | None:
    staging = folder / STAGING_DIR
    if not os.path.lexists(staging):
        return None
    journal = None if staging.is_symlink() or not staging.is_dir() else _read_marker(staging)
    if journal is None:
        _discard(staging)
        fsync_folder(folder)
        return "discarded"
    files, remove = journal
    for name in files:
        if (staging / name).exists():
            os.replace(staging / name, folder / name)
    for name in remove:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    fsync_folder(folder)
    (staging / COMMIT_MARKER).unlink()  # only now: until here a crash re-runs the moves
    shutil.rmtree(staging)
    fsync_folder(folder)
    return "rolled-forward"


def recover(folder: str | os.PathLike[str], *, blocking: bool = False) -> RecoveryOutcome | None:
    """Finish (committed) or discard (not committed) a commit interrupted in ``folder``.

    Cheap when there is nothing to do (one ``lstat``). What it does is logged as a warning on the
    ``cotprompt.folder_commit`` logger.

    Args:
        folder: The folder; one that does not exist needs no recovery.
        blocking: Wait when another process or thread is committing into ``folder``; by default
            leave its journal alone (it is not interrupted, only in progress).

    Returns:
        ``None`` when there was nothing to recover, ``"rolled-forward"`` or ``"discarded"`` when
        that was done, ``"busy"`` when a commit is in progress, ``"pending"`` when the folder
        cannot be written (a read-only mount): :func:`resolve` then still finds the committed
        files.

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
            outcome = _recover_locked(folder)
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


def resolve(folder: str | os.PathLike[str], name: str) -> Path:
    """The path to read ``name`` from: the staged copy of a committed, unfinished journal when
    there is one (a folder :func:`recover` could not write), else ``folder / name``."""
    folder = Path(folder)
    staging = folder / STAGING_DIR
    if os.path.lexists(staging) and not staging.is_symlink() and staging.is_dir():
        journal = _read_marker(staging)
        if journal is not None and name in journal[0] and (staging / name).is_file():
            return staging / name
    return folder / name


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def commit_files(
    folder: str | os.PathLike[str],
    writers: Mapping[str, Writer],
    *,
    remove: Iterable[str] = (),
) -> Path:
    """Replace the files ``writers`` names in ``folder`` all-or-nothing (see the module doc).

    Args:
        folder: The target folder, created when missing.
        writers: File name -> a function writing that file's new content at the path it is
            given. They run in order, so a later writer may read a file an earlier one staged
            (in the same folder as its own path). Names are plain file names not starting with
            ``.``.
        remove: Names to delete from ``folder`` in the same commit.

    Returns:
        The folder.

    Raises:
        ValueError: An invalid file name.
        OSError: Writing failed (``ENOSPC``, ``EFBIG``, permissions...); the folder holds its
            previous files and no staging folder. A failure after the commit point is logged
            instead of raised: the new files are in place or are put there by the next
            :func:`recover`.
        Exception: Whatever a writer raises, with the same guarantee.
    """
    folder = Path(folder)
    names = list(writers)
    removed = [n for n in remove if n not in writers]
    bad = [n for n in [*names, *removed] if not _valid_name(n)]
    if bad:
        raise ValueError(f"invalid file names for a folder commit: {bad}")
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / STAGING_DIR
    with folder_lock(folder):
        outcome = _recover_locked(folder)
        if outcome is not None:
            logger.warning("%s an interrupted save into %s before saving again",
                           "finished" if outcome == "rolled-forward" else "discarded", folder)
        try:
            staging.mkdir()
            fsync_folder(folder)
            mode = new_file_mode()
            for name in names:
                writers[name](staging / name)
                os.chmod(staging / name, mode)
                _fsync_file(staging / name)
            marker_tmp = staging / ".committing.tmp"
            marker_tmp.write_text(json.dumps({"files": names, "remove": removed}) + "\n",
                                  encoding="utf-8")
            _fsync_file(marker_tmp)
            fsync_folder(staging)
            os.replace(marker_tmp, staging / COMMIT_MARKER)  # the commit point
        except BaseException as exc:
            with contextlib.suppress(OSError):
                _discard(staging)
            if isinstance(exc, OSError):  # name the folder and what happened to it
                message = (f"cannot save into {folder} ({exc.strerror or exc}); it keeps its "
                           "previous files")
                args = (message,) if exc.errno is None else (exc.errno, message)
                try:
                    error = type(exc)(*args)
                except TypeError:  # an OSError subclass with its own constructor
                    error = OSError(*args)
                raise error from exc
            raise
        try:
            fsync_folder(staging)
            _recover_locked(folder)
        except OSError as exc:
            logger.warning(
                "the save into %s is committed but moving its files in place failed (%s); "
                "the next load or save of the folder finishes it", folder, exc
            )
    return folder
