"""The saved-pipeline format: ``cotprompt_config.json`` + ``prompt_weights.safetensors`` + card,
and ``history.json`` when the prompts were trained in the saving process.

Only trainable tensors are stored; the backbone is named by its spec and rebuilt on load. The
config records each component's registered name, providing package and options, the labels and
the prompt chain texts (so loading never re-runs a generator), and the weights' names, shapes,
dtypes and SHA-256, and the SHA-256 of ``history.json`` when there is one.

Saves are all-or-nothing (:mod:`cotprompt.folder_commit`): the new files are written into a
staging folder inside the artifact folder and a commit marker makes them the artifact in one
atomic step, so a kill, ``SIGTERM`` or full disk at any point leaves the complete old artifact or
the complete new one. :func:`read_config`, which every load and check goes through, first finishes
or discards an interrupted save (and logs it); a journal naming other files than the artifact's is
left alone. :func:`read_artifact` reads config and weights under a shared lock, so that a save
running at the same time is never seen half-way.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from cotprompt import folder_commit
from cotprompt._version import __version__
from cotprompt.artifact.files import (  # the names, importable from here as before
    ARTIFACT_FILES,  # noqa: F401
    CARD_NAME,
    CONFIG_NAME,
    FOLDER_FILES,
    WEIGHTS_NAME,
)
from cotprompt.artifact.history import (
    HISTORY_NAME,
    MAX_HISTORY_BYTES,
    encode_history,
    parse_history,
)
from cotprompt.artifact.ownership import commit_with_history
from cotprompt.errors import ArtifactError, one_line
from cotprompt.folder_commit import reading, recover
from cotprompt.io import save_safetensors_atomic, write_text_atomic

logger = logging.getLogger("cotprompt.artifact")  # the logger name users configure

FORMAT_VERSION = 1

_DTYPE_NAMES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def dtype_name(dtype: torch.dtype) -> str:
    """The safetensors name of a torch dtype (``F32``...)."""
    return _DTYPE_NAMES.get(dtype, str(dtype))


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_artifact(
    directory: str | Path,
    config: dict[str, Any],
    tensors: Mapping[str, Tensor],
    card: str | None,
    history: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Write an artifact folder all-or-nothing; ``config["weights"]`` (and ``config["history"]``)
    are filled in here.

    Weights, card, history and config are staged in the folder and committed together (see
    :func:`cotprompt.folder_commit.commit_files`): whatever interrupts the save, the folder keeps
    the complete previous artifact or holds the complete new one. Other files in the folder are
    left alone; the new files get the mode ``0o666 & ~umask``.

    Args:
        directory: The artifact folder, created when missing.
        config: The config without the ``weights`` entry.
        tensors: The trainable tensors, by name.
        card: The model card text; ``None`` keeps the folder's card as it is.
        history: The per-epoch records of the run that trained the prompts, written to
            ``history.json`` (its SHA-256 recorded in the config); ``None``: none, and a
            ``history.json`` of the folder's earlier artifact (recorded by its config, checksum
            matching) is removed in the same commit. A ``history.json`` the folder's config does
            not record is never replaced nor removed (see :func:`commit_with_history`).

    Returns:
        The folder.

    Raises:
        NotADirectoryError: ``directory`` exists and is not a folder.
        OSError: The files cannot be written (permissions, ``ENOSPC``, ``EFBIG``...), or
            ``directory/.cotprompt-staging`` is in the way; the folder still holds its previous
            artifact.
        ConfigError: ``history`` is not a list of flat records that loading would accept
            (see :func:`~cotprompt.artifact.history.encode_history`; nothing is written).
        ArtifactError: ``history`` is given and the folder holds a ``history.json`` that its
            config does not record (nothing is written).
    """
    directory = Path(directory)
    history_text = encode_history(history) if history is not None else None
    config = dict(config)
    config["format_version"] = FORMAT_VERSION
    config["library"] = "cotprompt"
    config["library_version"] = __version__
    config["weights"] = {
        "file": WEIGHTS_NAME,
        "sha256": None,  # of the staged file, below
        "tensors": {
            name: {"shape": list(t.shape), "dtype": dtype_name(t.dtype)}
            for name, t in sorted(tensors.items())
        },
    }

    def write_weights(path: Path) -> None:
        save_safetensors_atomic(tensors, path, metadata={"format": "pt"})
        config["weights"]["sha256"] = file_sha256(path)

    def write_config(path: Path) -> None:
        write_text_atomic(path, json.dumps(config, indent=2, sort_keys=False) + "\n")

    writers: dict[str, folder_commit.Writer | None] = {WEIGHTS_NAME: write_weights}
    if card is not None:
        writers[CARD_NAME] = lambda path: write_text_atomic(path, card)
    history_writer: folder_commit.Writer | None = None
    if history_text is not None:
        config["history"] = {"file": HISTORY_NAME,
                             "sha256": hashlib.sha256(history_text.encode("utf-8")).hexdigest()}
        history_writer = lambda path: write_text_atomic(path, history_text)  # noqa: E731
    writers[CONFIG_NAME] = write_config  # last: it records the staged weights' checksum
    commit_with_history(directory, writers, history_writer)
    logger.info("saved pipeline to %s", directory)
    return directory


