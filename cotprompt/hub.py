"""Where artifacts come from: a local folder or a Hugging Face Hub repository."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cotprompt.artifact import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from cotprompt.errors import ArtifactError

logger = logging.getLogger(__name__)


def resolve_artifact(
    path_or_repo_id: str | Path, *, revision: str | None = None, token: str | None = None
) -> tuple[Path, dict[str, Any]]:
    """A local folder holding the artifact files, and a record of where they came from.

    A path that exists locally is used as it is; anything else is read as a Hub repository id
    and its config, weights and card are downloaded (or taken from the cache when offline).

    Returns:
        ``(folder, source)`` where ``source`` names the path, or the repository and the
        resolved commit.
    """
    path = Path(path_or_repo_id)
    if path.is_dir():
        return path, {"type": "local", "path": str(path.resolve())}
    if path.exists() or str(path_or_repo_id).startswith((".", "/", "~")):
        raise ArtifactError(f"{path} is not a folder holding a saved cotprompt pipeline")
    return _download(str(path_or_repo_id), revision=revision, token=token)


def _download(repo_id: str, *, revision: str | None, token: str | None) -> tuple[Path, dict[str, Any]]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    files = {}
    try:
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            files[name] = Path(hf_hub_download(repo_id, name, revision=revision, token=token))
        try:
            hf_hub_download(repo_id, CARD_NAME, revision=revision, token=token)
        except EntryNotFoundError:
            logger.info("%s has no model card", repo_id)
    except (EntryNotFoundError, LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        raise ArtifactError(f"cannot load {repo_id!r} (revision {revision!r}) from the Hub: {exc}") from exc
    folder = files[CONFIG_NAME].parent
    return folder, {"type": "hub", "repo_id": repo_id, "revision": revision, "commit": folder.name}
