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
OpenAI's published TorchScript archive     its tensors only (identified by SHA-256)
an OpenAI-format state dict (safetensors)  its tensors, OpenAI's extra entries dropped
``hf-hub:org/name`` model                  its ``open_clip_model.safetensors`` only
``local-dir:/path`` model                  when the file open_clip picks is safetensors
anything else (``.pt``, ``.bin``...)       only with ``allow_pickle=True``
========================================  =========================================

The ``open_clip_config.json`` of an ``hf-hub:`` or ``local-dir:`` model is untrusted too: a
Hugging Face text tower (``hf_model_name``, loaded by transformers, possibly from a pickle) and
any ``trust_remote_code`` are refused, and a Hugging Face tokenizer it names is loaded with
``trust_remote_code=False``.

The same step decides the activation: OpenAI's CLIP was trained with QuickGELU, so OpenAI
weights (the ``openai`` tag, a TorchScript archive, or a state dict carrying OpenAI's
``input_resolution`` entry) always build QuickGELU blocks, under ``ViT-B-16`` as under
``ViT-B-16-quickgelu`` (open_clip alone builds GELU under ``ViT-B-16``, 1.5 % off in text
features).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from cotprompt.errors import ConfigError, one_line

logger = logging.getLogger(__name__)

Format = Literal["safetensors", "numpy", "torchscript", "pickle"]