def resolve(directory: str | Path, name: str) -> Path:
    """Where to read the artifact file ``name`` from (see :func:`cotprompt.folder_commit.resolve`):
    the staged copy of a committed save a read-only folder kept, else ``directory / name``."""
    return folder_commit.resolve(directory, name, FOLDER_FILES)


def read_config(directory: str | Path) -> dict[str, Any]:
    """Read and check ``cotprompt_config.json`` (format version, required keys).

    A save into ``directory`` that was interrupted is first finished or discarded (logged); in a
    folder that cannot be written, the files of a committed save are read from its journal. A
    journal this module did not write (naming other files, not signed, unreadable) is left alone
    and ignored (logged once). Safe to call inside :func:`read_artifact`'s shared lock (recovery
    then does not wait for the lock).

    Raises:
        ArtifactError: Missing, unreadable, from a newer format, or incomplete.
        OSError: An interrupted save cannot be recovered for another reason than a read-only
            folder.
    """
    recover(directory, FOLDER_FILES)  # never waits: inside read_artifact's lock it is "busy"
    path = resolve(directory, CONFIG_NAME)
    if not path.is_file():
        raise ArtifactError(
            f"{Path(directory)} is not a cotprompt artifact: {CONFIG_NAME} is missing"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        # RecursionError: nesting deeper than Python's parser goes ('[' * 100000)
        raise ArtifactError(f"cannot read {path}: {one_line(exc, 200)}") from exc
    if not isinstance(config, dict):
        raise ArtifactError(f"{path} does not hold a JSON object")
    version = config.get("format_version")
    if type(version) is not int or version < 1:  # bool is an int subclass: refuse it too
        raise ArtifactError(f"{path} has no positive integer format_version")
    if version > FORMAT_VERSION:
        written_by = str(config.get("library_version", "?"))[:40]
        raise ArtifactError(
            f"{path} was written by cotprompt {written_by} in artifact "
            f"format {str(version)[:20]}; this cotprompt ({__version__}) reads format "
            f"{FORMAT_VERSION} and "
            "older. Upgrade with `pip install -U cotprompt`."
        )
    missing = [
        k
        for k in ("backbone", "generator", "tuner", "aggregator", "chain", "weights")
        if k not in config
    ]
    if missing:
        raise ArtifactError(f"{path} lacks required entries: {', '.join(missing)}")
    return config


def read_artifact(directory: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read and check an artifact's config and weights as one consistent pair.

    An interrupted save is first finished or discarded (as :func:`read_config` does); then the
    config (:func:`read_config`) and the weights (:func:`verify_weights`) are read under a shared
    lock on the folder (:func:`cotprompt.folder_commit.reading`), so that a save into the folder
    running at the same time (which holds the exclusive lock) is seen entirely or not at all.

    Returns:
        ``(config, tensors)``; the tensors by name, on CPU.

    Raises:
        ArtifactError: See :func:`read_config` and :func:`verify_weights`.
        OSError: An interrupted save cannot be recovered for another reason than a read-only
            folder.
    """
    recover(directory, FOLDER_FILES)  # needs the exclusive lock: before taking the shared one
    with reading(directory):
        config = read_config(directory)
        tensors = verify_weights(directory, config)
    return config, tensors


@dataclass(frozen=True)
class HistoryFile:
    """An artifact's ``history.json`` as read and checked by :func:`read_history_file`.

    Attributes:
        data: The file's bytes (the ones whose SHA-256 matched the config's record).
        records: The per-epoch records parsed from them.
    """

    data: bytes
    records: list[dict[str, Any]]


def read_history_file(directory: str | Path, config: Mapping[str, Any], *,
                      name: str | None = None) -> HistoryFile | None:
    """The ``history.json`` an artifact's config records (``config["history"]``: ``file``
    ``"history.json"`` and ``sha256``), read as untrusted input: at most
    :data:`~cotprompt.artifact.history.MAX_HISTORY_BYTES` bytes are read, the recorded SHA-256
    must match, then :func:`~cotprompt.artifact.history.parse_history` (JSON, schema). ``None``
    when the config records none (a ``history.json`` it does not record is not this artifact's).
    ``name``: how the errors name the file (default: its path; a Hub artifact's is better named
    ``repo_id@commit/history.json`` than by its cache path).

    Raises:
        ArtifactError: A malformed ``history`` entry; the recorded file is missing, over the size
            cap, does not match its checksum, or is not a valid history.
        OSError: The file exists but cannot be read.
    """
    recorded = config.get("history")
    if recorded is None:
        return None
    if (not isinstance(recorded, Mapping) or not isinstance(recorded.get("sha256"), str)
            or recorded.get("file", HISTORY_NAME) != HISTORY_NAME):
        raise ArtifactError(f"{Path(directory) / CONFIG_NAME} has a malformed history entry "
                            f"(needs `file` {HISTORY_NAME!r} and a `sha256`)")
    path = resolve(directory, HISTORY_NAME)
    shown = name or str(path)
    if not path.is_file():
        raise ArtifactError(f"{shown} is missing")
    with open(path, "rb") as handle:  # never more than the cap, whatever the file's size
        data = handle.read(MAX_HISTORY_BYTES + 1)
    if len(data) > MAX_HISTORY_BYTES:
        raise ArtifactError(f"{shown} is over the {MAX_HISTORY_BYTES} bytes a training history "
                            "may have")
    if hashlib.sha256(data).hexdigest() != recorded["sha256"]:
        raise ArtifactError(f"{shown} does not match the checksum in {CONFIG_NAME}: the file is "
                            "corrupt, edited or from another save")
    return HistoryFile(data, parse_history(data, shown))


def read_history(directory: str | Path, config: Mapping[str, Any], *,
                 name: str | None = None) -> list[dict[str, Any]] | None:
    """The records of :func:`read_history_file` (``None`` when the config records no history;
    ``name``: how errors name the file).

    Raises:
        ArtifactError: See :func:`read_history_file`.
        OSError: The file exists but cannot be read.
    """
    history = read_history_file(directory, config, name=name)
    return history.records if history is not None else None


def verify_weights(
    directory: str | Path,
    config: Mapping[str, Any],
    expected: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """The one check of an artifact's weights, applied by every entry point (loading, ``pull``,
    ``push``): the checksum the config records is required and must match; the safetensors
    header must list exactly the tensors, shapes and dtypes the config records (and, when given,
    the model needs); every floating-point value must be finite.

    The header is checked before any tensor is read.

    Args:
        directory: The artifact folder.
        config: The artifact config (see :func:`read_config`).
        expected: The freshly built model's trainable tensors, by name; ``None`` checks the file
            against the config only.

    Returns:
        The tensors, by name, on CPU.

    Raises:
        ArtifactError: Missing, corrupt, tampered or mismatching weights; a missing checksum; a
            tensor holding NaN or Inf (named).
    """
    path = resolve(directory, WEIGHTS_NAME)  # from a committed save a read-only folder kept
    if not path.is_file():
        raise ArtifactError(f"{path} is missing")
    recorded = config.get("weights")
    if not isinstance(recorded, Mapping) or not isinstance(recorded.get("sha256"), str):
        raise ArtifactError(
            f"{Path(directory) / CONFIG_NAME} records no weights checksum, so the weights cannot "
            "be checked; re-save the artifact with save_pretrained"
        )
    if file_sha256(path) != recorded["sha256"]:
        raise ArtifactError(
            f"{path} does not match the checksum in {CONFIG_NAME}: the file is corrupt, "
            "truncated or from another save"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = {
                name: (list(handle.get_slice(name).get_shape()), handle.get_slice(name).get_dtype())
                for name in handle.keys()  # noqa: SIM118 - safe_open is not a mapping
            }
            _check_header(path, header, recorded.get("tensors"), expected)
            tensors = {name: handle.get_tensor(name) for name in header}
    except SafetensorError as exc:
        raise ArtifactError(f"{path} is not a valid safetensors file: {exc}") from exc
    bad = sorted(
        name for name, t in tensors.items()
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    )
    if bad:
        raise ArtifactError(
            f"{path} holds NaN or Inf values in {', '.join(bad)}: the prompts diverged or the "
            "file was tampered with; refusing to load them"
        )
    return tensors


def check_fits_model(
    directory: str | Path, tensors: Mapping[str, Tensor], expected: Mapping[str, Tensor]
) -> None:
    """Check tensors returned by :func:`verify_weights` against a freshly built model's
    trainable tensors (names, shapes, dtypes).

    Raises:
        ArtifactError: Missing or unexpected tensors, or a shape or dtype the model cannot take.
    """
    header = {name: (list(t.shape), dtype_name(t.dtype)) for name, t in tensors.items()}
    problems = _model_problems(header, expected)
    if problems:
        raise ArtifactError(
            f"{Path(directory) / WEIGHTS_NAME} does not fit the pipeline described by its "
            "config: " + "; ".join(problems)
        )


def _check_header(
    path: Path,
    header: Mapping[str, tuple[list[int], str]],
    recorded: Any,
    expected: Mapping[str, Tensor] | None,
) -> None:
    problems = []
    if not isinstance(recorded, Mapping):
        raise ArtifactError(f"{CONFIG_NAME} beside {path.name} records no tensor list")
    for name in sorted(set(header) | set(recorded)):
        entry = recorded.get(name)
        if name not in header:
            problems.append(f"{name}: recorded in the config, missing from the file")
        elif not isinstance(entry, Mapping):
            problems.append(f"{name}: in the file, not recorded in the config")
        elif [entry.get("shape"), entry.get("dtype")] != list(header[name]):
            problems.append(
                f"{name}: shape {header[name][0]} dtype {header[name][1]} in the file does not "
                f"match the config's record {dict(entry)}"
            )
    if expected is not None:
        problems.extend(_model_problems(header, expected))
    if problems:
        raise ArtifactError(
            f"{path} does not fit the pipeline described by its config: " + "; ".join(problems)
        )


def _model_problems(
    header: Mapping[str, tuple[list[int], str]], expected: Mapping[str, Tensor]
) -> list[str]:
    problems = []
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected)}")
    for name in sorted(set(expected) & set(header)):
        shape, dtype = header[name]
        want_shape, want_dtype = list(expected[name].shape), dtype_name(expected[name].dtype)
        if shape != want_shape:
            problems.append(f"{name}: shape {shape}, the model needs {want_shape}")
        if dtype != want_dtype:
            problems.append(f"{name}: dtype {dtype}, the model needs {want_dtype}")
    return problems
