"""Where an open_clip backbone's weights come from, decided before anything is built.

open_clip loads whatever ``pretrained`` names: safetensors, but also ``torch.load`` pickles and
TorchScript archives, which can run code. cotprompt first works out what the weights are, by
content rather than by name, and refuses pickle and TorchScript unless the caller opted in with
``allow_pickle`` (in code or on the command line; never from a loaded file, see
:func:`cotprompt.config.validate_untrusted`):

========================================  =========================================
``pretrained`` / ``model_name``            loaded
========================================  =========================================
``None``                                   random weights (``init_seed``)
a known open_clip tag (``openai``...)      by open_clip from the tag's official source
a ``.safetensors`` file                    safetensors (no code)
a ``.npz`` / ``.npy`` file                 numpy without pickle (big_vision SigLIP)
OpenAI's published TorchScript archive     its tensors only (identified by SHA-256)
an OpenAI-format state dict (safetensors)  its tensors, OpenAI's extra entries dropped
``hf-hub:org/name`` model                  its ``open_clip_model.safetensors`` only
``local-dir:/path`` model                  when the file open_clip picks is safetensors
anything else (``.pt``, ``.bin``...)       only with ``allow_pickle=True``
========================================  =========================================

The same step decides the activation: OpenAI's CLIP was trained with QuickGELU, so OpenAI
weights (the ``openai`` tag, a TorchScript archive, or a state dict carrying OpenAI's
``input_resolution`` entry) always build QuickGELU blocks, under ``ViT-B-16`` as under
``ViT-B-16-quickgelu`` (open_clip alone builds GELU under ``ViT-B-16``, 1.5 % off in text
features).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from cotprompt.errors import ConfigError

logger = logging.getLogger(__name__)

Format = Literal["safetensors", "numpy", "torchscript", "pickle"]

#: Keys OpenAI's checkpoints carry besides the weights (open_clip drops them).
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
_SAFE_NAME = "open_clip_model.safetensors"
_CONFIG_NAME = "open_clip_config.json"
_PICKLE_HINT = (
    "If you trust the file, opt in as the caller: allow_pickle=True in code "
    "(OpenCLIPBackboneConfig, CoTPipeline.from_pretrained) or --allow-pickle on the command line"
)


@dataclass(frozen=True)
class WeightsSource:
    """What to build and how to load its weights.

    Attributes:
        kind: ``random``, ``tag``, ``file``, ``openai-file``, ``hf-hub`` or ``local-dir``.
        model_name: The name to give open_clip (an ``hf-hub:`` model becomes a ``local-dir:``
            folder holding only its config and safetensors weights).
        pretrained: The ``pretrained`` argument for open_clip (``None`` when cotprompt loads the
            tensors itself, after building: OpenAI-format files).
        quick_gelu: Build QuickGELU blocks (OpenAI weights).
        state_file: An OpenAI-format file whose tensors :func:`load_state_file` copies into the
            built model (open_clip refuses their extra entries, or would unpickle).
        state_format: The format of ``state_file``.
    """

    kind: str
    model_name: str
    pretrained: str | None
    quick_gelu: bool = False
    state_file: Path | None = None
    state_format: Format | None = None


def sniff_format(path: Path) -> Format:
    """What a checkpoint file holds, from its first bytes (never by unpickling).

    Returns:
        ``safetensors``, ``numpy`` (``.npy`` or an ``.npz`` of arrays), ``torchscript`` (a zip
        archive with TorchScript code) or ``pickle`` (a ``torch.save`` zip or legacy pickle, or
        anything unrecognised, which only ``torch.load`` could read).
    """
    with open(path, "rb") as handle:
        head = handle.read(9)
    size = path.stat().st_size
    if len(head) == 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if 8 + header_len <= size:
            return "safetensors"
    if head.startswith(b"\x93NUMPY"):
        return "numpy"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return "pickle"
        if any("/code/" in name for name in names) and any(
            name.endswith("constants.pkl") for name in names
        ):
            return "torchscript"
        if names and all(name.endswith(".npy") for name in names):
            return "numpy"
    return "pickle"


@lru_cache(maxsize=1)
def openai_sha256() -> frozenset[str]:
    """SHA-256 of OpenAI's published CLIP checkpoints (the hash is part of their URLs)."""
    from open_clip import pretrained as registry

    hashes = set()
    for tags in getattr(registry, "_PRETRAINED", {}).values():
        for cfg in tags.values():
            url = cfg.get("url", "")
            if "openaipublic" in url:
                hashes.add(url.rstrip("/").split("/")[-2])
    return frozenset(hashes)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())


