"""Atomic file writes (a crash never leaves a half-written file behind), the mode new files get,
advisory folder locks (exclusive for a writer, shared for readers), and the check that a folder
can receive output before long work starts."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

from safetensors.torch import save
from torch import Tensor

from cotprompt.errors import ConfigError

try:  # POSIX only; elsewhere saves are not locked against each other
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# folder locks log where folder commits (their one user) always have
_lock_logger = logging.getLogger("cotprompt.folder_commit")

_UMASK_LOCK = threading.Lock()
_PROBE_MARGIN = 1 << 20  # bytes added to a writability probe: config, card, file-system slack


def current_umask() -> int:
    """The process's umask, read without changing it where possible.

    Linux reports it in ``/proc/self/status``; elsewhere it is read with ``os.umask`` under a
    lock (a file another thread creates at that instant may get mode 0o666 & ~0o022).
    """
    with (
        contextlib.suppress(OSError, ValueError, IndexError),
        open("/proc/self/status", encoding="ascii", errors="replace") as handle,
    ):
        for line in handle:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        umask = os.umask(0o022)
        os.umask(umask)
    return umask


def new_file_mode() -> int:
    """The permission bits a newly created regular file gets: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (renames, new and removed files) to disk; a no-op where folders
    cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (PermissionError, IsADirectoryError):  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # pragma: no cover - some file systems refuse fsync on folders
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def _flock(folder: str | os.PathLike[str], operation: int, blocking: bool) -> Iterator[bool]:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, operation | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        except OSError as exc:  # e.g. ENOLCK on some network file systems
            _lock_logger.debug("cannot lock %s (%s); going on without a lock", folder, exc)
        yield True
    finally:
        os.close(fd)  # also releases the lock


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], *, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive advisory lock on ``folder`` (``flock`` on the folder itself).

    Args:
        folder: An existing folder.
        blocking: Wait for the lock; otherwise yield ``False`` at once when another process or
            thread holds it (exclusively, or shared by a reader).

    Yields:
        Whether the lock is held. Where locking is unavailable (no ``fcntl``, or a file system
        that refuses ``flock``) it yields ``True`` without a lock.

    Raises:
        OSError: ``folder`` cannot be opened.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield True
        return
    with _flock(folder, fcntl.LOCK_EX, blocking) as locked:
        yield locked


@contextlib.contextmanager
def reading(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold a shared advisory lock on ``folder`` while reading several of its files.

    A commit into the folder (which holds the exclusive lock from its first write to its last
    move) waits until the readers are done, and a reader waits for a commit in progress, so the
    files read under it all come from one commit. Skipped silently where locking is unavailable
    or ``folder`` cannot be opened (a missing folder: the read then fails by itself).

    Do not call :func:`~cotprompt.folder_commit.commit_files` (nor a blocking
    :func:`~cotprompt.folder_commit.recover`) on the same folder inside it: that would wait for
    this very lock. :func:`~cotprompt.folder_commit.recover` with its default ``blocking=False``
    is fine (it answers ``"busy"``).
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    On any exception the temporary file is removed and ``target`` is left as it was. The new file
    gets the mode a plain ``open()`` would give it (``0o666 & ~umask``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, new_file_mode())  # mkstemp made it 0600; follow the umask like open()
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_safetensors_atomic(
    tensors: Mapping[str, Tensor],
    target: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Save ``tensors`` (made contiguous, on CPU) as safetensors to ``target`` atomically.

    Raises:
        OSError: The file cannot be written (``ENOSPC``, ``EFBIG``...); ``target`` is unchanged.
    """
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    # serialised in memory and written by Python, so that a full disk is an OSError with its
    # errno rather than safetensors' generic error
    data = save(cpu, metadata=dict(metadata) if metadata else None)
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def check_writable(
    folder: str | os.PathLike[str], size: int = 0, *, what: str = "output folder"
) -> None:
    """Check that ``folder`` can receive about ``size`` bytes, before long work starts.

    Nothing is created: the folder, or its nearest existing parent when it does not exist yet,
    receives a probe file of ``size`` bytes plus a margin, which is flushed to disk (so that a
    full disk or a quota shows) and removed.

    Args:
        folder: Where output will be written.
        size: The expected size of the output in bytes.
        what: How the error message names the folder (``"output folder"``...).

    Raises:
        ConfigError: The folder (or a path component) is not a folder, or the probe cannot be
            written; one line naming the folder and the operating system's reason.
    """
    folder = Path(folder)
    existing = folder
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        reason = "not a folder" if existing == folder else f"{existing} is not a folder"
        raise ConfigError(f"cannot write to the {what} {folder}: {reason}")
    remaining = max(0, int(size)) + _PROBE_MARGIN
    block = os.urandom(min(remaining, 1 << 16))  # random: compressing file systems count it
    probe: str | None = None
    try:
        fd, probe = tempfile.mkstemp(prefix=".cotprompt-probe-", dir=existing)
        with os.fdopen(fd, "wb") as handle:
            while remaining > 0:
                chunk = block[: min(remaining, len(block))]
                handle.write(chunk)
                remaining -= len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        reason = exc.strerror or str(exc)
        where = "" if existing == folder else f" (checked in {existing})"
        raise ConfigError(f"cannot write to the {what} {folder}{where}: {reason}") from exc
    finally:
        if probe is not None:
            with contextlib.suppress(OSError):
                os.unlink(probe)
