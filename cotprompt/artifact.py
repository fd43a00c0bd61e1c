"""The saved-pipeline format: ``cotprompt_config.json`` + ``prompt_weights.safetensors`` + card.

Only trainable tensors are stored; the backbone is named by its spec and rebuilt on load. The
config records each component's registered name, providing package and options, the labels and
the prompt chain texts (so loading never re-runs a generator), and the weights' names, shapes,
dtypes and SHA-256. Files are written atomically, weights first and config last, so a crash
leaves either the previous artifact or a config whose checksum exposes the mismatch.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from cotprompt._version import __version__
from cotprompt.errors import ArtifactError
from cotprompt.io import save_safetensors_atomic, write_text_atomic

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_NAME = "cotprompt_config.json"
WEIGHTS_NAME = "prompt_weights.safetensors"
CARD_NAME = "README.md"
ARTIFACT_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)

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
) -> Path:
    """Write an artifact folder; ``config["weights"]`` is filled in here.

    Returns:
        The folder.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_path = directory / WEIGHTS_NAME
    save_safetensors_atomic(tensors, weights_path, metadata={"format": "pt"})
    config = dict(config)
    config["format_version"] = FORMAT_VERSION
    config["library"] = "cotprompt"
    config["library_version"] = __version__
    config["weights"] = {
        "file": WEIGHTS_NAME,
        "sha256": file_sha256(weights_path),
        "tensors": {
            name: {"shape": list(t.shape), "dtype": dtype_name(t.dtype)}
            for name, t in sorted(tensors.items())
        },
    }
    if card is not None:
        write_text_atomic(directory / CARD_NAME, card)
    write_text_atomic(directory / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=False) + "\n")
    logger.info("saved pipeline to %s", directory)
    return directory


def read_config(directory: str | Path) -> dict[str, Any]:
    """Read and check ``cotprompt_config.json`` (format version, required keys).

    Raises:
        ArtifactError: Missing, unreadable, from a newer format, or incomplete.
    """
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ArtifactError(
            f"{Path(directory)} is not a cotprompt artifact: {CONFIG_NAME} is missing"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise ArtifactError(f"{path} does not hold a JSON object")
    version = config.get("format_version")
    if not isinstance(version, int):
        raise ArtifactError(f"{path} has no integer format_version")
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{path} was written by cotprompt {config.get('library_version', '?')} in artifact "
            f"format {version}; this cotprompt ({__version__}) reads format {FORMAT_VERSION} and "
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


def read_weights(
    directory: str | Path, config: Mapping[str, Any], expected: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Validate the weights file against the config and the model, then load it.

    The header (names, shapes, dtypes) is checked before any tensor is read; the checksum
    recorded in the config must match the file.

    Args:
        directory: The artifact folder.
        config: The artifact config.
        expected: The freshly built model's trainable tensors, by name.

    Returns:
        The tensors, by name, on CPU.

    Raises:
        ArtifactError: Missing, corrupt, tampered or mismatching weights.
    """
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise ArtifactError(f"{path} is missing")
    recorded = config["weights"]
    sha = recorded.get("sha256")
    if sha and file_sha256(path) != sha:
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
            _check_header(path, header, recorded.get("tensors", {}), expected)
            return {name: handle.get_tensor(name) for name in header}
    except SafetensorError as exc:
        raise ArtifactError(f"{path} is not a valid safetensors file: {exc}") from exc


def _check_header(
    path: Path,
    header: Mapping[str, tuple[list[int], str]],
    recorded: Mapping[str, Any],
    expected: Mapping[str, Tensor],
) -> None:
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
        entry = recorded.get(name)
        if entry is not None and (entry.get("shape") != shape or entry.get("dtype") != dtype):
            problems.append(f"{name}: does not match the config's record {entry}")
    if problems:
        raise ArtifactError(
            f"{path} does not fit the pipeline described by its config:\n  " + "\n  ".join(problems)
        )
