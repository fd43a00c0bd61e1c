"""Getting artifacts from the Hub: resolving revisions, pinned downloads, offline/cache use, checks.

The one responsibility of this module is bringing an artifact to a local folder and checking it:
:func:`check_artifact`, :func:`download_artifact`, :func:`resolve_artifact` and :func:`pull`.
See :mod:`cotprompt.hub` for the overview.
"""

from __future__ import annotations

import functools
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotprompt.artifact.checked import (
    check_artifact,  # noqa: F401 - cotprompt.hub's, from here
    read_checked,
)
from cotprompt.artifact.format import (
    CARD_NAME,
    CONFIG_NAME,
    FOLDER_FILES,
    HISTORY_NAME,
    WEIGHTS_NAME,
    read_config,
)
from cotprompt.artifact.history import MAX_HISTORY_BYTES
from cotprompt.artifact.ownership import commit_with_history, history_ownership
from cotprompt.errors import ArtifactError
from cotprompt.hub.http import (
    HubConnectionError,
    RetryPolicy,
    endpoint,
    hub_error,
    is_commit,
    is_offline,
    is_transient,
    library_kwargs,
    with_retries,
)

logger = logging.getLogger("cotprompt.hub")


@dataclass(frozen=True)
class PulledArtifact:
    """A downloaded and checked artifact.

    Attributes:
        folder: The folder holding the files (in the Hub cache, or ``local_dir``).
        source: Where it came from: ``repo_id``, requested ``revision``, resolved ``commit``,
            ``endpoint``.
        config: The parsed ``cotprompt_config.json``.
    """

    folder: Path
    source: dict[str, Any]
    config: dict[str, Any]


# -- pulling ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fetch:
    """Where and how the three artifact files are fetched (the caller's download options)."""

    repo_id: str
    token: str | bool | None
    cache_dir: str | None = None
    subfolder: str | None = None
    force_download: bool = False
    retry: RetryPolicy | None = None


def check_subfolder(subfolder: str | None) -> str | None:
    """``subfolder`` as a relative ``a/b`` path inside a repository or folder (``None`` or
    ``""`` for none).

    Raises:
        ArtifactError: An absolute path, a backslash, or a ``..`` / ``.`` part (it could name a
            place outside the repository or folder).
    """
    if subfolder is None:
        return None
    if not isinstance(subfolder, str):
        raise ArtifactError(f"subfolder must be a string, not {type(subfolder).__name__}")
    text = subfolder.strip("/")
    if not text:
        return None
    parts = text.split("/")
    if subfolder.startswith("/") or "\\" in text or any(p in ("", ".", "..") for p in parts):
        raise ArtifactError(
            f"subfolder {subfolder!r} must be a relative path such as 'prompts/pets' "
            "(no '..', '.', empty parts, backslashes or leading '/')"
        )
    return text


def _copy_to(src: Path, path: Path) -> None:
    shutil.copyfile(src, path)


def _download(
    fetch: _Fetch,
    name: str,
    revision: str,
    *,
    local_only: bool = False,
) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(
        hf_hub_download(
            fetch.repo_id,
            name,
            subfolder=fetch.subfolder,
            revision=revision,
            token=fetch.token,
            cache_dir=fetch.cache_dir,
            local_files_only=local_only,
            force_download=fetch.force_download and not local_only,
            **library_kwargs(),
        )
    )


def _over_history_cap(fetch: _Fetch, commit: str) -> bool:
    """Whether the ``history.json`` at ``commit`` is over the size a training history may have,
    from its metadata (one ``HEAD`` request, transient failures retried) before it is
    downloaded; logged as a warning. A copy already in the cache is not asked about (reading it
    stops at the cap). When the Hub still does not answer, ``True`` with a warning: the history
    is optional, the download goes on without it."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    filename = f"{fetch.subfolder}/{HISTORY_NAME}" if fetch.subfolder else HISTORY_NAME
    if not fetch.force_download and isinstance(
        try_to_load_from_cache(fetch.repo_id, filename, cache_dir=fetch.cache_dir,
                               revision=commit), str):
        return False
    url = hf_hub_url(fetch.repo_id, HISTORY_NAME, subfolder=fetch.subfolder, revision=commit)
    try:
        size = with_retries(
            lambda: get_hf_file_metadata(url, token=fetch.token, **library_kwargs()).size,
            f"check the size of {fetch.repo_id}'s {HISTORY_NAME} at {commit}",
            fetch.retry,
        )
    except HubConnectionError as exc:
        logger.warning("%s; going on without the training history", exc)
        return True
    if size is not None and size > MAX_HISTORY_BYTES:
        logger.warning("%s's %s at %s is %d bytes, over the %d a training history may have; not "
                       "downloading it", fetch.repo_id, HISTORY_NAME, commit, size,
                       MAX_HISTORY_BYTES)
        return True
    return False


def _snapshot(folder: Path, subfolder: str | None) -> Path:
    """The snapshot folder (named by its commit) holding ``folder``, the artifact's folder."""
    return folder.parents[len(subfolder.split("/")) - 1] if subfolder else folder


