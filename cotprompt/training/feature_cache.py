"""Frozen image features cached on disk, reused across epochs, runs and methods.

The image encoder is frozen for context tuners, and with a deterministic transform an image's
feature never changes: computing it once per dataset, backbone and transform is exact. Entries
live in ``<cache_dir>/<namespace>/*.safetensors``:

* the **namespace** is a hash of everything that determines a feature besides the image: the
  backbone spec (name and config), a checksum of the image encoder's weights, the transform
  (its ``repr``, with function code hashed), the precision and the tuner's image-encoding
  function, and the cache format version;
* each **entry** is keyed by a hash of what the model sees of the image (the file's bytes with
  the version of the file -> pixels rule, or the RGB pixels an in-memory image is shown as), so a
  file that changes on disk is a miss and is encoded again; the previous entry for that path is
  reported as stale (:attr:`FeatureCache.last_stats`);
* **shards** are safetensors files holding ``features`` ``[n, E]`` with the keys and paths in the
  metadata, written atomically; unreadable or inconsistent shards are reported and removed.

Few-shot runs that sample different images from the same dataset share entries, and so do CoOp,
CoCoOp and CoT-PT runs on the same backbone.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cotprompt.data.images import IMAGE_LOADER_VERSION, image_content_key
from cotprompt.data.records import ImageClassificationDataset, ImageRecord
from cotprompt.io import save_safetensors_atomic, write_text_atomic

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def content_key(record: ImageRecord) -> str:
    """Hash of what the model sees of an image: the file's bytes under the version of the
    file -> pixels rule (:data:`~cotprompt.data.images.IMAGE_LOADER_VERSION`), or the RGB
    pixels an in-memory image is shown as (:func:`~cotprompt.data.images.to_rgb`, which applies
    its orientation, profile and transparency)."""
    digest = hashlib.blake2b(digest_size=20)
    if record.path is not None:
        digest.update(f"file:{IMAGE_LOADER_VERSION}:".encode())
        with open(record.path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    else:
        assert record.image is not None
        digest.update(b"pil:")
        digest.update(image_content_key(record.image))
    return digest.hexdigest()


def describe_transform(transform: Any) -> str:
    """A stable description of a transform: its ``repr`` without memory addresses, plus a hash
    of the code of every plain function or lambda it contains."""
    if transform is None:
        return "None"
    text = _ADDRESS.sub("", repr(transform))
    codes = []
    for fn in _functions_in(transform):
        code = getattr(fn, "__code__", None)
        if code is not None:
            blob = code.co_code + repr(code.co_consts).encode() + repr(code.co_names).encode()
            codes.append(f"{getattr(fn, '__qualname__', '?')}:{hashlib.sha1(blob).hexdigest()}")
    return text + ("|" + ",".join(codes) if codes else "")


def _functions_in(obj: Any, depth: int = 0) -> list[Any]:
    if depth > 4:
        return []
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return [obj]
    found = []
    for name in ("transforms", "lambd", "fn", "func"):
        value = getattr(obj, name, None)
        if value is None:
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            found.extend(_functions_in(item, depth + 1))
    return found


def weights_checksum(module: nn.Module) -> str:
    """A checksum of a module's parameters (sum and sum of squares per tensor, in float64,
    rounded to 8 significant digits so that devices agree)."""
    total = torch.zeros(2, dtype=torch.float64)
    for i, param in enumerate(module.parameters()):
        p = param.detach().double()
        weight = 1.0 + (i % 7) / 7
        total += torch.stack([p.sum(), (p * p).sum()]).cpu() * weight
    return ",".join(f"{float(v):.8e}" for v in total)


def image_encoder_module(backbone: Any) -> nn.Module | None:
    """The module that holds the image encoder's weights (``backbone.model.visual``), or the
    backbone itself."""
    model = getattr(backbone, "model", None)
    visual = getattr(model, "visual", None)
    if isinstance(visual, nn.Module):
        return visual
    return backbone if isinstance(backbone, nn.Module) else None


@dataclass
class _Entry:
    shard: Path
    row: int


@dataclass
class CacheStats:
    """What the last :meth:`FeatureCache.features` call found.

    Attributes:
        hits: Images whose feature was read from disk.
        misses: Images encoded (new, or changed since they were cached).
        stale: Cached entries of the same files with other contents (the file changed).
        corrupt: Shards that could not be read and were removed.
        namespace: The namespace directory used.
    """

    hits: int = 0
    misses: int = 0
    stale: int = 0
    corrupt: int = 0
    namespace: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class FeatureCache:
    """Image features on disk, keyed by backbone, transform and image contents.

    Args:
        directory: The cache folder (created on first write).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()
        self.last_stats = CacheStats()

    # -- namespace --------------------------------------------------------------------------

    def namespace_record(
        self, backbone: Any, transform: Any, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Everything, besides an image, that its cached feature depends on."""
        spec = backbone.spec() if hasattr(backbone, "spec") else {"class": type(backbone).__name__}
        encoder = image_encoder_module(backbone)
        return {
            "format": FORMAT_VERSION,
            "backbone": spec,
            "weights": weights_checksum(encoder) if encoder is not None else None,
            "transform": describe_transform(transform),
            "extra": extra or {},
        }

    @staticmethod
    def namespace_key(record: dict[str, Any]) -> str:
        """Directory name of a namespace record."""
        blob = json.dumps(record, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:24]

    # -- reading ----------------------------------------------------------------------------

    def _load_index(
        self, folder: Path, stats: CacheStats
    ) -> tuple[dict[str, _Entry], dict[str, set[str]]]:
        """``key -> entry`` and ``path -> keys cached for it`` of a namespace folder."""
        from safetensors import safe_open

        index: dict[str, _Entry] = {}
        by_path: dict[str, set[str]] = {}
        if not folder.is_dir():
            return index, by_path
        for shard in sorted(folder.glob("*.safetensors")):
            try:
                with safe_open(str(shard), framework="pt") as handle:
                    meta = handle.metadata() or {}
                    rows = handle.get_slice("features").get_shape()[0]
                keys = json.loads(meta["keys"])
                paths = json.loads(meta["paths"])
                if int(meta.get("format", -1)) != FORMAT_VERSION:
                    raise ValueError(f"format {meta.get('format')} != {FORMAT_VERSION}")
                if len(keys) != rows or len(paths) != rows:
                    raise ValueError(f"{len(keys)} keys for {rows} rows")
            except Exception as exc:
                stats.corrupt += 1
                logger.warning("removing unreadable feature-cache shard %s: %s", shard, exc)
                shard.unlink(missing_ok=True)
                continue
            for row, (key, path) in enumerate(zip(keys, paths, strict=True)):
                index[key] = _Entry(shard, row)
                if path:
                    by_path.setdefault(path, set()).add(key)
        return index, by_path

    @staticmethod
    def _read(entries: Sequence[_Entry]) -> Tensor:
        from safetensors import safe_open

        by_shard: dict[Path, list[int]] = {}
        for position, entry in enumerate(entries):
            by_shard.setdefault(entry.shard, []).append(position)
        out: Tensor | None = None
        for shard, positions in by_shard.items():
            with safe_open(str(shard), framework="pt") as handle:
                features = handle.get_tensor("features")
            rows = torch.tensor([entries[p].row for p in positions], dtype=torch.long)
            if out is None:
                out = torch.empty((len(entries), features.shape[1]), dtype=features.dtype)
            out[torch.tensor(positions, dtype=torch.long)] = features[rows]
        assert out is not None
        return out

    # -- writing ----------------------------------------------------------------------------

    @staticmethod
    def _write(folder: Path, record: dict[str, Any], keys: list[str], paths: list[str], features):
        folder.mkdir(parents=True, exist_ok=True)
        meta_path = folder / "namespace.json"
        if not meta_path.exists():
            write_text_atomic(meta_path, json.dumps(record, indent=2, sort_keys=True, default=str))
        name = hashlib.sha1("".join(keys).encode()).hexdigest()[:20] + ".safetensors"
        metadata = {
            "format": str(FORMAT_VERSION),
            "keys": json.dumps(keys),
            "paths": json.dumps(paths),
        }
        save_safetensors_atomic({"features": features.detach().float()}, folder / name, metadata)

    # -- the one call -----------------------------------------------------------------------

    def features(
        self,
        dataset: ImageClassificationDataset,
        backbone: Any,
        encode: Callable[[ImageClassificationDataset], Tensor],
        extra: dict[str, Any] | None = None,
    ) -> Tensor:
        """Features ``[N, E]`` (float32, CPU) of ``dataset``'s images under its transform.

        Args:
            dataset: The images; ``dataset.transform`` is part of the key.
            backbone: Its spec and image-encoder weights are part of the key.
            encode: Computes the features of a sub-dataset (called once, with the misses only).
            extra: More key fields (precision, the image-encoding function...).
        """
        stats = CacheStats()
        record = self.namespace_record(backbone, dataset.transform, extra)
        namespace = self.namespace_key(record)
        stats.namespace = namespace
        folder = self.directory / namespace
        index, by_path = self._load_index(folder, stats)
        keys = [content_key(r) for r in dataset.records]
        paths = [str(r.path.resolve()) if r.path is not None else "" for r in dataset.records]
        missing: dict[str, int] = {}
        for i, (key, path) in enumerate(zip(keys, paths, strict=True)):
            if key in index or key in missing:
                continue
            missing[key] = i
            if path and by_path.get(path):
                stats.stale += len(by_path[path] - {key})
        if missing:
            positions = list(missing.values())
            new = encode(dataset.subset(positions)).detach().float().cpu()
            if new.shape[0] != len(positions):
                raise RuntimeError("the encoder returned a wrong number of features")
            self._write(folder, record, list(missing), [paths[i] for i in positions], new)
            index, _ = self._load_index(folder, stats)
        stats.misses = len(missing)
        stats.hits = len(dataset.records) - sum(
            1 for i, k in enumerate(keys) if k in missing and missing[k] == i
        )
        if stats.stale:
            logger.info(
                "feature cache: %d cached entries were stale (their files changed); the new "
                "contents were encoded",
                stats.stale,
            )
        logger.info("feature cache %s: %d read, %d encoded", folder, stats.hits, stats.misses)
        self.last_stats = stats
        return self._read([index[k] for k in keys])
