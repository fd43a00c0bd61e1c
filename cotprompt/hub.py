"""Sharing saved pipelines through the Hugging Face Hub (or any server speaking its API).

``huggingface_hub`` does the transport, so the usual settings apply: ``HF_ENDPOINT`` (a mirror
or a private Hub), ``HF_TOKEN`` or ``hf auth login``, ``HF_HOME``/``HF_HUB_CACHE`` and
``HF_HUB_OFFLINE``. Note that ``huggingface_hub`` reads these variables when it is imported.

What this module adds on top:

* **Pinned downloads.** A load first resolves the requested revision (branch, tag or commit) to
  a commit, then downloads every file *at that commit*, so the config and the weights always come
  from the same commit even if someone pushes meanwhile; the commit is recorded in
  ``pipeline.source`` so the load can be repeated exactly (``revision=source["commit"]``).
* **Bounded retries with a clear error.** The first request is retried a few times on
  connection errors, timeouts and 429/5xx answers (``COTPROMPT_HUB_RETRIES`` attempts, default 3,
  waiting ``COTPROMPT_HUB_RETRY_WAIT`` seconds, default 0.5, doubling), then fails with
  :class:`HubConnectionError` naming the endpoint; when the files of that revision are already in
  the cache they are used instead, with a warning.
* **Validation before anything is trusted.** Downloaded and pushed folders are checked: config
  format version, components installed (the error names the package to install), weights
  checksum and safetensors header against the config. Only ``cotprompt_config.json``,
  ``prompt_weights.safetensors`` and ``README.md`` are ever fetched; nothing is installed or run.
* **One commit per push.** Config, weights and model card go up in a single commit; a ``README.md``
  already in the repository is downloaded first so that its custom text and metadata are kept.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cotprompt.artifact import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, file_sha256, read_config
from cotprompt.errors import ArtifactError, CotpromptError

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

    from cotprompt.pipeline import CoTPipeline

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRIES_ENV = "COTPROMPT_HUB_RETRIES"
RETRY_WAIT_ENV = "COTPROMPT_HUB_RETRY_WAIT"
_RETRY_STATUS = (408, 429, 500, 502, 503, 504)
_COMMIT_RE_LEN = 40


class HubConnectionError(ArtifactError, ConnectionError):
    """The Hub endpoint could not be reached (or kept failing) after the bounded retries."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a Hub request is retried.

    Args:
        attempts: Total tries (at least 1).
        wait: Seconds before the second try; doubled after each failure.
        max_wait: Upper bound of one wait.
    """

    attempts: int = 3
    wait: float = 0.5
    max_wait: float = 4.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """The policy set by ``COTPROMPT_HUB_RETRIES`` and ``COTPROMPT_HUB_RETRY_WAIT``."""
        try:
            attempts = int(os.environ.get(RETRIES_ENV, cls.attempts))
            wait = float(os.environ.get(RETRY_WAIT_ENV, cls.wait))
        except ValueError as exc:
            raise CotpromptError(f"{RETRIES_ENV}/{RETRY_WAIT_ENV} must be numbers: {exc}") from exc
        return cls(attempts=max(1, attempts), wait=max(0.0, wait))


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


# -- helpers ---------------------------------------------------------------------------------


def _constants() -> Any:
    from huggingface_hub import constants

    return constants


def endpoint() -> str:
    """The Hub endpoint in use (``HF_ENDPOINT`` as read by huggingface_hub)."""
    return str(_constants().ENDPOINT).rstrip("/")


def is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is in effect for huggingface_hub."""
    constants = _constants()
    check = getattr(constants, "is_offline_mode", None)
    return bool(check() if callable(check) else constants.HF_HUB_OFFLINE)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level exception classes of whichever HTTP client huggingface_hub uses."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module_name, names in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests", ("ConnectionError", "Timeout")),
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found += [getattr(module, name) for name in names if hasattr(module, name)]
    return tuple(found)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _is_transient(exc: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return False
    if isinstance(exc, HfHubHTTPError):
        return _status(exc) in _RETRY_STATUS
    return isinstance(exc, _transport_errors())


def _with_retries(call: Callable[[], T], what: str, policy: RetryPolicy | None = None) -> T:
    """Run ``call``, retrying transient failures; raise :class:`HubConnectionError` at the end."""
    policy = policy or RetryPolicy.from_env()
    wait = policy.wait
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except Exception as exc:
            if not _is_transient(exc):
                raise
            if attempt == policy.attempts:
                status = _status(exc)
                reason = f"HTTP {status}" if status else f"{type(exc).__name__}: {exc}"
                raise HubConnectionError(
                    f"cannot {what}: the Hub at {endpoint()} did not answer properly after "
                    f"{policy.attempts} attempt(s) ({reason}). Check your connection and "
                    "HF_ENDPOINT."
                ) from exc
            logger.warning(
                "%s failed (%s); retrying in %.1fs [%d/%d]",
                what,
                type(exc).__name__,
                wait,
                attempt,
                policy.attempts,
            )
            time.sleep(wait)
            wait = min(policy.max_wait, wait * 2)
    raise AssertionError("unreachable")  # pragma: no cover


def _hub_error(
    exc: BaseException, repo_id: str, revision: str | None, action: str
) -> ArtifactError:
    """A cotprompt error with a clear message for a huggingface_hub failure."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id!r}" + (f" (revision {revision!r})" if revision else "")
    status = _status(exc)
    writing = action.startswith("push")
    if isinstance(exc, GatedRepoError):
        message = f"{where} is gated: accept its conditions on the Hub and pass a token"
    elif status == 401 and "Invalid credentials" in str(exc):
        message = (
            f"the Hub at {endpoint()} rejected the token (401) while trying to {action} "
            f"{where}: check HF_TOKEN, `hf auth login` or the token argument"
        )
    elif status == 401 and writing:
        message = (
            f"pushing to {where} needs a token with write access (401 Unauthorized): "
            "pass token=..., set HF_TOKEN or run `hf auth login`"
        )
    elif status == 403:
        message = (
            f"the token is not allowed to {action} {where} (403 Forbidden): it can only "
            "write to its own namespace and to organisations it has write access to"
        )
    elif isinstance(exc, RepositoryNotFoundError):
        message = (
            f"repository {where} not found at {endpoint()}: check the id, or, if it is "
            "private, pass a token that can read it"
        )
    elif isinstance(exc, RevisionNotFoundError):
        message = (
            f"revision {revision!r} does not exist in {repo_id!r} (no such branch, tag or commit)"
        )
    elif isinstance(exc, LocalEntryNotFoundError):
        message = (
            f"{where} is not in the local cache and the Hub cannot be used "
            f"(HF_HUB_OFFLINE={int(is_offline())}); pull it once online "
            f"(`cotprompt pull {repo_id}`)"
        )
    elif isinstance(exc, EntryNotFoundError):
        message = f"{where} has no {CONFIG_NAME} or {WEIGHTS_NAME}: it is not a cotprompt artifact"
    elif isinstance(exc, HfHubHTTPError):
        message = f"the Hub at {endpoint()} refused to {action} {where}: {exc}"
    else:
        message = f"cannot {action} {where}: {type(exc).__name__}: {exc}"
    return ArtifactError(message)


def _library_kwargs() -> dict[str, str]:
    from cotprompt._version import __version__

    return {"library_name": "cotprompt", "library_version": __version__}


def _is_commit(revision: str | None) -> bool:
    return (
        revision is not None
        and len(revision) == _COMMIT_RE_LEN
        and all(c in "0123456789abcdef" for c in revision)
    )


# -- validation ------------------------------------------------------------------------------


def check_artifact(folder: str | Path) -> dict[str, Any]:
    """Check a saved artifact without building the model; returns its config.

    Checks the config (format version, required entries), that every component is installed
    (the error names the package that provides it), the weights checksum and that the
    safetensors header lists exactly the tensors, shapes and dtypes the config records. The
    complete check against the model happens in :meth:`CoTPipeline.from_pretrained`.

    Raises:
        ArtifactError: Anything missing, corrupt, tampered or from a newer format.
        UnknownComponentError: A component's plugin is not installed.
    """
    from safetensors import SafetensorError, safe_open

    from cotprompt.plugins import get_registry

    folder = Path(folder)
    config = read_config(folder)
    registry = get_registry()
    for kind in ("backbone", "generator", "tuner", "aggregator"):
        record = config[kind]
        if not isinstance(record, dict) or not isinstance(record.get("name"), str):
            raise ArtifactError(f"malformed {kind} entry in {folder / CONFIG_NAME}")
        registry.get(kind, record["name"], package=record.get("package"))
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ArtifactError(f"{weights} is missing")
    recorded = config["weights"]
    if not isinstance(recorded, dict) or not recorded.get("sha256"):
        raise ArtifactError(f"{folder / CONFIG_NAME} records no weights checksum")
    if file_sha256(weights) != recorded["sha256"]:
        raise ArtifactError(
            f"{weights} does not match the checksum in {CONFIG_NAME}: the file is corrupt, "
            "truncated or from another save"
        )
    try:
        with safe_open(str(weights), framework="pt") as handle:
            header = {}
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                tensor_slice = handle.get_slice(name)
                header[name] = {
                    "shape": list(tensor_slice.get_shape()),
                    "dtype": tensor_slice.get_dtype(),
                }
    except SafetensorError as exc:
        raise ArtifactError(f"{weights} is not a valid safetensors file: {exc}") from exc
    expected = recorded.get("tensors") or {}
    if header != expected:
        raise ArtifactError(
            f"{weights} does not hold the tensors {CONFIG_NAME} records: file {header}, "
            f"config {expected}"
        )
    return config


# -- pulling ---------------------------------------------------------------------------------


def _download(
    repo_id: str,
    name: str,
    revision: str,
    token: str | bool | None,
    cache_dir: str | None,
    *,
    local_only: bool = False,
) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(
        hf_hub_download(
            repo_id,
            name,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_only,
            **_library_kwargs(),
        )
    )


def _resolve_commit(
    repo_id: str, revision: str | None, token: str | bool | None, policy: RetryPolicy | None
) -> str:
    """The commit ``revision`` points to now, from the config file's metadata (one HEAD call)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo_id, CONFIG_NAME, revision=revision)
    metadata = _with_retries(
        lambda: get_hf_file_metadata(url, token=token),
        f"resolve {repo_id!r} at {revision or 'main'}",
        policy,
    )
    if not metadata.commit_hash:
        raise ArtifactError(
            f"{endpoint()} did not say which commit {revision or 'main'} of "
            f"{repo_id!r} is (no X-Repo-Commit header): is it a Hub endpoint?"
        )
    return str(metadata.commit_hash)


def _fetch_files(
    repo_id: str,
    revision: str,
    token: str | bool | None,
    cache_dir: str | None,
    *,
    local_only: bool,
) -> Path:
    """Download config, weights and card; all at the commit the config was found at.

    The config is fetched by the requested revision name (so that the cache records which
    commit a branch or tag pointed to, for offline use), the other files by that commit.
    """
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    folder = _download(
        repo_id, CONFIG_NAME, revision, token, cache_dir, local_only=local_only
    ).parent
    commit = folder.name
    _download(repo_id, WEIGHTS_NAME, commit, token, cache_dir, local_only=local_only)
    try:
        _download(repo_id, CARD_NAME, commit, token, cache_dir, local_only=local_only)
    except (EntryNotFoundError, LocalEntryNotFoundError):
        logger.info("%s has no model card at %s", repo_id, commit)
    return folder


def download_artifact(
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    retry: RetryPolicy | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Download an artifact's files from the Hub into the cache, pinned to one commit.

    Args:
        repo_id: ``namespace/name``.
        revision: Branch, tag or commit (default ``main``).
        token: Hub token; default the usual huggingface_hub settings.
        cache_dir: Default ``HF_HUB_CACHE``.
        retry: Default :meth:`RetryPolicy.from_env`.

    Returns:
        ``(folder, source)``; ``source`` holds ``repo_id``, the requested ``revision``, the
        resolved ``commit`` and the ``endpoint``.

    Raises:
        HubConnectionError: The endpoint is unreachable and nothing usable is cached.
        ArtifactError: Missing repository, revision or file; rejected token.
    """
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    cache = str(cache_dir) if cache_dir is not None else None
    name = revision or "main"
    source: dict[str, Any] = {
        "type": "hub",
        "repo_id": repo_id,
        "revision": revision,
        "endpoint": endpoint(),
    }
    try:
        if is_offline() or _is_commit(revision):
            # Offline, or an immutable commit: the cache answers without any request.
            try:
                folder = _fetch_files(repo_id, name, token, cache, local_only=True)
                return folder, {**source, "commit": folder.name}
            except LocalEntryNotFoundError:
                if is_offline():
                    raise
        try:
            # One cheap request with bounded retries: fails fast and clearly when the endpoint
            # is down, the repository, revision or config is missing, or the token is refused.
            _resolve_commit(repo_id, revision, token, retry)
        except HubConnectionError as exc:
            try:
                folder = _fetch_files(repo_id, name, token, cache, local_only=True)
            except LocalEntryNotFoundError:
                raise HubConnectionError(
                    f"{exc} {repo_id!r} at {name!r} is not in the local cache either."
                ) from exc.__cause__
            logger.warning("%s; using the cached commit %s of %s", exc, folder.name, repo_id)
            return folder, {**source, "commit": folder.name}
        folder = _fetch_files(repo_id, name, token, cache, local_only=False)
    except ArtifactError:
        raise
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        if _is_transient(exc):
            raise HubConnectionError(
                f"lost the connection to {endpoint()} while downloading {repo_id!r}: {exc}"
            ) from exc
        raise _hub_error(exc, repo_id, revision, "download") from exc
    return folder, {**source, "commit": folder.name}


def resolve_artifact(
    path_or_repo_id: str | Path, *, revision: str | None = None, token: str | bool | None = None
) -> tuple[Path, dict[str, Any]]:
    """A local folder holding the artifact files, and a record of where they came from.

    A path that exists locally is used as it is; anything else is read as a Hub repository id
    and downloaded with :func:`download_artifact` (or taken from the cache when offline).

    Returns:
        ``(folder, source)`` where ``source`` names the path, or the repository, the requested
        revision, the resolved commit and the endpoint.
    """
    path = Path(path_or_repo_id)
    if path.is_dir():
        return path, {"type": "local", "path": str(path.resolve())}
    text = str(path_or_repo_id)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1 or not text:
        raise ArtifactError(
            f"{path} is not a folder holding a saved cotprompt pipeline, nor a "
            "Hub repository id (namespace/name)"
        )
    return download_artifact(text, revision=revision, token=token)


def pull(
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    local_dir: str | Path | None = None,
) -> PulledArtifact:
    """Download an artifact into the cache, check it, and optionally copy it to ``local_dir``.

    After a pull the artifact also loads with ``HF_HUB_OFFLINE=1``.

    Raises:
        HubConnectionError, ArtifactError, UnknownComponentError: See :func:`download_artifact`
            and :func:`check_artifact`.
    """
    folder, source = download_artifact(repo_id, revision=revision, token=token)
    config = check_artifact(folder)
    if local_dir is not None:
        target = Path(local_dir)
        target.mkdir(parents=True, exist_ok=True)
        for name in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME):
            if (folder / name).is_file():
                shutil.copyfile(folder / name, target / name)  # follows the cache's symlinks
        folder = target
    logger.info("pulled %s at commit %s into %s", repo_id, source["commit"], folder)
    return PulledArtifact(folder=folder, source=source, config=config)


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
            path = _with_retries(
                lambda: api.hf_hub_download(
                    repo_id, CARD_NAME, revision=revision, token=token, cache_dir=tmp
                ),
                f"read the model card of {repo_id!r}",
                policy,
            )
        except (EntryNotFoundError, RevisionNotFoundError):
            return None
        return Path(path).read_text(encoding="utf-8")


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    retry: RetryPolicy | None = None,
) -> CommitInfo:
    """Upload a saved artifact folder to a Hub repository in one commit.

    The repository is created if needed (``private`` only applies then); a ``revision`` naming a
    branch that does not exist yet is created from ``main``. The folder is checked first
    (:func:`check_artifact`); its model card is re-rendered for the repository, keeping the
    custom text and metadata of the repository's current ``README.md`` (or, for a first push,
    of the folder's).

    Args:
        folder: A folder written by :meth:`CoTPipeline.save_pretrained`.
        repo_id: ``namespace/name``.
        token: Hub token with write access; default the usual huggingface_hub settings.
        private: Create the repository as private.
        revision: Branch to commit to (default ``main``).
        commit_message: Default: a summary of the pipeline.
        create_pr: Open a pull request with the commit instead of committing to the branch.
        retry: Retries of the idempotent requests (default :meth:`RetryPolicy.from_env`).

    Returns:
        The :class:`huggingface_hub.CommitInfo` (``commit_url``, ``oid``, ``pr_url``...).

    Raises:
        HubConnectionError: The endpoint is unreachable.
        ArtifactError: Invalid folder, rejected token (401), another namespace (403)...
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from cotprompt.model_card import render_card

    folder = Path(folder)
    config = check_artifact(folder)
    api = HfApi(**_library_kwargs())
    branch = revision if revision and revision != "main" else None
    try:
        _with_retries(
            lambda: api.create_repo(repo_id, token=token, private=private, exist_ok=True),
            f"create the repository {repo_id!r}",
            retry,
        )
        if branch and not branch.startswith("refs/pr/"):
            _with_retries(
                lambda: api.create_branch(repo_id, branch=branch, token=token, exist_ok=True),
                f"create the branch {branch!r} of {repo_id!r}",
                retry,
            )
        existing = _existing_card(api, repo_id, revision, token, retry)
        if existing is None and (folder / CARD_NAME).is_file():
            existing = (folder / CARD_NAME).read_text(encoding="utf-8")
        card = render_card(config, existing, repo_id=repo_id, revision=branch)
        labels = config["chain"]["labels"]
        message = commit_message or (
            f"Upload cotprompt {config['tuner']['name']} prompts ({len(labels)} labels)"
        )
        operations = [
            CommitOperationAdd(path_in_repo=CONFIG_NAME, path_or_fileobj=str(folder / CONFIG_NAME)),
            CommitOperationAdd(
                path_in_repo=WEIGHTS_NAME, path_or_fileobj=str(folder / WEIGHTS_NAME)
            ),
            CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card.encode("utf-8")),
        ]
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
        if _is_transient(exc):
            raise HubConnectionError(
                f"lost the connection to {endpoint()} while pushing to {repo_id!r}: {exc}"
            ) from exc
        raise _hub_error(exc, repo_id, revision, "push to") from exc
    except Exception as exc:
        if _is_transient(exc):
            raise HubConnectionError(
                f"lost the connection to {endpoint()} while pushing to {repo_id!r}: {exc}"
            ) from exc
        raise
    logger.info("pushed %s to %s: %s", folder, repo_id, getattr(info, "commit_url", info))
    return info


def push_to_hub(
    pipeline: CoTPipeline,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
) -> CommitInfo:
    """Save ``pipeline`` to a temporary folder and push it with :func:`push_folder`."""
    with tempfile.TemporaryDirectory(prefix="cotprompt-push-") as tmp:
        folder = pipeline.save_pretrained(Path(tmp) / "artifact")
        return push_folder(
            folder,
            repo_id,
            token=token,
            private=private,
            revision=revision,
            commit_message=commit_message,
            create_pr=create_pr,
        )