def _resolve_commit(fetch: _Fetch, revision: str | None, policy: RetryPolicy | None) -> str:
    """The commit ``revision`` points to now, from the config file's metadata (one HEAD call)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    repo_id = fetch.repo_id
    url = hf_hub_url(repo_id, CONFIG_NAME, subfolder=fetch.subfolder, revision=revision)
    metadata = with_retries(
        lambda: get_hf_file_metadata(url, token=fetch.token),
        f"resolve {repo_id!r} at {revision or 'main'}",
        policy,
    )
    if not metadata.commit_hash:
        raise ArtifactError(
            f"{endpoint()} did not say which commit {revision or 'main'} of "
            f"{repo_id!r} is (no X-Repo-Commit header): is it a Hub endpoint?"
        )
    return str(metadata.commit_hash)


def _fetch_files(fetch: _Fetch, revision: str, *, local_only: bool) -> tuple[Path, str]:
    """Download config, weights, card and (when the config records one) training history (of
    ``fetch.subfolder``); all at the commit the config was found at. Returns the folder holding
    them and that commit.

    The config is fetched by the requested revision name (so that the cache records which
    commit a branch or tag pointed to, for offline use), the other files by that commit.
    """
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    folder = _download(fetch, CONFIG_NAME, revision, local_only=local_only).parent
    commit = _snapshot(folder, fetch.subfolder).name
    _download(fetch, WEIGHTS_NAME, commit, local_only=local_only)
    optional = [(CARD_NAME, "model card")]
    if "history" in read_config(folder):  # an artifact without one costs no request
        optional.append((HISTORY_NAME, "training history"))
    for name, what in optional:
        try:
            if name == HISTORY_NAME and not local_only and _over_history_cap(fetch, commit):
                continue  # loading then goes on without it (see read_checked)
            _download(fetch, name, commit, local_only=local_only)
        except (EntryNotFoundError, LocalEntryNotFoundError):
            logger.info("%s has no %s at %s", fetch.repo_id, what, commit)
    return folder, commit


def download_artifact(
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    retry: RetryPolicy | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    subfolder: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Download an artifact's files from the Hub into the cache, pinned to one commit.

    Only the artifact files (config, weights, model card, and the training history the config
    records, when it is within :data:`~cotprompt.artifact.history.MAX_HISTORY_BYTES` by its
    metadata) are fetched, whatever else the repository holds.

    Args:
        repo_id: ``namespace/name``.
        revision: Branch, tag or commit (default ``main``).
        token: Hub token; default the usual huggingface_hub settings.
        cache_dir: Default ``HF_HUB_CACHE``.
        retry: Default :meth:`RetryPolicy.from_env`.
        local_files_only: Use the cache only and make no request at all (as ``HF_HUB_OFFLINE=1``
            does); an artifact that is not cached is an error.
        force_download: Download the files again even when they are cached (not together with
            ``local_files_only`` or ``HF_HUB_OFFLINE``); no fallback to the cache when the Hub
            cannot be reached.
        subfolder: The folder of the repository holding the artifact (``prompts/pets``).

    Returns:
        ``(folder, source)``; ``source`` holds ``repo_id``, the requested ``revision``, the
        resolved ``commit`` and the ``endpoint`` (and ``subfolder`` when one is given).

    Raises:
        HubConnectionError: The endpoint is unreachable and nothing usable is cached.
        ArtifactError: Missing repository, revision or file; rejected token; not cached with
            ``local_files_only``; ``force_download`` while offline; a ``subfolder`` that is not
            a relative path.
    """
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    subfolder = check_subfolder(subfolder)
    offline = is_offline()
    if force_download and (local_files_only or offline):
        raise ArtifactError(
            "force_download needs the Hub, but "
            + ("local_files_only=True" if local_files_only else "HF_HUB_OFFLINE is set")
            + " forbids any request"
        )
    fetch = _Fetch(repo_id, token, str(cache_dir) if cache_dir is not None else None,
                   subfolder, force_download, retry)
    name = revision or "main"
    source: dict[str, Any] = {
        "type": "hub",
        "repo_id": repo_id,
        "revision": revision,
        "endpoint": endpoint(),
    }
    if subfolder:
        source["subfolder"] = subfolder
    try:
        if local_files_only or offline or (is_commit(revision) and not force_download):
            # Offline, cache only, or an immutable commit: the cache answers without any request.
            try:
                folder, commit = _fetch_files(fetch, name, local_only=True)
                return folder, {**source, "commit": commit}
            except LocalEntryNotFoundError as exc:
                if local_files_only:
                    raise ArtifactError(
                        f"{repo_id!r} at {name!r}"
                        + (f" (subfolder {subfolder!r})" if subfolder else "")
                        + " is not in the local cache and local_files_only=True forbids "
                        f"downloading it; load it once without local_files_only "
                        f"(or `cotprompt pull {repo_id}`)"
                    ) from exc
                if offline:
                    raise
        try:
            # One cheap request with bounded retries: fails fast and clearly when the endpoint
            # is down, the repository, revision or config is missing, or the token is refused.
            _resolve_commit(fetch, revision, retry)
        except HubConnectionError as exc:
            if force_download:
                raise
            try:
                folder, commit = _fetch_files(fetch, name, local_only=True)
            except LocalEntryNotFoundError:
                raise HubConnectionError(
                    f"{exc} {repo_id!r} at {name!r} is not in the local cache either."
                ) from exc.__cause__
            logger.warning("%s; using the cached commit %s of %s", exc, commit, repo_id)
            return folder, {**source, "commit": commit}
        folder, commit = _fetch_files(fetch, name, local_only=False)
    except ArtifactError:
        raise
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        if is_transient(exc):
            raise HubConnectionError(
                f"lost the connection to {endpoint()} while downloading {repo_id!r}: {exc}"
            ) from exc
        raise hub_error(exc, repo_id, revision, "download") from exc
    return folder, {**source, "commit": commit}


