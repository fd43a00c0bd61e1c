"""Backbone ``open_clip``: any open_clip CLIP model, frozen, with a text encoder over embeddings."""

from __future__ import annotations

import contextlib
import difflib
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationInfo, field_validator, model_validator
from torch import Tensor, nn

from cotprompt.backbones.model_names import (
    LOCAL_DIR,
    TINY_DEMO_MODEL,
    TINY_MODEL,
    TINY_MODELS,
    absolute_local_dir,
    absolute_path,
    absolute_pretrained,
    register_model_configs,
)
from cotprompt.backbones.precision import check_precision, matmul_dtype
from cotprompt.backbones.text_encoder import FastTextEncoder, unsupported_reason
from cotprompt.backbones.weights_source import (
    WeightsSource,
    load_state,
    resolve_weights,
)
from cotprompt.config import (
    ComponentConfig,
    UnsafeValue,
    caller_only,
    config_record,
    is_untrusted,
    machine_local,
)
from cotprompt.errors import ConfigError, one_line

__all__ = [
    "LOCAL_DIR",
    "TINY_DEMO_MODEL",
    "TINY_MODEL",
    "TINY_MODELS",
    "OpenCLIPBackbone",
    "OpenCLIPBackboneConfig",
    "absolute_local_dir",
    "absolute_pretrained",
    "normalize",
    "register_model_configs",
]

logger = logging.getLogger(__name__)

_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


@contextlib.contextmanager
def _quiet_open_clip(active: bool) -> Iterator[None]:
    """Silence open_clip's "No pretrained weights loaded" warning for deliberate random init."""

    class _Filter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "No pretrained weights loaded" not in record.getMessage()

    flt = _Filter()
    root = logging.getLogger()
    if active:
        root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


