"""Shared Hub plumbing: endpoint and offline settings, bounded retries and error messages.

The one responsibility of this module is talking to ``huggingface_hub`` safely: it holds
:class:`HubConnectionError`, :class:`RetryPolicy`, the retry loop and the translation of
``huggingface_hub`` failures into clear cotprompt errors. Downloading lives in
:mod:`cotprompt.hub.download`, pushing in :mod:`cotprompt.hub.push`; :mod:`cotprompt.hub` is the
public facade.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar

from cotprompt.artifact.format import CONFIG_NAME, WEIGHTS_NAME
from cotprompt.errors import ArtifactError, CotpromptError

logger = logging.getLogger("cotprompt.hub")

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


# -- helpers ---------------------------------------------------------------------------------


def hub_constants() -> Any:
    from huggingface_hub import constants

    return constants


def endpoint() -> str:
    """The Hub endpoint in use (``HF_ENDPOINT`` as read by huggingface_hub)."""
    return str(hub_constants().ENDPOINT).rstrip("/")


def is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is in effect for huggingface_hub."""
    constants = hub_constants()
    check = getattr(constants, "is_offline_mode", None)
    return bool(check() if callable(check) else constants.HF_HUB_OFFLINE)


def transport_errors() -> tuple[type[BaseException], ...]:
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


def http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def is_transient(exc: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return False
    if isinstance(exc, HfHubHTTPError):
        return http_status(exc) in _RETRY_STATUS
    return isinstance(exc, transport_errors())


def with_retries(call: Callable[[], T], what: str, policy: RetryPolicy | None = None) -> T:
    """Run ``call``, retrying transient failures; raise :class:`HubConnectionError` at the end."""
    policy = policy or RetryPolicy.from_env()
    wait = policy.wait
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == policy.attempts:
                status = http_status(exc)
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


def hub_error(
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
    status = http_status(exc)
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


class LibraryKwargs(TypedDict):
    """The ``library_name`` / ``library_version`` keywords of huggingface_hub's calls."""

    library_name: str
    library_version: str


def library_kwargs() -> LibraryKwargs:
    """cotprompt's name and version, for the user agent of huggingface_hub's requests."""
    from cotprompt._version import __version__

    return {"library_name": "cotprompt", "library_version": __version__}


def is_commit(revision: str | None) -> bool:
    return (
        revision is not None
        and len(revision) == _COMMIT_RE_LEN
        and all(c in "0123456789abcdef" for c in revision)
    )