def resolve_artifact(
    path_or_repo_id: str | Path,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    subfolder: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """A local folder holding the artifact files, and a record of where they came from.

    A path that exists locally is used as it is (``path/subfolder`` when ``subfolder`` is
    given); anything else is read as a Hub repository id and downloaded with
    :func:`download_artifact` (or taken from the cache when offline). When that fails, the
    error says first that no local folder of that name exists (``runs/pets`` may be a mistyped
    folder as well as a repository id), then what the Hub said.

    Args:
        path_or_repo_id: A local folder or a Hub repository id (``namespace/name``).
        revision: Hub branch, tag or commit (default ``main``).
        token: Hub token; default the usual huggingface_hub settings.
        cache_dir: The Hub cache folder (default ``HF_HUB_CACHE``); unused for a local folder.
        local_files_only: Never make a request: the Hub cache only (see
            :func:`download_artifact`).
        force_download: Download again even when cached (Hub ids only).
        subfolder: The artifact's folder inside the repository or local folder.

    Returns:
        ``(folder, source)`` where ``source`` names the path, or the repository, the requested
        revision, the resolved commit and the endpoint.

    Raises:
        ArtifactError: The path is empty or a file, or neither a local folder nor a downloadable
            repository (:class:`~cotprompt.hub.http.HubConnectionError` when the Hub could not
            be reached); the message names the folder that does not exist.
    """
    subfolder = check_subfolder(subfolder)
    if not str(path_or_repo_id).strip():  # Path("") is the working folder
        raise ArtifactError("the artifact is an empty name: give a folder or a Hub repository id")
    path = Path(path_or_repo_id)
    if path.is_dir():
        if subfolder:
            inner = path / subfolder
            if not inner.is_dir():
                raise ArtifactError(f"{str(path)!r} has no subfolder {subfolder!r}")
            path = inner
        return path, {"type": "local", "path": str(path.resolve())}
    text = str(path_or_repo_id)
    if path.exists():
        raise ArtifactError(
            f"{text!r} is a file, not a folder holding a saved cotprompt pipeline (nor a Hub "
            "repository id)"
        )
    local = f"no local folder {text!r} exists" + (
        "" if path.is_absolute() else f" (relative to {str(Path.cwd())!r})"
    )
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or not text or "\\" in text:
        raise ArtifactError(f"{local}, and {text!r} is not a Hub repository id (namespace/name)")
    try:
        return download_artifact(text, revision=revision, token=token, cache_dir=cache_dir,
                                 local_files_only=local_files_only,
                                 force_download=force_download, subfolder=subfolder)
    except ArtifactError as exc:
        raise type(exc)(f"{local}; as a Hub repository: {exc}") from exc


_PULL_ELSEWHERE = ("pull into an empty folder or an artifact folder, so that your history.json "
                  "is not replaced")


def pull(
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    local_dir: str | Path | None = None,
) -> PulledArtifact:
    """Download an artifact into the cache, check it, and optionally copy it to ``local_dir``.

    After a pull the artifact also loads with ``HF_HUB_OFFLINE=1``.

    The copy into ``local_dir`` is all-or-nothing, like a save
    (:func:`cotprompt.folder_commit.commit_files`): an artifact already there stays complete
    until the new one replaces it, whatever interrupts the copy; other files are left alone. When
    the new artifact has no model card, a ``README.md`` left there by an earlier artifact is
    removed in the same commit; a ``local_dir`` holding a ``README.md`` but no artifact is
    refused, so that a user's own README is never replaced. So is a ``local_dir`` holding a
    ``history.json`` that its artifact does not record (checksum included): only the one of the
    artifact there is replaced or removed. A training history that fails its checks is left out
    with a warning naming ``repo_id@commit`` (the prompts are checked on their own), and is not
    copied into ``local_dir``.

    Raises:
        HubConnectionError, ArtifactError, UnknownComponentError: See :func:`download_artifact`
            and :func:`check_artifact`; also ``local_dir`` holding a README.md but no artifact,
            or a ``history.json`` that is not its artifact's.
        OSError: ``local_dir`` cannot be written; it keeps what it held.
    """
    from cotprompt.folder_commit import Writer, recover

    if local_dir is not None:  # checked before anything is fetched
        target = Path(local_dir)
        if (target / CARD_NAME).exists() and not (target / CONFIG_NAME).exists():
            # not an artifact's card: a pull never replaces nor removes it
            raise ArtifactError(
                f"{target} holds a README.md but no cotprompt artifact; pull into an empty "
                "folder or an artifact folder, so that your README.md is not replaced"
            )
        if history_ownership(target) == "foreign" and (
                recover(target, FOLDER_FILES, blocking=True) is None
                or history_ownership(target) == "foreign"):  # an interrupted save finished
            raise ArtifactError(f"{target} holds a {HISTORY_NAME} that its artifact does not "
                                f"record; {_PULL_ELSEWHERE}")
    folder, source = download_artifact(repo_id, revision=revision, token=token)
    shown = f"{repo_id}@{source['commit']}"
    checked = read_checked(folder, source=shown, folder_name=shown)
    config = checked.config
    if local_dir is not None:
        target = Path(local_dir)
        writers: dict[str, Writer | None] = {
            # copyfile follows the cache's symlinks
            name: functools.partial(_copy_to, folder / name)
            for name in (WEIGHTS_NAME, CARD_NAME, CONFIG_NAME) if (folder / name).is_file()
        }
        writers.setdefault(CARD_NAME, None)  # absent: the one an earlier artifact left goes too
        writers[CONFIG_NAME] = writers.pop(CONFIG_NAME)  # last, as in a save
        # only a recorded history that passed its checks is copied (a cache snapshot may hold
        # another one); without it, the one of the artifact there goes in the same commit
        history = (functools.partial(_copy_to, folder / HISTORY_NAME)
                   if "history" in config and checked.history is not None else None)
        commit_with_history(target, writers, history, refusal=_PULL_ELSEWHERE)
        folder = target
    logger.info("pulled %s at commit %s into %s", repo_id, source["commit"], folder)
    return PulledArtifact(folder=folder, source=source, config=config)
