"""Whose an artifact folder's ``history.json`` is, and commits that replace or remove it only
when it is the folder's artifact's.

``history.json`` is the one artifact file a user may well have a file of that name of their own
in a folder (a save or a pull into a project folder): a save or a ``pull --local-dir`` replaces
or removes it only when the folder's current config records it with the same SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from cotprompt.artifact.files import CONFIG_NAME, FOLDER_FILES
from cotprompt.artifact.history import HISTORY_NAME, MAX_HISTORY_BYTES
from cotprompt.errors import ArtifactError
from cotprompt.folder_commit import Writer, commit_files, recover

__all__ = ["HistoryOwnership", "commit_with_history", "history_ownership"]

logger = logging.getLogger("cotprompt.artifact")  # the logger name users configure

HistoryOwnership = Literal["absent", "recorded", "foreign"]


def history_ownership(directory: str | Path) -> HistoryOwnership:
    """Whose the ``history.json`` in ``directory`` is: ``"absent"`` (none), ``"recorded"`` (the
    one the folder's current ``cotprompt_config.json`` records, a regular file whose SHA-256
    matches the record) or ``"foreign"`` (anything else: a file of the user's, an edited or
    corrupt one, a link, a folder). Only a recorded one is ever replaced or removed by a save
    or a pull. Never raises: an unreadable config records nothing."""
    directory = Path(directory)
    path = directory / HISTORY_NAME
    if not os.path.lexists(path):
        return "absent"
    try:
        config = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
        recorded = config.get("history") if isinstance(config, dict) else None
        if (path.is_symlink() or not path.is_file() or not isinstance(recorded, Mapping)
                or recorded.get("file", HISTORY_NAME) != HISTORY_NAME):
            return "foreign"
        with open(path, "rb") as handle:
            data = handle.read(MAX_HISTORY_BYTES + 1)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return "foreign"
    if len(data) <= MAX_HISTORY_BYTES and recorded.get("sha256") == hashlib.sha256(
            data).hexdigest():
        return "recorded"
    return "foreign"


class _OwnershipChanged(Exception):
    """The folder's ``history.json`` changed owner between the check and the commit."""


def commit_with_history(
    directory: str | Path,
    writers: Mapping[str, Writer | None],
    history: Writer | None,
    *,
    refusal: str | None = None,
) -> None:
    """Commit ``writers`` (the artifact files, config last) all-or-nothing into ``directory``
    with its ``history.json``: ``history`` writes the new one; ``None``: the new artifact has
    none, and the folder's goes in the same commit only when it is its current artifact's
    (:func:`history_ownership`); a foreign one is left as it is.

    A foreign ``history.json`` is only refused after an interrupted save into ``directory``
    was finished or discarded. Ownership is checked before the commit and again under the
    commit's lock (after recovery);
    when it changed in between (another save), the commit is dropped before its commit point
    and made again (at most three times).

    Args:
        refusal: The end of the error when a foreign ``history.json`` would be replaced
            (default: what a save says).

    Raises:
        ArtifactError: ``history`` is given and the folder holds a foreign ``history.json``
            (one line naming it); nothing is written.
        OSError, FileExistsError, ValueError: See :func:`cotprompt.folder_commit.commit_files`.
    """
    directory = Path(directory)
    for _attempt in range(3):
        state = history_ownership(directory)
        if (state == "foreign" and history is not None
                and recover(directory, FOLDER_FILES, blocking=True) is not None):
            # a save killed after its commit point left its new history.json beside the old
            # config: once finished, it is the folder's artifact's
            state = history_ownership(directory)
        if state == "foreign" and history is not None:
            raise ArtifactError(
                f"{directory / HISTORY_NAME} is not the training history its folder's "
                f"{CONFIG_NAME} records (a file of yours, or an edited one): "
                + (refusal or "move it away to save the training history here; nothing was "
                   "saved")
            )
        staged: dict[str, Writer | None] = {}
        for name, writer in writers.items():
            if name == CONFIG_NAME:  # the history before the config, which records it
                if history is not None:
                    staged[HISTORY_NAME] = history
                elif state == "recorded":  # the previous artifact's: not this one's
                    staged[HISTORY_NAME] = None
            staged[name] = writer
        first = next(name for name, writer in staged.items() if writer is not None)
        staged[first] = _guarded(directory, state, staged[first])  # runs first, under the lock
        try:
            commit_files(directory, staged, allowed=FOLDER_FILES)
            return
        except _OwnershipChanged:
            logger.info("%s changed while saving into %s; saving again", HISTORY_NAME, directory)
    raise ArtifactError(f"{directory / HISTORY_NAME} kept changing while saving into "
                        f"{directory} (other saves at the same time?); nothing was saved")


def _guarded(directory: Path, state: HistoryOwnership, writer: Writer | None) -> Writer:
    """``writer``, first checking (under the commit's lock) that the folder's
    ``history.json`` is still ``state``."""
    assert writer is not None

    def write(path: Path) -> None:
        if history_ownership(directory) != state:
            raise _OwnershipChanged
        writer(path)

    return write
