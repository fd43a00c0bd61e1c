"""Learnable context prompts for every step of a chain: the engine behind coop, cocoop and cotpt.

For step k and text t of label c, the prompt fed to the frozen text encoder is
``[start] ctx_k(+ shift_k(x)) [text t]``, where ``ctx_k`` is ``[n_ctx, W]`` (unified) or
``[C, n_ctx, W]`` (class-specific) and ``shift_k(x)`` is the step's meta-net output for image x
(image-conditioned tuners only). Step features are ensembled over a cell's texts and
L2-normalised, giving ``[B or 1, K, C, E]``.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from cotprompt.backbones.base import Backbone
from cotprompt.config import ComponentConfig
from cotprompt.errors import ConfigError
from cotprompt.tuners.meta_net import ChainLink, MetaNet
from cotprompt.tuners.prompt_tokens import ClassTokenPosition, PromptTokens, build_prompt_tokens
from cotprompt.types import PromptChain

logger = logging.getLogger(__name__)

DEFAULT_N_CTX = 16


class ContextTunerConfig(ComponentConfig):
    """Options shared by the context-prompt tuners.

    Args:
        n_ctx: Number of learnable context vectors; ``None`` takes the token count of
            ``ctx_init``, or 16 without one.
        ctx_init: Phrase whose token embeddings initialise the context (``"a photo of a"``);
            ``None`` draws them from N(0, ``init_std``^2).
        init_std: Standard deviation of the random initialisation.
        class_specific: One context per label (CoOp's CSC) instead of one shared by all labels;
            such prompts cannot be applied to other labels.
        class_token_position: ``end``, ``middle`` or ``front`` (CoOp).
        meta_net: Add an image-conditioned shift from a meta-net to every context vector (CoCoOp).
        meta_net_reduction: Hidden size of the meta-net is ``E // meta_net_reduction``.
        chain: ``none``: each step's meta-net sees the image feature only; ``additive``: step k's
            meta-net input is the image feature plus a learned, zero-initialised projection of
            step k-1's shift (Meta-Nets Chaining; a reconstruction of the CoT-PT paper).
        truncate: Run the text encoder only up to the longest end-of-text position (exact).
        max_sequences_per_call: Upper bound on sequences per text-encoder call (memory budget);
            ``None`` encodes everything in one call.
    """

    n_ctx: int | None = Field(default=None, ge=0)
    ctx_init: str | None = None
    init_std: float = Field(default=0.02, gt=0)
    class_specific: bool = False
    class_token_position: ClassTokenPosition = "end"
    meta_net: bool = False
    meta_net_reduction: int = Field(default=16, ge=1)
    chain: Literal["none", "additive"] = "none"
    truncate: bool = True
    max_sequences_per_call: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ContextTunerConfig:
        if self.chain != "none" and not self.meta_net:
            raise ValueError("chain='additive' links meta-nets: it needs meta_net=True")
        if self.ctx_init is not None and not self.ctx_init.strip():
            raise ValueError("ctx_init must be a non-empty phrase or null")
        return self


class ContextPromptTuner(nn.Module):
    """Learnable (optionally image-conditioned, chained) context for each step of a chain.

    Parameters are created on the first :meth:`bind`; later binds to another label set reuse
    them when the context is unified.
    """

    name = "context"
    Config: type[ContextTunerConfig] = ContextTunerConfig

    def __init__(self, config: ContextTunerConfig | None = None) -> None:
        super().__init__()
        self.config = config or self.Config()
        self.ctx: nn.ParameterList | None = None
        self.meta_nets: nn.ModuleList | None = None
        self.chain_links: nn.ModuleList | None = None
        self.tokens: PromptTokens | None = None
        self.bound_labels: tuple[str, ...] | None = None
        self.n_ctx: int | None = None

    # -- protocol ---------------------------------------------------------------------------

    @property
    def image_conditioned(self) -> bool:
        """True when a meta-net makes the prompts depend on the image."""
        return self.config.meta_net

    @property
    def tunes_image_encoder(self) -> bool:
        """Context tuners leave the image encoder frozen."""
        return False

    @property
    def num_steps(self) -> int | None:
        """K, once bound."""
        return None if self.ctx is None else len(self.ctx)

    def bind(self, backbone: Backbone, chain: PromptChain) -> None:
        """Tokenise ``chain`` and create the parameters on first use.

        Raises:
            ConfigError: the chain's step count differs from the trained one, or class-specific
                context is applied to a different label list.
        """
        cfg = self.config
        if self.ctx is None:
            self._create_parameters(backbone, chain)
        else:
            if chain.num_steps != len(self.ctx):
                raise ConfigError(
                    f"the tuner was trained with {len(self.ctx)} chain steps but the generator "
                    f"produced {chain.num_steps}"
                )
            if cfg.class_specific and chain.labels != self.bound_labels:
                raise ConfigError(
                    "class-specific context (class_specific=true) was learned for "
                    f"{len(self.bound_labels or ())} specific labels and cannot be applied to a "
                    "different label list; use a tuner with unified context for new classes"
                )
        assert self.n_ctx is not None
        self.tokens = build_prompt_tokens(
            backbone, chain, self.n_ctx, cfg.class_token_position, truncate=cfg.truncate
        )
        self.bound_labels = chain.labels

    def encode_images(self, backbone: Backbone, pixels: Tensor) -> Tensor:
        """Frozen image features ``[B, E]``."""
        with torch.no_grad():
            return backbone.encode_images(pixels)

    def encode_text(self, backbone: Backbone, image_features: Tensor | None) -> Tensor:
        """Step text features ``[B or 1, K, C, E]``, L2-normalised."""
        if self.tokens is None or self.ctx is None:
            raise ConfigError("the tuner is not bound to a prompt chain; call bind() first")
        tokens = self.tokens
        shifts = self._context_shifts(image_features)
        ctx = self._context_per_text(tokens, shifts, backbone.dtype)  # [B', N, n_ctx, W]
        prompts = self._assemble(tokens, ctx)  # [B', N, L, W]
        batch, num_texts = prompts.shape[:2]
        flat = prompts.reshape(batch * num_texts, *prompts.shape[2:])
        eot = tokens.eot_index.repeat(batch)
        features = self._encode(backbone, flat, eot).reshape(batch, num_texts, -1)
        return self._ensemble(tokens, F.normalize(features.float(), dim=-1))

    # -- parameters -------------------------------------------------------------------------

    def _create_parameters(self, backbone: Backbone, chain: PromptChain) -> None:
        cfg = self.config
        width = backbone.text_width
        init = None
        if cfg.ctx_init is not None:
            phrase_tokens = backbone.tokenize([cfg.ctx_init])
            phrase_len = int(backbone.end_of_text_index(phrase_tokens)[0]) - 1
            if cfg.n_ctx is not None and cfg.n_ctx != phrase_len:
                raise ConfigError(
                    f"ctx_init {cfg.ctx_init!r} is {phrase_len} tokens but n_ctx={cfg.n_ctx}; "
                    "leave n_ctx unset to take the phrase's length"
                )
            with torch.no_grad():
                init = backbone.embed_tokens(phrase_tokens)[0, 1 : 1 + phrase_len].float().cpu()
            n_ctx = phrase_len
        else:
            n_ctx = DEFAULT_N_CTX if cfg.n_ctx is None else cfg.n_ctx
        shape = (chain.num_labels, n_ctx, width) if cfg.class_specific else (n_ctx, width)
        contexts = []
        for _ in range(chain.num_steps):
            if init is not None:
                value = init.expand(shape).clone()
            else:
                value = torch.empty(shape).normal_(std=cfg.init_std)
            contexts.append(nn.Parameter(value))
        self.n_ctx = n_ctx
        self.ctx = nn.ParameterList(contexts)
        if cfg.meta_net:
            self.meta_nets = nn.ModuleList(
                MetaNet(backbone.embed_dim, width, cfg.meta_net_reduction)
                for _ in range(chain.num_steps)
            )
            if cfg.chain == "additive":
                self.chain_links = nn.ModuleList(
                    ChainLink(width, backbone.embed_dim) for _ in range(chain.num_steps - 1)
                )
        self.to(backbone.device)

    def _context_shifts(self, image_features: Tensor | None) -> list[Tensor] | None:
        """Per-step ``[B, W]`` shifts from the (chained) meta-nets, or ``None``."""
        if self.meta_nets is None:
            return None
        if image_features is None:
            raise ConfigError("this tuner is image-conditioned: encode_text needs image features")
        dtype = next(self.meta_nets.parameters()).dtype
        x = image_features.to(dtype)
        shifts: list[Tensor] = []
        for k, meta_net in enumerate(self.meta_nets):
            step_input = (
                x if k == 0 or self.chain_links is None else self.chain_links[k - 1](x, shifts[-1])
            )
            shifts.append(meta_net(step_input))
        return shifts

    def _context_per_text(
        self, tokens: PromptTokens, shifts: list[Tensor] | None, dtype: torch.dtype
    ) -> Tensor:
        """``[B or 1, N, n_ctx, W]`` context of every text."""
        assert self.ctx is not None
        per_step = []
        for k, ctx in enumerate(self.ctx):
            if self.config.class_specific:
                # [C, n_ctx, W] -> one entry per text of step k, by label
                texts_of_step = tokens.label_index[tokens.step_index == k]
                value = ctx[texts_of_step]  # [N_k, n_ctx, W]
            else:
                n_k = int((tokens.step_index == k).sum())
                value = ctx.unsqueeze(0).expand(n_k, -1, -1)
            value = value.unsqueeze(0)  # [1, N_k, n_ctx, W]
            if shifts is not None:
                value = value + shifts[k][:, None, None, :]  # [B, N_k, n_ctx, W]
            per_step.append(value)
        if len(per_step) == 1:
            return per_step[0].to(dtype)
        batch = max(v.shape[0] for v in per_step)
        return torch.cat([v.expand(batch, -1, -1, -1) for v in per_step], dim=1).to(dtype)

    @staticmethod
    def _assemble(tokens: PromptTokens, ctx: Tensor) -> Tensor:
        """``[B', N, L, W]`` prompt embeddings: prefix, context, suffix (then reordered)."""
        batch = ctx.shape[0]
        prefix = tokens.prefix.unsqueeze(0).expand(batch, -1, -1, -1)
        suffix = tokens.suffix.unsqueeze(0).expand(batch, -1, -1, -1)
        prompts = torch.cat([prefix, ctx, suffix], dim=2)
        if tokens.order is not None:
            index = tokens.order[None, :, :, None].expand(batch, -1, -1, prompts.shape[-1])
            prompts = prompts.gather(2, index)
        return prompts

    def _encode(self, backbone: Backbone, prompts: Tensor, eot: Tensor) -> Tensor:
        """Text-encoder features ``[N', E]``, in chunks of ``max_sequences_per_call``."""
        chunk = self.config.max_sequences_per_call or prompts.shape[0]
        if chunk >= prompts.shape[0]:
            return backbone.encode_text_embeddings(prompts, eot)
        parts = [
            backbone.encode_text_embeddings(prompts[i : i + chunk], eot[i : i + chunk])
            for i in range(0, prompts.shape[0], chunk)
        ]
        return torch.cat(parts)

    @staticmethod
    def _ensemble(tokens: PromptTokens, features: Tensor) -> Tensor:
        """``[B', N, E]`` normalised features -> ``[B', K, C, E]`` (cell means, renormalised)."""
        batch, _, dim = features.shape
        cells = tokens.num_steps * tokens.num_labels
        if not tokens.one_text_per_cell:
            summed = features.new_zeros(batch, cells, dim).index_add(
                1, tokens.group_index, features
            )
            features = F.normalize(
                summed / tokens.group_count[None, :, None].to(features.dtype), dim=-1
            )
        return features.reshape(batch, tokens.num_steps, tokens.num_labels, dim)
