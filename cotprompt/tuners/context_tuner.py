"""Learnable context prompts for every step of a chain: the engine behind coop, cocoop and cotpt.

For step k and text t of label c, the prompt fed to the frozen text encoder is
``[start] ctx_k(+ shift_k(x)) [text t]``, where ``ctx_k`` is ``[n_ctx, W]`` (unified) or
``[C, n_ctx, W]`` (class-specific) and ``shift_k(x)`` is the step's meta-net output for image x
(image-conditioned tuners only). Step features are ensembled over a cell's texts and
L2-normalised, giving ``[B or 1, K, C, E]``.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from cotprompt.backbones.base import Backbone
from cotprompt.backbones.encoder_plan import resolve_budget
from cotprompt.backbones.text_encoder import FastTextEncoder, autocast_dtype
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
        max_sequences_per_call: Upper bound on sequences per text-encoder call; ``None``: as
            many as ``memory_budget_mb`` allows (fast path) or all in one call (plain path).
        text_encoder: ``fast`` (default): the exact reductions of
            :mod:`cotprompt.backbones.text_encoder` (shared-prefix caching when the context is
            unified and the class token is at the end, length buckets, causal attention kernels,
            fused kernels, memory-budgeted chunks); ``plain``: the reference forward through the
            backbone's ``encode_text_embeddings``. Both give the same features (up to float
            rounding); backbones without a fast path use ``plain``.
        memory_budget_mb: Activation memory for the text encoder (fast path). When a training
            step needs more, prompts are encoded in chunks that are recomputed in the backward
            pass (exact, about a third more compute). ``None``: half the free memory of the
            device at each call.
        compile: Run the fast path's chunks through ``torch.compile`` (first steps are slow
            while it compiles).
    """

    n_ctx: int | None = Field(default=None, ge=0, le=512)
    ctx_init: str | None = None
    init_std: float = Field(default=0.02, gt=0)
    class_specific: bool = False
    class_token_position: ClassTokenPosition = "end"
    meta_net: bool = False
    meta_net_reduction: int = Field(default=16, ge=1)
    chain: Literal["none", "additive"] = "none"
    truncate: bool = True
    max_sequences_per_call: int | None = Field(default=None, ge=1)
    text_encoder: Literal["fast", "plain"] = "fast"
    memory_budget_mb: float | None = Field(default=None, gt=0)
    compile: bool = False

    @model_validator(mode="after")
    def _check(self) -> ContextTunerConfig:
        if self.chain != "none" and not self.meta_net:
            raise ValueError("chain='additive' links meta-nets: it needs meta_net=True")
        if self.ctx_init is not None and not self.ctx_init.strip():
            raise ValueError("ctx_init must be a non-empty phrase or null")
        return self


def _parameters(backbone: Backbone) -> list[Tensor]:
    """The backbone's tensors, where it is an ``nn.Module`` (the protocol does not require it)."""
    return list(backbone.parameters()) if isinstance(backbone, nn.Module) else []


