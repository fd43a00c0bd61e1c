"""A JSON cache of language-model continuations, so that a second run never loads the model.

One file per model and decoding setup: its name holds a hash of the model id, revision, dtype,
decoding parameters and seed (:func:`cache_key`). Inside, raw continuations (before any
post-processing, so post-processing options can change without regenerating) are stored per
class name and filled prompt, one slot per sample index::

    {"format": 1, "meta": {...}, "entries": {"beagle": {"Q: What does a beagle...": ["..", ..]}}}

Files are written atomically and merged with what is on disk at save time, so two runs sharing
a cache lose nothing but the race for identical entries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cotprompt.io import write_text_atomic

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
CACHE_DIR_ENV = "COTPROMPT_CACHE_DIR"

Entries = dict[str, dict[str, list[str | None]]]


def default_cache_dir() -> Path:
    """``$COTPROMPT_CACHE_DIR/lm``, else ``$XDG_CACHE_HOME/cotprompt/lm``, else
    ``~/.cache/cotprompt/lm``."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser() / "lm"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "cotprompt" / "lm"


def cache_key(meta: Mapping[str, Any]) -> str:
    """A stable hash of the generation setup ``meta`` (JSON, sorted keys)."""
    blob = json.dumps({"format": CACHE_FORMAT, **meta}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class GenerationCache:
    """Raw continuations per (class name, prompt, sample index) for one generation setup.

    Args:
        directory: Folder of cache files.
        meta: Everything the continuations depend on (model, revision, dtype, decoding
            parameters, seed); it names the file.
    """

    def __init__(self, directory: str | os.PathLike[str], meta: Mapping[str, Any]) -> None:
        self.meta = dict(meta)
        key = cache_key(self.meta)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(self.meta.get("model", "lm")))[-60:]
        self.path = Path(directory).expanduser() / f"{slug}-{key[:20]}.json"
        self.entries: Entries = self._read()
        self._dirty = False

    def _read(self) -> Entries:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("format") != CACHE_FORMAT or data.get("meta") != self.meta:
                logger.warning("ignoring cache file %s: written for another setup", self.path)
                return {}
            entries = data["entries"]
            return {
                str(label): {str(p): [t if isinstance(t, str) else None for t in texts]
                             for p, texts in prompts.items()}
                for label, prompts in entries.items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            logger.warning("ignoring unreadable cache file %s: %r", self.path, exc)
            return {}

    def get(self, label: str, prompt: str, index: int) -> str | None:
        """The cached continuation, or ``None``."""
        texts = self.entries.get(label, {}).get(prompt, [])
        return texts[index] if index < len(texts) else None

    def put(self, label: str, prompt: str, index: int, text: str) -> None:
        """Store one continuation (kept in memory until :meth:`save`)."""
        texts = self.entries.setdefault(label, {}).setdefault(prompt, [])
        texts.extend([None] * (index + 1 - len(texts)))
        texts[index] = text
        self._dirty = True

    def save(self) -> None:
        """Merge with the file on disk and write it atomically (no-op when nothing changed)."""
        if not self._dirty:
            return
        merged = self._read()
        for label, prompts in self.entries.items():
            for prompt, texts in prompts.items():
                target = merged.setdefault(label, {}).setdefault(prompt, [])
                target.extend([None] * (len(texts) - len(target)))
                for i, text in enumerate(texts):
                    if text is not None:
                        target[i] = text
        self.entries = merged
        data = {"format": CACHE_FORMAT, "meta": self.meta, "entries": merged}
        write_text_atomic(self.path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")
        self._dirty = False
        logger.debug("wrote %s", self.path)
