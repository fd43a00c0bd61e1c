"""The saved-pipeline format: one folder (or Hub repository) of ``cotprompt_config.json``,
``prompt_weights.safetensors``, ``README.md`` and, for prompts trained in the saving process,
``history.json``, written all-or-nothing and read as untrusted.

:mod:`cotprompt.artifact.format` writes, reads and verifies the files (one path used by
loading, ``cotprompt pull``/``check`` and pushing); :mod:`cotprompt.artifact.records` validates the
config's records; :mod:`cotprompt.artifact.model_card` renders the card. See ``docs/artifact.md``.
"""

from cotprompt.artifact.checked import CheckedArtifact, check_artifact, read_checked
from cotprompt.artifact.format import (
    ARTIFACT_FILES,
    CARD_NAME,
    CONFIG_NAME,
    FOLDER_FILES,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    HistoryFile,
    check_fits_model,
    dtype_name,
    file_sha256,
    read_artifact,
    read_config,
    read_history,
    read_history_file,
    resolve,
    verify_weights,
    write_artifact,
)
from cotprompt.artifact.history import HISTORY_NAME, check_history
from cotprompt.artifact.ownership import HistoryOwnership, commit_with_history, history_ownership

__all__ = [
    "ARTIFACT_FILES",
    "CARD_NAME",
    "CONFIG_NAME",
    "FOLDER_FILES",
    "FORMAT_VERSION",
    "HISTORY_NAME",
    "WEIGHTS_NAME",
    "CheckedArtifact",
    "HistoryFile",
    "HistoryOwnership",
    "check_artifact",
    "check_fits_model",
    "check_history",
    "commit_with_history",
    "dtype_name",
    "file_sha256",
    "history_ownership",
    "read_artifact",
    "read_checked",
    "read_config",
    "read_history",
    "read_history_file",
    "resolve",
    "verify_weights",
    "write_artifact",
]