#: Keys OpenAI's checkpoints carry besides the weights (open_clip drops them).
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
_SAFE_NAME = "open_clip_model.safetensors"
_CONFIG_NAME = "open_clip_config.json"
_PICKLE_HINT = (
    "if you trust the file, opt in yourself: allow_pickle=True in code (CoTPipeline.for_method, "
    "from_pretrained, from_config, or backbone_config={'allow_pickle': True}) or --allow-pickle "
    "on the command line"
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
        state: Tensors (read once, here) that :func:`load_state` copies into the built model:
            OpenAI-format files, whose extra entries open_clip refuses or which it would unpickle.
        origin: Where ``state`` was read from (named in errors).
        tokenizer_name: The name to give ``open_clip.get_tokenizer``.
        tokenizer_kwargs: Its keyword arguments (``trust_remote_code=False`` for a Hugging Face
            tokenizer named by an untrusted model config).
    """

    kind: str
    model_name: str
    pretrained: str | None
    quick_gelu: bool = False
    state: Mapping[str, Any] | None = None
    origin: str | None = None
    tokenizer_name: str | None = None
    tokenizer_kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def tokenizer(self) -> str:
        """The name to give ``open_clip.get_tokenizer``."""
        return self.tokenizer_name or self.model_name


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


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _safetensors_state(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(_read_bytes(path))
    except (SafetensorError, ValueError) as exc:
        raise ConfigError(f"{path} is not a valid safetensors file: {exc}") from exc


def _torchscript_state(data: bytes, path: Path) -> dict[str, Any]:
    """The tensors of a TorchScript archive, read with TorchScript's own loader (Python's pickle
    is never used; none of the archive's methods is called)."""
    import io

    import torch

    try:
        return dict(torch.jit.load(io.BytesIO(data), map_location="cpu").state_dict())
    except Exception as exc:  # torch raises RuntimeError, or anything from a corrupt archive
        raise ConfigError(f"cannot read the TorchScript archive {path}: "
                          f"{one_line(exc, 300)}") from exc


def _pickle_state(path: Path) -> dict[str, Any] | None:
    """The state dict of a pickle-based checkpoint; only called once the caller allowed pickle,
    and even then with ``weights_only=True``."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types
        raise ConfigError(f"cannot read {path} with torch.load(weights_only=True): "
                          f"{one_line(exc, 300)}") from exc
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    return checkpoint if isinstance(checkpoint, dict) else None


def _is_openai_state(keys: Iterable[str]) -> bool:
    return any(str(key).removeprefix("module.") == "input_resolution" for key in keys)


def model_quick_gelu(model_name: str) -> bool:
    """Whether open_clip's config of ``model_name`` builds QuickGELU blocks."""
    from open_clip import get_model_config

    return bool((get_model_config(model_name) or {}).get("quick_gelu", False))


def _tag_source(model_name: str, tag: str, tag_cfg: dict[str, Any]) -> WeightsSource:
    tag_quick = bool(tag_cfg.get("quick_gelu", False))
    if model_quick_gelu(model_name) and not tag_quick:
        plain = model_name.removesuffix("-quickgelu")
        raise ConfigError(
            f"the {tag!r} weights of {model_name} were trained with GELU, but {model_name} "
            f"builds QuickGELU blocks; use model_name={plain!r}"
        )
    return WeightsSource("tag", model_name, tag, quick_gelu=tag_quick)


def _file_source(model_name: str, path: Path, allow_pickle: bool) -> WeightsSource:
    if not path.is_file():
        raise ConfigError(f"pretrained weights file {path} does not exist")
    try:
        fmt = sniff_format(path)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if path.suffix in (".npz", ".npy") or fmt == "numpy":
        raise ConfigError(
            f"{path}: numpy (big_vision) checkpoints are for SigLIP models, whose text tower "
            "does not pool at an end-of-text token; prompt tuning needs a CLIP-style one"
        )
    if fmt == "safetensors":
        state = _safetensors_state(path)
        if _is_openai_state(state):
            return _openai_state(model_name, path, state)
        if not str(path).endswith(".safetensors"):  # open_clip picks its loader by this name
            raise ConfigError(
                f"{path} holds safetensors data but its name does not end in .safetensors, "
                "which open_clip needs to read it as such; rename it"
            )
        return WeightsSource("file", model_name, str(path))
    if fmt == "torchscript":
        data = _read_bytes(path)  # hashed and loaded from the same bytes
        openai = hashlib.sha256(data).hexdigest() in openai_sha256()
        if not (openai or allow_pickle):
            raise ConfigError(
                f"{path} is a TorchScript archive that is not one of OpenAI's published CLIP "
                f"checkpoints, and loading it runs TorchScript; {_PICKLE_HINT}"
            )
        state = _torchscript_state(data, path)
        if openai or _is_openai_state(state):
            return _openai_state(model_name, path, state)
        return WeightsSource("file", model_name, None, state=state, origin=str(path))
    if not allow_pickle:
        raise ConfigError(
            f"{path} is a pickle-based checkpoint (torch.save); loading it can run code. "
            f"save its state dict with safetensors.torch.save_file as a .safetensors file, or, "
            f"{_PICKLE_HINT}"
        )
    pickled = _pickle_state(path)
    if pickled is not None and _is_openai_state(pickled):
        return _openai_state(model_name, path, pickled)
    return WeightsSource("file", model_name, str(path))


def _openai_state(model_name: str, path: Path, state: Mapping[str, Any]) -> WeightsSource:
    """OpenAI's format (its TorchScript archives, or a state dict with its extra entries):
    built with QuickGELU, tensors copied in by :func:`load_state`."""
    return WeightsSource("openai-file", model_name, None, quick_gelu=True, state=state,
                         origin=str(path))


def _truthy_remote_code(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any((key == "trust_remote_code" and item not in (False, None))
                   or _truthy_remote_code(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_truthy_remote_code(item) for item in value)
    return False


def _checked_model_config(model_name: str, path: Path) -> dict[str, Any]:
    """The ``model_cfg`` of an ``open_clip_config.json`` from a ``local-dir:`` folder or an
    ``hf-hub:`` repository, refused when it would make open_clip load code or pickles."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"{model_name}: cannot read {path.name}: {exc}") from exc
    model_cfg = data.get("model_cfg") if isinstance(data, dict) else None
    if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("text_cfg", {}), dict):
        raise ConfigError(f"{model_name}: {path.name} has no `model_cfg` mapping")
    if _truthy_remote_code(data):
        raise ConfigError(f"{model_name}: {path.name} asks for trust_remote_code; cotprompt "
                          "never runs code from a model repository")
    text_cfg = model_cfg.get("text_cfg", {})
    if text_cfg.get("hf_model_name"):
        raise ConfigError(
            f"{model_name}: a Hugging Face text tower ({text_cfg['hf_model_name']!r}) has no "
            "CLIP-style causal text transformer for prompt tuning (and would be loaded by "
            "transformers, possibly from a pickle)"
        )
    return model_cfg


def _tokenizer_kwargs(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    text_cfg = model_cfg.get("text_cfg", {})
    return {"trust_remote_code": False} if text_cfg.get("hf_tokenizer_name") else {}


def _local_dir_source(model_name: str, folder: Path, allow_pickle: bool) -> WeightsSource:
    if not folder.is_dir():
        raise ConfigError(f"{model_name}: folder {folder} does not exist")
    model_cfg = _checked_model_config(model_name, folder / _CONFIG_NAME)
    chosen = _open_clip_pick(folder)
    if chosen is None:
        logger.warning("%s holds no weights: the model gets random weights", model_name)
    elif not allow_pickle:
        try:
            fmt = sniff_format(chosen)
        except OSError as exc:
            raise ConfigError(f"cannot read {chosen}: {exc.strerror or exc}") from exc
        if chosen.suffix != ".safetensors" or fmt != "safetensors":
            raise ConfigError(
                f"{model_name}: the weights open_clip would load, {chosen.name}, are not "
                f"safetensors (pickle-based: loading them can run code); keep only "
                f"{_SAFE_NAME} there; or, {_PICKLE_HINT}"
            )
    return WeightsSource("local-dir", model_name, None,
                         tokenizer_kwargs=_tokenizer_kwargs(model_cfg))


def _open_clip_pick(folder: Path) -> Path | None:
    """The checkpoint open_clip loads from a ``local-dir:`` folder: its own choice where its
    (private) function is there, else the same ranking (open_clip 3.x)."""
    from open_clip import factory

    find = getattr(factory, "_find_checkpoint_in_dir", None)
    if find is not None:
        chosen = find(folder)
        return Path(chosen) if chosen else None
    candidates = sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin"),
                         *folder.glob("*.pth")])
    if not candidates:
        return None
    preferred = ["open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                 "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth",
                 "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth"]
    ranked = [c for c in candidates if c.name in preferred]
    if ranked:
        return min(ranked, key=lambda c: preferred.index(c.name))
    return sorted(candidates, key=lambda c: c.suffix != ".safetensors")[0]


def _hub_file(model_name: str, repo_id: str, name: str, cache_dir: str | None) -> Path | None:
    """A file of ``repo_id`` (downloaded or cached), ``None`` when the repository lacks it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, name, cache_dir=cache_dir))
    except EntryNotFoundError:
        return None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        raise ConfigError(f"could not fetch {name} of {model_name}: {one_line(exc, 300)}") from exc


@contextlib.contextmanager
def _hf_hub_source(
    model_name: str, repo_id: str, cache_dir: str | None, allow_pickle: bool
) -> Iterator[WeightsSource]:
    config = _hub_file(model_name, repo_id, _CONFIG_NAME, cache_dir)
    if config is None:
        raise ConfigError(f"{model_name} has no {_CONFIG_NAME}: it is not an open_clip model")
    model_cfg = _checked_model_config(model_name, config)
    tokenizer_kwargs = _tokenizer_kwargs(model_cfg)
    # an HF tokenizer's files live in the repository; the CLIP tokenizer needs only the config
    tokenizer = model_name if tokenizer_kwargs else None
    weights = _hub_file(model_name, repo_id, _SAFE_NAME, cache_dir)
    if weights is None:
        if not allow_pickle:
            raise ConfigError(
                f"{model_name} has no {_SAFE_NAME}: its weights are pickle-based; {_PICKLE_HINT}"
            )
        yield WeightsSource("hf-hub", model_name, None, tokenizer_kwargs=tokenizer_kwargs)
        return
    # open_clip would fall back to a pickle if the repository changed between its requests:
    # it gets a folder holding only the files checked here.
    with tempfile.TemporaryDirectory(prefix="cotprompt-hf-") as tmp:
        os.symlink(config, Path(tmp) / _CONFIG_NAME)
        os.symlink(weights, Path(tmp) / _SAFE_NAME)
        yield WeightsSource("hf-hub", f"local-dir:{tmp}", None, tokenizer_name=tokenizer,
                            tokenizer_kwargs=tokenizer_kwargs)


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


def load_state(model: Any, source: WeightsSource) -> None:
    """Copy ``source.state`` (tensors read by :func:`resolve_weights`) into an open_clip
    ``model``, dropping OpenAI's extra entries (``input_resolution``...).

    Raises:
        ConfigError: The tensors do not fit the model.
    """
    from open_clip.model import convert_to_custom_text_state_dict

    if source.state is None:
        return
    state = {str(k).removeprefix("module."): v for k, v in source.state.items()}
    state = {k: v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS}
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(
            f"the tensors of {source.origin} do not fit this architecture: {one_line(exc, 300)}"
        ) from exc
