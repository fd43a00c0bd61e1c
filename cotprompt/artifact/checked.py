"""Reading an artifact folder with every check that needs no model: the one path used by loading
(:meth:`CoTPipeline.from_pretrained`), checking (``cotprompt pull``, :func:`check_artifact`) and
pushing (:func:`cotprompt.hub.push_folder`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from cotprompt.artifact.format import CONFIG_NAME, FOLDER_FILES, read_artifact, read_history
from cotprompt.artifact.history import HISTORY_NAME
from cotprompt.artifact.records import ValidatedRecords, validate_records
from cotprompt.errors import ArtifactError, one_line
from cotprompt.folder_commit import reading, recover
from cotprompt.plugins.records import Kind

logger = logging.getLogger("cotprompt.artifact")  # the logger name users configure


@dataclass(frozen=True)
class CheckedArtifact:
    """An artifact read and checked (see :func:`read_checked`).

    Attributes:
        config: The parsed ``cotprompt_config.json``.
        tensors: The weights, as recorded and verified.
        records: The validated records (components, training, chain, task, metrics).
        history: The per-epoch training records of ``history.json``; ``None`` when the
            artifact has none, or a bad one (logged as a warning), or it was not read.
    """

    config: dict[str, Any]
    tensors: dict[str, Tensor]
    records: ValidatedRecords
    history: list[dict[str, Any]] | None = None


def read_checked(
    folder: str | Path,
    *,
    source: str | None = None,
    caller_options: Mapping[str, Any] | None = None,
    skip: tuple[Kind, ...] = (),
    history: bool = True,
    folder_name: str | None = None,
) -> CheckedArtifact:
    """Read config and weights (:func:`~cotprompt.artifact.format.read_artifact`: recovery of an
    interrupted save, shared lock, format version, checksum, header, finite values) and validate
    the records (:func:`~cotprompt.artifact.records.validate_records`: components installed,
    options a file may carry), before anything is built; the training history
    (:func:`~cotprompt.artifact.format.read_history`) is read under the same reader lock as config
    and weights, so that all three come from one save. A bad ``history.json`` is left out with a
    warning rather than refused: it changes no prediction, and the prompts it describes are
    checked on their own (the history's checksum still keeps a wrong or edited file from being
    shown as theirs).

    Args:
        folder: The artifact folder.
        source: How to name it in errors (default: its config file).
        caller_options: The caller's opt-ins (``{"allow_pickle": True}``).
        skip: Component kinds not to validate (e.g. a backbone the caller passes).
        history: Read the training history too (``False``: a caller that reads it itself, as a
            push does, which refuses a bad one).
        folder_name: How the warning about a bad training history names the folder (a Hub
            artifact: ``repo_id@commit`` rather than its cache path); default: its path.

    Raises:
        ArtifactError: Anything missing, corrupt, tampered, non-finite or from a newer format.
        UnsafeSettingError: A setting only the caller may make.
        UnknownComponentError: A component's plugin is not installed.
    """
    folder = Path(folder)
    recover(folder, FOLDER_FILES)  # an interrupted save: before the reader lock (needs it all)
    history_records: list[dict[str, Any]] | None = None
    problem: Exception | None = None
    with reading(folder):  # config, weights and history of one save, whatever saves meanwhile
        config, tensors = read_artifact(folder)
        try:
            name = f"{folder_name}/{HISTORY_NAME}" if folder_name else None
            history_records = read_history(folder, config, name=name) if history else None
        except (ArtifactError, OSError) as exc:
            problem = exc
    records = validate_records(config, source=source or str(folder / CONFIG_NAME),
                               caller_options=caller_options, skip=skip)
    if problem is not None:
        logger.warning("%s; going on without its training history", one_line(problem, 500))
    return CheckedArtifact(config, tensors, records, history_records)


def check_artifact(folder: str | Path, *, source: str | None = None,
                   history: bool = True) -> dict[str, Any]:
    """Check a saved artifact without building the model; returns its config.

    Applies the checks loading applies before anything is built (:func:`read_checked`). The
    check against the built model happens in :meth:`CoTPipeline.from_pretrained`.

    Args:
        folder: The artifact folder.
        source: How to name it in errors (default: the folder's config file).
        history: Read its training history too (a bad one is logged as a warning); ``False``
            for a caller that reads it itself.

    Raises:
        ArtifactError: Anything missing, corrupt, tampered, non-finite or from a newer format.
        UnsafeSettingError: A setting only the caller may make.
        UnknownComponentError: A component's plugin is not installed.
    """
    return read_checked(folder, source=source, history=history).config