class OpenCLIPBackboneConfig(ComponentConfig):
    """Options of the ``open_clip`` backbone.

    What may come from a loaded file (an artifact, a Hub repository, a training config) and what
    only the caller may set is described in :mod:`cotprompt.backbones.weights_source`.

    Args:
        model_name: An open_clip architecture name (``ViT-B-16``, ``ViT-L-14``, ...), an
            ``hf-hub:org/repo`` id (its ``open_clip_model.safetensors`` is loaded), a
            ``local-dir:/path`` folder, or ``cotprompt-tiny`` (small, random weights, for tests).
        pretrained: open_clip pretrained tag (``openai``, ``laion2b_s34b_b88k``...) or a path to a
            checkpoint file (``.safetensors``; OpenAI's own TorchScript ``ViT-B-16.pt``; other
            pickle-based files need ``allow_pickle``); ``None`` builds random weights from the
            architecture config. OpenAI weights always run with QuickGELU. A relative file path
            (and the folder of a relative ``local-dir:`` model) is made absolute when the options
            are validated: against the folder of the config file it was read from, else the
            working directory; saved artifacts record the absolute path.
        init_seed: Seed for random weights when ``pretrained`` is ``None``, so that the same
            backbone can be rebuilt when a saved pipeline is loaded.
        cache_dir: Where open_clip stores downloaded weights (a place on this machine: ignored
            when an artifact is loaded).
        precision: open_clip precision of the frozen weights: ``fp32``; ``fp16`` / ``bf16``
            (matmul weights in half precision, embeddings and layer norms in fp32);
            ``pure_fp16`` / ``pure_bf16`` (all weights in half precision); ``amp``, ``amp_bf16``,
            ``amp_bfloat16`` (fp32 weights: mixed precision comes from autocast, that is
            ``training.precision``). Every one runs on a CPU too (fp16 where the CPU has the
            kernels, else a one-line error); the tuned parameters stay in fp32.
        allow_pickle: Load pickle-based checkpoints (``torch.save`` files, TorchScript archives
            other than OpenAI's published ones), which can run code. Only the caller may set it,
            in code or with ``--allow-pickle``; a loaded file never can, and it is not saved.
        extra: More keyword arguments for ``open_clip.create_model_and_transforms``, in code
            only: a loaded file that sets them is refused (build the backbone yourself and pass
            it as ``backbone=``).
    """

    model_name: str = "ViT-B-16"
    pretrained: str | None = "openai"
    init_seed: int = Field(default=0, ge=0, lt=2**63)
    cache_dir: str | None = machine_local(None, description="open_clip's download folder")
    precision: Literal["fp32", "fp16", "bf16", "pure_fp16", "pure_bf16", "amp", "amp_bf16",
                       "amp_bfloat16"] = "fp32"
    allow_pickle: bool = caller_only(False, description="load pickle-based checkpoints")
    extra: dict[str, Any] = Field(default_factory=dict, description="passed to create_model")

    @field_validator("pretrained")
    @classmethod
    def _absolute_pretrained(cls, value: str | None) -> str | None:
        # a relative file is made absolute here (against the working directory; a config file
        # resolves it against its own folder first), so the artifact records where it was
        return None if value is None else absolute_pretrained(value, Path.cwd())

    @field_validator("model_name")
    @classmethod
    def _absolute_local_dir(cls, value: str) -> str:
        return absolute_local_dir(value, Path.cwd())

    @classmethod
    def resolve_relative_paths(cls, options: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
        """``options`` as read from a config file in ``base_dir``, with its relative paths
        (a ``pretrained`` file, a ``local-dir:`` folder, ``cache_dir``) resolved against that
        folder, as the file's other paths are; values of the wrong type are left for
        validation to report."""
        options = dict(options)
        pretrained = options.get("pretrained")
        if isinstance(pretrained, str):
            options["pretrained"] = absolute_pretrained(pretrained, base_dir)
        model_name = options.get("model_name")
        if isinstance(model_name, str):
            options["model_name"] = absolute_local_dir(model_name, base_dir)
        cache_dir = options.get("cache_dir")
        if isinstance(cache_dir, str) and cache_dir:
            options["cache_dir"] = str(absolute_path(cache_dir, base_dir))
        return options

    @model_validator(mode="after")
    def _check_untrusted(self, info: ValidationInfo) -> OpenCLIPBackboneConfig:
        if is_untrusted(info) is None:
            return self
        if self.extra:
            raise UnsafeValue(
                f"`extra` ({', '.join(sorted(self.extra))}) passes free-form arguments to "
                "open_clip's loader and is not accepted from a file; build the backbone in code "
                "and pass it as `backbone=`"
            )
        if self.model_name.startswith("hf-hub:") and not _REPO_ID.fullmatch(
            self.model_name.removeprefix("hf-hub:")
        ):
            raise ValueError(f"{self.model_name!r} is not an hf-hub:namespace/name id")
        return self


class OpenCLIPBackbone(nn.Module):
    """A frozen open_clip model exposing what prompt tuners need.

    The text encoder is reached through :meth:`encode_text_embeddings`, which takes token
    *embeddings* so that learnable context vectors can be spliced in. All parameters are frozen.
    """

    name: ClassVar[str] = "open_clip"
    Config: ClassVar[type[OpenCLIPBackboneConfig]] = OpenCLIPBackboneConfig

    def __init__(self, config: OpenCLIPBackboneConfig | None = None) -> None:
        super().__init__()
        import open_clip

        self.config = config or OpenCLIPBackboneConfig()
        register_model_configs()
        cfg = self.config
        self._check_model_name(open_clip)
        with resolve_weights(cfg.model_name, cfg.pretrained, allow_pickle=cfg.allow_pickle,
                             cache_dir=cfg.cache_dir) as source:
            if source.pretrained is None:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(cfg.init_seed)
                    model, _, preprocess = self._create(open_clip, source)
            else:
                model, _, preprocess = self._create(open_clip, source)
            load_state(model, source)
            self._tokenizer = self._get_tokenizer(open_clip, source)
        # open_clip is untyped: its CLIP modules' attributes are typed as Any here
        self.model: Any = model.eval().requires_grad_(False)
        self._preprocess = preprocess
        self.text: Any = self._text_tower(self.model)
        self.embed_dim = int(self.text.text_projection.shape[-1])
        self.text_width = int(self.text.token_embedding.weight.shape[-1])
        self.context_length = int(self.text.positional_embedding.shape[0])
        self._eot_token_id = self._find_eot_token_id()
        self._fast_encoders: dict[bool, FastTextEncoder | None] = {}
        if source.kind in ("local-dir", "hf-hub"):  # an architecture from an untrusted file
            self._check_runs()

    def _check_runs(self) -> None:
        """Encode one blank image and one text, so that an architecture read from a model
        folder or repository that open_clip builds but cannot run fails here, in one line."""
        size = self.model.visual.image_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        try:
            with torch.no_grad():
                image = self.encode_images(torch.zeros(1, 3, height, width))
                text = self.encode_texts(["a photo."])
            if image.shape[-1] != text.shape[-1]:
                raise ValueError(f"image features of size {image.shape[-1]} but text features "
                                 f"of size {text.shape[-1]}")
        except Exception as exc:  # whatever the odd architecture raises
            message = one_line(exc, 300)
            raise ConfigError(
                f"{self.config.model_name} builds a model that does not run as a CLIP "
                f"model: {message}"
            ) from exc

    def _get_tokenizer(self, open_clip: Any, source: WeightsSource) -> Any:
        try:
            return open_clip.get_tokenizer(source.tokenizer, **source.tokenizer_kwargs)
        except Exception as exc:  # transformers / huggingface_hub raise many types
            message = one_line(exc, 300)
            raise ConfigError(
                f"could not load the tokenizer of {self.config.model_name!r}: {message}"
            ) from exc

    def _check_model_name(self, open_clip: Any) -> None:
        name = self.config.model_name
        if name not in open_clip.list_models() and not name.startswith(("hf-hub:", "local-dir:")):
            close = difflib.get_close_matches(name, open_clip.list_models(), n=3)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise ConfigError(
                f"open_clip does not know the architecture {name!r}{hint}. "
                "See open_clip.list_models()."
            )

    def _create(self, open_clip: Any, source: WeightsSource) -> tuple[Any, Any, Any]:
        cfg = self.config
        # no tower weights fetched behind the checked source's back (HF text models, timm)
        options: dict[str, Any] = {"weights_only": True, "pretrained_text": False,
                                   "pretrained_image": False, **cfg.extra}
        if source.quick_gelu:
            options["force_quick_gelu"] = True
        try:
            # open_clip warns on the root logger when asked for random weights on purpose
            with _quiet_open_clip(source.kind in ("random", "openai-file")):
                return open_clip.create_model_and_transforms(
                    source.model_name,
                    pretrained=source.pretrained,
                    precision=cfg.precision,
                    cache_dir=cfg.cache_dir,
                    **options,
                )
        except Exception as exc:  # open_clip and the libraries below it raise many types
            known = open_clip.list_pretrained_tags_by_model(cfg.model_name)
            tags = f" Known tags for {cfg.model_name}: {', '.join(known)}." if known else ""
            message = one_line(exc, 300)
            raise ConfigError(
                f"could not load open_clip model {cfg.model_name!r} with pretrained weights "
                f"{cfg.pretrained!r}: {message}.{tags} Without network access, point "
                "`pretrained` at a local checkpoint file, or use pretrained=None for random "
                "weights."
            ) from exc

    @staticmethod
    def _text_tower(model: nn.Module) -> Any:
        """The module holding token_embedding/transformer/ln_final/text_projection."""
        text = getattr(model, "text", model)
        needed = ("token_embedding", "positional_embedding", "transformer", "ln_final")
        if (
            not all(hasattr(text, attr) for attr in needed)
            or getattr(text, "cls_emb", None) is not None
        ):
            raise ConfigError(
                f"{type(model).__name__} has no CLIP-style causal text transformer; prompt "
                "tuning needs one (open_clip CLIP / CustomTextCLIP with a TextTransformer)"
            )
        pool = getattr(text, "text_pool_type", getattr(text, "pool_type", "argmax"))
        if pool not in ("argmax", "eos"):
            raise ConfigError(
                f"text pooling {pool!r} is not supported: prompt tuning pools at the "
                "end-of-text token (CLIP's 'argmax' pooling)"
            )
        if getattr(text, "text_projection", None) is None:
            raise ConfigError("the text tower has no text_projection")
        return text

    def _find_eot_token_id(self) -> int:
        tokenizer = self._tokenizer
        eot = getattr(tokenizer, "eot_token_id", None)
        if eot is None:  # HF tokenizers
            eot = getattr(getattr(tokenizer, "tokenizer", None), "eos_token_id", None)
        if eot is None:
            raise ConfigError("cannot find the end-of-text token id of the tokenizer")
        return int(eot)

    # -- properties -----------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Where the weights live."""
        return self.text.positional_embedding.device

    @property
    def quick_gelu(self) -> bool:
        """Whether the blocks use QuickGELU (OpenAI's CLIP weights) rather than GELU."""
        from open_clip.transformer import QuickGELU

        return any(isinstance(module, QuickGELU) for module in self.model.modules())

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the text encoder computes in: that of its matmul weights.

        With open_clip's ``fp16`` / ``bf16`` precision the matmul weights are half precision
        while the token and positional embeddings (and layer norms) stay in fp32, so the
        embeddings' dtype is not the one the transformer needs.
        """
        return matmul_dtype(self.text.transformer)

    @property
    def image_dtype(self) -> torch.dtype:
        """The dtype the image encoder takes its pixels in: that of its first matmul (patch
        embedding) weight (open_clip's ``fp16`` / ``bf16`` keep the class and positional
        embeddings in fp32 but the patch convolution in half precision)."""
        return matmul_dtype(self.model.visual)

    @property
    def logit_scale(self) -> Tensor:
        """``exp(logit_scale)``, a scalar tensor."""
        return self.model.logit_scale.exp().reshape(())

    @cached_property
    def causal_mask(self) -> Tensor:
        """The additive causal mask ``[context_length, context_length]`` of the text encoder."""
        return torch.full((self.context_length,) * 2, float("-inf")).triu_(1)

    @property
    def text_projection(self) -> Tensor:
        """``[W, E]`` projection from the text width to the joint space."""
        proj = self.text.text_projection
        return proj.weight.t() if isinstance(proj, nn.Linear) else proj

    # -- images ---------------------------------------------------------------------------

    def image_transform(self, train: bool = False) -> Callable[[Any], Tensor]:
        """open_clip's evaluation preprocessing (resize, centre crop, normalise); with
        ``train=True`` CoOp's augmentation (random resized crop and horizontal flip).

        The training transform draws from torch's global generator, as torchvision's do; the
        trainer seeds it per sample from (seed, epoch, sample index), see
        :mod:`cotprompt.training.augment`. Both transforms can be pickled (DataLoader workers
        under the ``spawn`` / ``forkserver`` start methods).
        """
        if not train:
            return self._preprocess
        import functools

        from PIL import Image
        from torchvision import transforms as T

        size = self.model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        normalize = next(t for t in self._preprocess.transforms if isinstance(t, T.Normalize))
        return T.Compose(
            [
                T.RandomResizedCrop(
                    size, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC
                ),
                T.RandomHorizontalFlip(),
                T.Lambda(functools.partial(Image.Image.convert, mode="RGB")),
                T.ToTensor(),
                normalize,
            ]
        )

    def encode_images(self, pixels: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, E]``.

        Pixels are cast to the dtype of the patch embedding (not of the first parameter: with
        open_clip's ``fp16`` / ``bf16`` the class embedding stays in fp32).
        """
        dtype = self.image_dtype
        self._check_precision(dtype)
        return self.model.encode_image(pixels.to(self.device, dtype))

    def _check_precision(self, dtype: torch.dtype) -> None:
        """Refuse, in one line, a half precision that this device's kernels lack (some CPU
        builds have no fp16 convolution or matmul) instead of failing deep inside a forward."""
        check_precision(self.device, dtype, self.config.precision, _SUPPORTED)

    # -- text -----------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """Texts -> ``[N, context_length]`` token ids."""
        return self._tokenizer(list(texts), context_length=self.context_length)

    def count_tokens(self, text: str) -> int:
        """Number of tokens in ``text`` without start and end tokens, before any truncation."""
        tokenizer = self._tokenizer
        if hasattr(tokenizer, "encode"):  # open_clip's SimpleTokenizer (CLIP BPE)
            return len(tokenizer.encode(text))
        hf = getattr(tokenizer, "tokenizer", None)
        if hf is not None:
            return len(hf(text, add_special_tokens=False)["input_ids"])
        tokens = self.tokenize([text])[0]
        return int(self.end_of_text_index(tokens[None])[0]) - 1

    def end_of_text_index(self, tokens: Tensor) -> Tensor:
        """``[N]`` position of the first end-of-text token in each row."""
        is_eot = tokens == self._eot_token_id
        if not bool(is_eot.any(-1).all()):
            raise ConfigError("a text does not fit in the context length (no end-of-text token)")
        return is_eot.int().argmax(-1)

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """``[N, L]`` ids -> ``[N, L, W]`` embeddings."""
        return self.text.token_embedding(tokens.to(self.device)).to(self.dtype)

    def encode_text_embeddings(self, embeddings: Tensor, eot_index: Tensor) -> Tensor:
        """``[N, L, W]`` prompt embeddings -> ``[N, E]`` features (CLIP's text forward).

        ``L`` may be shorter than the context length: the transformer is causal and features are
        pooled at ``eot_index``, so positions after the last end-of-text token change nothing.
        """
        self._check_precision(embeddings.dtype)
        n, length, _ = embeddings.shape
        x = embeddings + self.text.positional_embedding[:length].to(embeddings.dtype)
        mask = self.causal_mask[:length, :length].to(device=x.device, dtype=x.dtype)
        x = self.text.transformer(x, attn_mask=mask)
        x = self.text.ln_final(x)
        pooled = x[torch.arange(n, device=x.device), eot_index.to(x.device)]
        proj = self.text.text_projection
        if isinstance(proj, nn.Linear):  # keeps its bias (open_clip's proj_bias=True)
            return proj(pooled)
        return pooled @ proj.to(pooled.dtype)

    def fast_text_encoder(self, compile: bool = False) -> FastTextEncoder | None:
        """The fast text-encoder path over this backbone's text tower (same features as
        :meth:`encode_text_embeddings`, less work; see :mod:`cotprompt.backbones.text_encoder`),
        or ``None`` when the tower's blocks are not open_clip residual attention blocks."""
        self._check_precision(self.dtype)
        if compile not in self._fast_encoders:
            reason = unsupported_reason(self.text)
            if reason is not None:
                logger.info("fast text encoder unavailable (%s); using the plain path", reason)
                self._fast_encoders[compile] = None
            else:
                self._fast_encoders[compile] = FastTextEncoder(self.text, compile=compile)
        return self._fast_encoders[compile]

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        """Plain texts -> ``[N, E]`` features, truncated at the longest end-of-text token."""
        outputs = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenize(texts[start : start + batch_size]).to(self.device)
            eot = self.end_of_text_index(tokens)
            length = int(eot.max()) + 1
            outputs.append(self.encode_text_embeddings(self.embed_tokens(tokens[:, :length]), eot))
        return torch.cat(outputs)

    def spec(self) -> dict[str, Any]:
        """Backbone name and config, enough to rebuild it."""
        return {"name": self.name, "config": config_record(self.config)}

    def train(self, mode: bool = True) -> OpenCLIPBackbone:
        """The backbone stays in eval mode: it is frozen."""
        return super().train(False)


_SUPPORTED: set[tuple[str, torch.dtype]] = set()  # (device type, dtype) pairs that ran


def normalize(x: Tensor) -> Tensor:
    """L2-normalise the last dimension."""
    return F.normalize(x, dim=-1)
