"""The names of the files an artifact folder holds."""

from __future__ import annotations

from cotprompt.artifact.history import HISTORY_NAME

__all__ = ["ARTIFACT_FILES", "CARD_NAME", "CONFIG_NAME", "FOLDER_FILES", "HISTORY_NAME",
           "WEIGHTS_NAME"]

CONFIG_NAME = "cotprompt_config.json"
WEIGHTS_NAME = "prompt_weights.safetensors"
CARD_NAME = "README.md"
#: The files every artifact is made of.
ARTIFACT_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)
#: Every file an artifact folder may hold, and its all-or-nothing commits may write or remove:
#: also the training history, which only prompts trained in the saving process have.
FOLDER_FILES = (*ARTIFACT_FILES, HISTORY_NAME)
