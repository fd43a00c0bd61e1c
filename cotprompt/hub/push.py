"""Putting artifacts on the Hub: one-commit uploads that keep the repository's model card.

The one responsibility of this module is pushing: :func:`push_folder` and :func:`push_to_hub`.
See :mod:`cotprompt.hub` for the overview.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cotprompt.artifact.checked import check_artifact
from cotprompt.artifact.format import (
    CARD_NAME,
    CONFIG_NAME,
    FOLDER_FILES,
    HISTORY_NAME,
    WEIGHTS_NAME,
    read_history_file,
)
from cotprompt.artifact.model_card import CardOptions
from cotprompt.errors import ArtifactError
from cotprompt.folder_commit import reading, recover, resolve
from cotprompt.hub.http import (
    HubConnectionError,
    RetryPolicy,
    endpoint,
    hub_error,
    is_transient,
    library_kwargs,
    with_retries,
)

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

logger = logging.getLogger("cotprompt.hub")


# -- pushing ---------------------------------------------------------------------------------


def _existing_card(
    api: Any,
    repo_id: str,
    revision: str | None,
    token: str | bool | None,
    policy: RetryPolicy | None,
) -> str | None:
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

    with tempfile.TemporaryDirectory(prefix="cotprompt-card-") as tmp:
        try:
            path = with_retries(
                lambda: api.hf_hub_download(
                    repo_id, CARD_NAME, revision=revision, token=token, cache_dir=tmp
                ),
                f"read the model card of {repo_id!r}",
                policy,
            )
        except (EntryNotFoundError, RevisionNotFoundError):
            return None
        return Path(path).read_text(encoding="utf-8")


def _checked_files(
    folder: Path, config: dict[str, Any]
) -> tuple[dict[str, bytes], str | None, list[dict[str, Any]] | None]:
    """The config and weights bytes :func:`check_artifact` just checked (and the history's,
    read and checked here, once), the folder's card text (``None`` when absent or a symbolic
    link) and the training history (``None`` when the config records none); read under the
    folder's reader lock.

    The bytes are compared with what was checked (the parsed config, the weights' checksum), so
    that a file changed in between by something else than a cotprompt save (which waits for the
    lock) is refused rather than uploaded unchecked.
    """
    data = {name: resolve(folder, name, FOLDER_FILES).read_bytes()
            for name in (CONFIG_NAME, WEIGHTS_NAME)}
    try:
        same_config = json.loads(data[CONFIG_NAME].decode("utf-8")) == config
    except (UnicodeDecodeError, json.JSONDecodeError):
        same_config = False
    same_weights = hashlib.sha256(data[WEIGHTS_NAME]).hexdigest() == config["weights"]["sha256"]
    if not (same_config and same_weights):
        raise ArtifactError(
            f"{folder} changed while it was being checked for the push; nothing was uploaded: "
            "push again"
        )
    try:  # a bad one is refused: it would be published
        history = read_history_file(folder, config)
    except ArtifactError as exc:
        # a save leaves a history.json its config does not record in place (it may be the
        # user's): without moving it, the next save with a training history would refuse it
        present = os.path.lexists(folder / HISTORY_NAME)
        raise ArtifactError(
            f"{exc}; nothing was uploaded. To push the prompts without it, "
            + (f"move or delete {folder / HISTORY_NAME}, then " if present else "")
            + f"load and save the folder again: CoTPipeline.from_pretrained({str(folder)!r})"
            f".save_pretrained({str(folder)!r})"
        ) from exc
    if history is not None:  # the very bytes checked against the config and parsed
        data[HISTORY_NAME] = history.data
    card_path = resolve(folder, CARD_NAME, FOLDER_FILES)
    card = None
    if card_path.is_symlink():
        logger.warning("%s is a symbolic link; not reading it for the model card", card_path)
    elif card_path.is_file():
        card = card_path.read_text(encoding="utf-8")
    return data, card, history.records if history is not None else None


def _has_file(
    api: Any,
    repo_id: str,
    name: str,
    revision: str | None,
    token: str | bool | None,
    policy: RetryPolicy | None,
) -> bool:
    """Whether the repository holds ``name`` at ``revision`` (one ``HEAD`` request)."""
    return bool(with_retries(
        lambda: api.file_exists(repo_id, name, revision=revision, token=token),
        f"look for {name} in {repo_id!r}",
        policy,
    ))


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    retry: RetryPolicy | None = None,
    card_options: CardOptions | None = None,
) -> CommitInfo:
    """Upload a saved artifact folder to a Hub repository in one commit.

    The repository is created if needed (``private`` only applies then, and by default leaves
    the visibility to the Hub, as ``huggingface_hub`` does); a ``revision`` naming a
    branch that does not exist yet is created from ``main``. The folder is checked first
    (:func:`check_artifact` and its training history, under the folder's reader lock) and
    exactly the bytes checked are uploaded; its model card is re-rendered for the repository
    (with the per-epoch table of the folder's ``history.json``), keeping the custom text and
    metadata of the repository's current ``README.md`` (or, for a first push, of the folder's).
    An artifact without a training history removes the ``history.json`` an earlier push left in
    the repository, in the same commit (it would describe other prompts).

    Args:
        folder: A folder written by :meth:`CoTPipeline.save_pretrained`.
        repo_id: ``namespace/name``.
        token: Hub token with write access; default the usual huggingface_hub settings.
        private: The visibility of a repository created by this push: ``True`` private,
            ``False`` public, ``None`` (default) the Hub's default for the namespace (an
            organisation may make new repositories private by default). An existing
            repository keeps its visibility.
        revision: Branch to commit to (default ``main``).
        commit_message: Default: a summary of the pipeline.
        create_pr: Open a pull request with the commit instead of committing to the branch.
        retry: Retries of the idempotent requests (default :meth:`RetryPolicy.from_env`).

    Returns:
        The :class:`huggingface_hub.CommitInfo` (``commit_url``, ``oid``, ``pr_url``...).

    Raises:
        HubConnectionError: The endpoint is unreachable.
        ArtifactError: Invalid folder (a ``history.json`` too: missing, edited, malformed),
            rejected token (401), another namespace (403)...
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from cotprompt.artifact.model_card import render_card

    folder = Path(folder)
    recover(folder, FOLDER_FILES)  # an interrupted save: before the reader lock (needs it all)
    with reading(folder):  # a save into the folder waits: the bytes uploaded are the checked ones
        config = check_artifact(folder, history=False)  # the history: in _checked_files
        files, local_card, history = _checked_files(folder, config)
    if history is not None and (card_options is None or card_options.history is None):
        # the per-epoch table of the card: known to the training process, and from the folder
        card_options = dataclasses.replace(card_options or CardOptions(), history=history)
    api = HfApi(**library_kwargs())
    branch = revision if revision and revision != "main" else None
    try:
        with_retries(
            lambda: api.create_repo(repo_id, token=token, private=private, exist_ok=True),
            f"create the repository {repo_id!r}",
            retry,
        )
        if branch and not branch.startswith("refs/pr/"):
            with_retries(
                lambda: api.create_branch(repo_id, branch=branch, token=token, exist_ok=True),
                f"create the branch {branch!r} of {repo_id!r}",
                retry,
            )
        existing = _existing_card(api, repo_id, revision, token, retry)
        if existing is None:
            existing = local_card
        card = render_card(config, existing, repo_id=repo_id, revision=branch,
                           options=card_options)
        labels = config["chain"]["labels"]
        message = commit_message or (
            f"Upload cotprompt {config['tuner']['name']} prompts ({len(labels)} labels)"
        )
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationAdd(path_in_repo=CONFIG_NAME, path_or_fileobj=files[CONFIG_NAME]),
            CommitOperationAdd(path_in_repo=WEIGHTS_NAME, path_or_fileobj=files[WEIGHTS_NAME]),
            CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card.encode("utf-8")),
        ]
        if HISTORY_NAME in files:
            operations.append(CommitOperationAdd(path_in_repo=HISTORY_NAME,
                                                 path_or_fileobj=files[HISTORY_NAME]))
        elif _has_file(api, repo_id, HISTORY_NAME, revision, token, retry):
            # an earlier push's history describes other prompts: it goes in the same commit
            operations.append(CommitOperationDelete(path_in_repo=HISTORY_NAME))
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=message,
            token=token,
            revision=revision,
            create_pr=create_pr,
        )
    except ArtifactError:
        raise
    except (HfHubHTTPError, OSError, ValueError) as exc:
        if is_transient(exc):
            raise HubConnectionError(
                f"lost the connection to {endpoint()} while pushing to {repo_id!r}: {exc}"
            ) from exc
        raise hub_error(exc, repo_id, revision, "push to") from exc
    except Exception as exc:
        if is_transient(exc):
            raise HubConnectionError(
                f"lost the connection to {endpoint()} while pushing to {repo_id!r}: {exc}"
            ) from exc
        raise
    logger.info("pushed %s to %s: %s", folder, repo_id, getattr(info, "commit_url", info))
    return info


class SavesPretrained(Protocol):
    """What :func:`push_to_hub` pushes: anything that saves itself to a folder."""

    def save_pretrained(self, directory: str | Path) -> Path: ...


def push_to_hub(
    obj: SavesPretrained,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    card_options: CardOptions | None = None,
) -> CommitInfo:
    """Save ``obj`` (a pipeline) to a temporary folder and push it with :func:`push_folder`
    (``card_options``: what the card pushed adds to the artifact config).

    ``private`` is passed on as is: ``None`` (default) leaves the visibility of a new
    repository to the Hub's default for the namespace, ``True``/``False`` make it
    private/public.
    """
    with tempfile.TemporaryDirectory(prefix="cotprompt-push-") as tmp:
        folder = obj.save_pretrained(Path(tmp) / "artifact")
        return push_folder(
            folder,
            repo_id,
            token=token,
            private=private,
            revision=revision,
            commit_message=commit_message,
            create_pr=create_pr,
            card_options=card_options,
        )