def _pickle_keys(path: Path) -> list[str]:
    """Keys of a pickled state dict; only called once the caller allowed pickle."""
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    return list(checkpoint) if isinstance(checkpoint, dict) else []


def _is_openai_state(keys: list[str]) -> bool:
    return any(key.removeprefix("module.") == "input_resolution" for key in keys)


def _model_quick_gelu(model_name: str) -> bool:
    from open_clip import get_model_config

    return bool((get_model_config(model_name) or {}).get("quick_gelu", False))


def _tag_source(model_name: str, tag: str, tag_cfg: dict[str, Any]) -> WeightsSource:
    tag_quick = bool(tag_cfg.get("quick_gelu", False))
    if _model_quick_gelu(model_name) and not tag_quick:
        plain = model_name.removesuffix("-quickgelu")
        raise ConfigError(
            f"the {tag!r} weights of {model_name} were trained with GELU, but {model_name} "
            f"builds QuickGELU blocks; use model_name={plain!r}"
        )
    return WeightsSource("tag", model_name, tag, quick_gelu=tag_quick)


def _file_source(model_name: str, path: Path, allow_pickle: bool) -> WeightsSource:
    if not path.is_file():
        raise ConfigError(f"pretrained weights file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy"):  # open_clip reads these with numpy, without pickle
        return WeightsSource("file", model_name, str(path))
    fmt = sniff_format(path)
    if fmt == "safetensors":
        if _is_openai_state(_safetensors_keys(path)):
            return _openai_state(model_name, path, fmt)
        if suffix != ".safetensors":
            raise ConfigError(
                f"{path} holds safetensors data but open_clip picks the loader by file name; "
                "rename it to end in .safetensors"
            )
        return WeightsSource("file", model_name, str(path))
    if fmt == "torchscript":
        if allow_pickle or _sha256(path) in openai_sha256():
            return _openai_state(model_name, path, fmt)
        raise ConfigError(
            f"{path} is a TorchScript archive that is not one of OpenAI's published CLIP "
            f"checkpoints; loading it runs TorchScript. {_PICKLE_HINT}"
        )
    if fmt == "numpy":
        raise ConfigError(f"{path} holds numpy arrays; name it .npz or .npy")
    if not allow_pickle:
        raise ConfigError(
            f"{path} is a pickle-based checkpoint (torch.save); loading it can run code. "
            f"Convert it to .safetensors, or: {_PICKLE_HINT}"
        )
    if _is_openai_state(_pickle_keys(path)):
        return _openai_state(model_name, path, fmt)
    return WeightsSource("file", model_name, str(path))


def _openai_state(model_name: str, path: Path, fmt: Format) -> WeightsSource:
    """OpenAI's format (a TorchScript archive, or a state dict with its extra entries): built
    with QuickGELU, tensors copied in by :func:`load_state_file`."""
    return WeightsSource("openai-file", model_name, None, quick_gelu=True, state_file=path,
                         state_format=fmt)


def _local_dir_source(model_name: str, folder: Path, allow_pickle: bool) -> WeightsSource:
    from open_clip import factory

    if not folder.is_dir():
        raise ConfigError(f"{model_name}: folder {folder} does not exist")
    find = getattr(factory, "_find_checkpoint_in_dir", None)
    chosen = find(folder) if find is not None else None
    if chosen is not None and not str(chosen).endswith(".safetensors") and not allow_pickle:
        raise ConfigError(
            f"{model_name}: the weights open_clip would load, {Path(chosen).name}, are "
            f"pickle-based; add {_SAFE_NAME}. {_PICKLE_HINT}"
        )
    return WeightsSource("local-dir", model_name, None)


