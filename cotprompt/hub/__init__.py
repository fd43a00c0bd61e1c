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

This module is the public facade; the code lives in :mod:`cotprompt.hub.http` (retries and
errors), :mod:`cotprompt.hub.download` (pulling and checking), :mod:`cotprompt.hub.push`
(pushing) and :mod:`cotprompt.hub.mixin` (``from_pretrained`` / ``push_to_hub`` for any class
that saves to a folder).
"""

from __future__ import annotations

from cotprompt.artifact import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from cotprompt.errors import ArtifactError, CotpromptError
from cotprompt.hub.download import (
    PulledArtifact,
    check_artifact,
    download_artifact,
    pull,
    resolve_artifact,
)
from cotprompt.hub.http import (
    RETRIES_ENV,
    RETRY_WAIT_ENV,
    HubConnectionError,
    RetryPolicy,
    endpoint,
    is_offline,
)
from cotprompt.hub.mixin import HubMixin
from cotprompt.hub.push import push_folder, push_to_hub

__all__ = [
    "CARD_NAME",
    "CONFIG_NAME",
    "RETRIES_ENV",
    "RETRY_WAIT_ENV",
    "WEIGHTS_NAME",
    "ArtifactError",
    "CotpromptError",
    "HubConnectionError",
    "HubMixin",
    "PulledArtifact",
    "RetryPolicy",
    "check_artifact",
    "download_artifact",
    "endpoint",
    "is_offline",
    "pull",
    "push_folder",
    "push_to_hub",
    "resolve_artifact",
]
