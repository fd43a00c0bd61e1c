"""``from_pretrained`` and ``push_to_hub`` for any class that saves itself to a folder, as
huggingface_hub's ``ModelHubMixin`` gives them: the Hub code never names the class it serves.

A subclass implements ``save_pretrained(directory)`` and the class method
``_from_artifact_folder(directory, *, origin, **kwargs)``; the mixin resolves a folder or a Hub
repository (pinned to one commit, checked, cached: :func:`~cotprompt.hub.download.resolve_artifact`)
and pushes a saved folder in one commit (:func:`~cotprompt.hub.push.push_to_hub`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cotprompt.artifact.model_card import CardOptions
from cotprompt.hub.download import resolve_artifact
from cotprompt.hub.push import push_to_hub

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

HubT = TypeVar("HubT", bound="HubMixin")


class HubMixin:
    """Loading from and pushing to the Hugging Face Hub, over a folder format."""

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the object to ``directory``; returns the folder."""
        raise NotImplementedError(f"{type(self).__name__} does not implement save_pretrained")

    @classmethod
    def _from_artifact_folder(cls: type[HubT], directory: Path, *, origin: dict[str, Any],
                              **kwargs: Any) -> HubT:
        """Build the object from a local folder; ``origin`` says where it came from
        (``{"type": "local", ...}`` or ``{"type": "hub", "repo_id", "revision", "commit"}``)."""
        raise NotImplementedError(f"{cls.__name__} does not implement _from_artifact_folder")

    @classmethod
    def from_pretrained(cls: type[HubT], path_or_repo_id: str | Path, *,
                        revision: str | None = None, token: str | bool | None = None,
                        cache_dir: str | Path | None = None, local_files_only: bool = False,
                        force_download: bool = False, subfolder: str | None = None,
                        **kwargs: Any) -> HubT:
        """Load from a local folder or a Hub repository (``namespace/name``) at ``revision``.

        Args:
            path_or_repo_id: A local folder, or a Hub repository id.
            revision: Hub branch, tag or commit (default ``main``).
            token: Hub token; default the usual huggingface_hub settings.
            cache_dir: The Hub cache folder to use (default ``HF_HUB_CACHE``).
            local_files_only: Use the Hub cache only, with no request at all (as
                ``HF_HUB_OFFLINE=1``); an artifact not cached there is an error.
            force_download: Download the files again even when they are cached.
            subfolder: The artifact's folder inside the repository (or the local folder).
            **kwargs: Passed to ``_from_artifact_folder``.

        Raises:
            ArtifactError: Not a folder nor a reachable repository, or files that fail checks.
            HubConnectionError: The Hub cannot be reached and nothing is cached.
        """
        directory, origin = resolve_artifact(
            path_or_repo_id, revision=revision, token=token, cache_dir=cache_dir,
            local_files_only=local_files_only, force_download=force_download,
            subfolder=subfolder,
        )
        return cls._from_artifact_folder(directory, origin=origin, **kwargs)

    def push_to_hub(self, repo_id: str, *, token: str | bool | None = None,
                    private: bool | None = None, revision: str | None = None,
                    commit_message: str | None = None, create_pr: bool = False,
                    card_options: CardOptions | None = None) -> CommitInfo:
        """Save to a temporary folder and upload it to ``repo_id`` in one commit (see
        :func:`cotprompt.hub.push_folder`; ``card_options``: what the pushed model card adds)."""
        return push_to_hub(self, repo_id, token=token, private=private, revision=revision,
                           commit_message=commit_message, create_pr=create_pr,
                           card_options=card_options)