class ContextPromptTuner(nn.Module):
    """Learnable (optionally image-conditioned, chained) context for each step of a chain.

    Parameters are created on the first :meth:`bind`; later binds to another label set reuse
    them when the context is unified.
    """

    name: ClassVar[str] = "context"
    Config: ClassVar[type[ContextTunerConfig]] = ContextTunerConfig

    def __init__(self, config: ContextTunerConfig | None = None) -> None:
        super().__init__()
        self.config = config or self.Config()
        self.ctx: nn.ParameterList | None = None
        self.meta_nets: nn.ModuleList | None = None
        self.chain_links: nn.ModuleList | None = None
        self.tokens: PromptTokens | None = None
        self.bound_labels: tuple[str, ...] | None = None
        self.n_ctx: int | None = None
        self._bind_count = 0
        self._text_cache: tuple[tuple, Tensor] | None = None

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
            DataError: labels whose prompts the tokenizer cannot tell apart.
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
            backbone, chain, self.n_ctx, cfg.class_token_position, truncate=cfg.truncate,
            distinct_steps=not cfg.class_specific,
        )
        self.bound_labels = chain.labels
        self._bind_count += 1
        self._text_cache = None

    def encode_images(self, backbone: Backbone, pixels: Tensor) -> Tensor:
        """Frozen image features ``[B, E]``."""
        with torch.no_grad():
            return backbone.encode_images(pixels)

    def encode_text(self, backbone: Backbone, image_features: Tensor | None) -> Tensor:
        """Step text features ``[B or 1, K, C, E]``, L2-normalised."""
        if self.tokens is None or self.ctx is None:
            raise ConfigError("the tuner is not bound to a prompt chain; call bind() first")
        key = self._text_cache_key(backbone)
        if key is not None and self._text_cache is not None and self._text_cache[0] == key:
            return self._text_cache[1]
        tokens = self.tokens
        shifts = self.context_shifts(image_features)
        encoder = self._fast_encoder(backbone)
        if encoder is not None and self.shares_prefix:
            features = self._encode_shared_prefix(encoder, backbone, tokens, shifts)
        else:
            ctx = self._context_per_text(tokens, shifts, backbone.dtype)  # [B', N, n_ctx, W]
            prompts = self._assemble(tokens, ctx)  # [B', N, L, W]
            batch, num_texts = prompts.shape[:2]
            flat = prompts.reshape(batch * num_texts, *prompts.shape[2:])
            eot = tokens.eot_index.repeat(batch)
            if encoder is not None:
                features = encoder.encode(
                    flat,
                    eot,
                    budget_bytes=resolve_budget(self.config.memory_budget_mb, flat.device),
                    max_rows=self.config.max_sequences_per_call,
                )
            else:
                features = self._encode(backbone, flat, eot)
            features = features.reshape(batch, num_texts, -1)
        text = self._ensemble(tokens, F.normalize(features.float(), dim=-1))
        if key is not None:
            self._text_cache = (key, text)
        return text

    # -- fast path --------------------------------------------------------------------------

    @property
    def shares_prefix(self) -> bool:
        """Whether the start token and context are one prefix shared by all texts of a step
        (unified context, class token at the end): the fast path then encodes it once."""
        return (
            not self.config.class_specific and self.tokens is not None and self.tokens.order is None
        )

    def _fast_encoder(self, backbone: Backbone) -> FastTextEncoder | None:
        if self.config.text_encoder != "fast":
            return None
        factory = getattr(backbone, "fast_text_encoder", None)
        return None if factory is None else factory(compile=self.config.compile)

    def _encode_shared_prefix(
        self,
        encoder: FastTextEncoder,
        backbone: Backbone,
        tokens: PromptTokens,
        shifts: list[Tensor] | None,
    ) -> Tensor:
        """``[B', N, E]`` features: one prefix per (image, step), one suffix per text.

        A step's prefix is the start token, its context and the text tokens that all its texts
        share (``"a photo of a"`` before ``"{class}"``); steps are encoded in groups that share
        a prefix length.
        """
        assert self.ctx is not None and self.n_ctx is not None
        contexts = []
        for k, ctx in enumerate(self.ctx):
            value = ctx.unsqueeze(0)  # [1, n_ctx, W]
            if shifts is not None:
                value = value + shifts[k][:, None, :]  # [B, n_ctx, W]
            contexts.append(value)
        batch = max(v.shape[0] for v in contexts)
        dtype, device = backbone.dtype, tokens.prefix.device
        width = tokens.prefix.shape[-1]
        start = tokens.prefix[0].to(dtype).expand(batch, 1, width)
        base = 1 + self.n_ctx
        budget = resolve_budget(self.config.memory_budget_mb, device)
        groups = []
        for steps, shared in self._prefix_groups(tokens, batch):
            texts = torch.nonzero(torch.isin(tokens.step_index, torch.tensor(steps, device=device)))
            groups.append((steps, shared, texts.flatten()))
        # the groups' activations coexist until the backward pass: share the budget by work
        work = [float((tokens.eot_index[t] + 1 - base - c).sum()) for _, c, t in groups]
        parts, order, plans = [], [], []
        for (steps, shared, texts), part in zip(groups, work, strict=True):
            prefixes = []
            local = torch.zeros(tokens.num_steps, dtype=torch.long, device=device)
            for j, k in enumerate(steps):
                local[k] = j
                first = int(texts[tokens.step_index[texts] == k][0])
                common = tokens.suffix[first, :shared].to(dtype).expand(batch, -1, -1)
                ctx = contexts[k].expand(batch, -1, -1).to(dtype)
                prefixes.append(torch.cat([start, ctx, common], dim=1))
            prefix = torch.stack(prefixes, dim=1).reshape(batch * len(steps), -1, width)
            count = len(texts)
            row_prefix = (
                torch.arange(batch, device=device)[:, None] * len(steps)
                + local[tokens.step_index[texts]][None, :]
            ).reshape(-1)
            features = encoder.encode_with_prefix(
                prefix,
                tokens.suffix[texts, shared:],
                tokens.eot_index[texts] - (base + shared),
                row_prefix,
                torch.arange(count, device=device).repeat(batch),
                budget_bytes=max(1, int(budget * part / sum(work))),
                max_rows=self.config.max_sequences_per_call,
            )
            parts.append(features.reshape(batch, count, -1))
            order.append(texts)
            plans.append(encoder.last_plan)
        if len(plans) > 1:  # one summary of the step's calls
            encoder.last_plan = {
                "bucket_lengths": [n for plan in plans for n in plan["bucket_lengths"]],
                "rows": sum(plan["rows"] for plan in plans),
                "chunks": sum(plan["chunks"] for plan in plans),
                "recompute": any(plan["recompute"] for plan in plans),
                "estimated_bytes": sum(plan["estimated_bytes"] for plan in plans),
                "budget_bytes": budget,
                "joint_prefix": all(plan["joint_prefix"] for plan in plans),
                "prefix_groups": len(plans),
            }
        if len(parts) == 1 and torch.equal(order[0], torch.arange(tokens.num_texts, device=device)):
            return parts[0]
        features = torch.cat(parts, dim=1)
        inverse = torch.empty_like(torch.cat(order))
        inverse[torch.cat(order)] = torch.arange(tokens.num_texts, device=device)
        return features[:, inverse]

    def _prefix_groups(self, tokens: PromptTokens, batch: int) -> list[tuple[list[int], int]]:
        """Steps grouped by the shared text length ``c`` used in their prefix (a group uses its
        smallest ``c``); more groups save tokens but cost encoder calls."""
        from cotprompt.backbones.encoder_plan import BUCKET_OVERHEAD_TOKENS

        shared = [tokens.shared_text_prefix(k) for k in range(tokens.num_steps)]
        if len(set(shared)) == 1:
            return [(list(range(tokens.num_steps)), shared[0])]
        rows = batch
        per_step = torch.bincount(tokens.step_index, minlength=tokens.num_steps).tolist()
        suffix_len = (tokens.eot_index + 1 - (1 + (self.n_ctx or 0))).tolist()
        step_tokens = [0] * tokens.num_steps
        for k, length in zip(tokens.step_index.tolist(), suffix_len, strict=True):
            step_tokens[k] += length
        overhead = BUCKET_OVERHEAD_TOKENS.get(tokens.prefix.device.type, 64)
        steps = sorted(range(tokens.num_steps), key=lambda k: shared[k])

        def cost(i: int, j: int) -> float:  # steps[i..j] with c = shared[steps[i]]
            c = shared[steps[i]]
            group = steps[i : j + 1]
            return overhead + rows * sum(step_tokens[k] - c * per_step[k] for k in group)

        best = [0.0] + [float("inf")] * len(steps)
        back = [0] * (len(steps) + 1)
        for j in range(1, len(steps) + 1):
            for i in range(j):
                value = best[i] + cost(i, j - 1)
                if value < best[j]:
                    best[j], back[j] = value, i
        groups = []
        j = len(steps)
        while j > 0:
            i = back[j]
            groups.append((sorted(steps[i:j]), shared[steps[i]]))
            j = i
        return list(reversed(groups))

    def _text_cache_key(self, backbone: Backbone) -> tuple | None:
        """Key of the text features of an unconditioned tuner at inference (no gradients):
        they depend only on the parameters, the bound chain and the backbone, so they are
        computed once, not once per image batch."""
        if torch.is_grad_enabled() or self.image_conditioned or self.ctx is None:
            return None
        device = backbone.device
        return (
            self._bind_count,
            id(backbone),
            str(device),
            str(autocast_dtype(device.type)),
            self.config.text_encoder,
            tuple((p.data_ptr(), p._version, p.dtype) for p in self.parameters()),
            # frozen, but a user may load other weights into the backbone after binding
            tuple((p.data_ptr(), p._version) for p in _parameters(backbone)),
        )

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

    def context_shifts(self, image_features: Tensor | None) -> list[Tensor] | None:
        """Per-step ``[B, W]`` shifts of the context from the (chained) meta-nets for normalised
        image features ``[B, E]``, or ``None`` for a tuner without meta-nets: step k's meta-net
        input is linked to step k-1's shift when the tuner chains them (CoT-PT).

        Raises:
            ConfigError: The tuner is image-conditioned and ``image_features`` is ``None``.
        """
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