@contextlib.contextmanager
def _hf_hub_source(
    model_name: str, repo_id: str, cache_dir: str | None, allow_pickle: bool
) -> Iterator[WeightsSource]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        config = hf_hub_download(repo_id, _CONFIG_NAME, cache_dir=cache_dir)
        try:
            weights = hf_hub_download(repo_id, _SAFE_NAME, cache_dir=cache_dir)
        except EntryNotFoundError:
            if not allow_pickle:
                raise ConfigError(
                    f"{model_name} has no {_SAFE_NAME}; its weights are pickle-based. "
                    f"{_PICKLE_HINT}"
                ) from None
            yield WeightsSource("hf-hub", model_name, None)
            return
    except (EntryNotFoundError, LocalEntryNotFoundError, HfHubHTTPError, OSError,
            ValueError) as exc:
        raise ConfigError(f"could not fetch {model_name}: {exc}") from exc
    # open_clip would fall back to a pickle if the repository changed between its requests:
    # it gets a folder holding only the files checked here.
    with tempfile.TemporaryDirectory(prefix="cotprompt-hf-") as tmp:
        os.symlink(config, Path(tmp) / _CONFIG_NAME)
        os.symlink(weights, Path(tmp) / _SAFE_NAME)
        yield WeightsSource("hf-hub", f"local-dir:{tmp}", None)


@contextlib.contextmanager
def resolve_weights(
    model_name: str,
    pretrained: str | None,
    *,
    allow_pickle: bool = False,
    cache_dir: str | None = None,
) -> Iterator[WeightsSource]:
    """Decide how to build ``model_name`` with ``pretrained`` weights, refusing code-running
    formats unless ``allow_pickle``; the source is valid inside the ``with`` block.

    Raises:
        ConfigError: Unknown model or tag, missing file, a pickle/TorchScript checkpoint without
            ``allow_pickle``, or OpenAI-style weights paired with a mismatching activation.
    """
    if model_name.startswith("hf-hub:"):
        with _hf_hub_source(model_name, model_name.removeprefix("hf-hub:"), cache_dir,
                            allow_pickle) as source:
            yield source
        return
    if model_name.startswith("local-dir:"):
        yield _local_dir_source(model_name, Path(model_name.removeprefix("local-dir:")),
                                allow_pickle)
        return
    if pretrained is None:
        yield WeightsSource("random", model_name, None)
        return
    from open_clip import get_pretrained_cfg

    tag_cfg = get_pretrained_cfg(model_name, pretrained)
    if tag_cfg:
        yield _tag_source(model_name, pretrained, tag_cfg)
        return
    path = Path(pretrained).expanduser()
    if not path.exists() and not any(sep in pretrained for sep in ("/", "\\", ".")):
        from open_clip import list_pretrained_tags_by_model

        known = ", ".join(list_pretrained_tags_by_model(model_name)) or "none"
        raise ConfigError(
            f"pretrained weights {pretrained!r} are neither a known open_clip tag of "
            f"{model_name} (known: {known}) nor an existing file; point `pretrained` at a local "
            "checkpoint file, or use pretrained=None for random weights"
        )
    yield _file_source(model_name, path, allow_pickle)


def load_state_file(model: Any, source: WeightsSource) -> None:
    """Copy the tensors of an OpenAI-format ``source.state_file`` into an open_clip ``model``,
    dropping OpenAI's extra entries (``input_resolution``...).

    A TorchScript archive is read with ``torch.jit.load``, TorchScript's restricted loader: none
    of its code runs (only ``state_dict()`` is read) and Python's pickle is never used. A pickle
    is only read when the caller allowed it, and then with ``weights_only=True``.

    Raises:
        ConfigError: The file's tensors do not fit the model.
    """
    import torch
    from open_clip.model import convert_to_custom_text_state_dict

    path = source.state_file
    if path is None:
        return
    if source.state_format == "torchscript":
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
    elif source.state_format == "safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS}
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        raise ConfigError(f"the tensors of {path} do not fit this architecture: {first}") from exc
