"""The fast path of CLIP's text encoder: the same function as the plain forward, less work.

The plain path (:meth:`OpenCLIPBackbone.encode_text_embeddings`) runs open_clip's transformer
over whole prompts with an additive causal mask. :class:`FastTextEncoder` runs a manual forward
over the same residual attention blocks (``ln_1``, ``attn`` in/out projections, ``ls_1``,
``ln_2``, ``mlp`` ``c_fc`` / activation / ``c_proj``, ``ls_2``) and computes the same features
with these exact reductions:

* **Causal attention without a mask tensor**: ``scaled_dot_product_attention`` with
  ``is_causal`` (flash kernels on GPUs), or a lower-right causal bias when a cached prefix is
  attended to.
* **Shared-prefix caching** (:meth:`FastTextEncoder.encode_with_prefix`): the start token, the
  unified context and text tokens common to all labels are the same for every label, and
  attention is causal, so their keys and values are computed once per prefix (once per image and
  chain step for image-conditioned prompts); each label's suffix attends to them in every layer.
  Gradients flow through the prefix. Small problems (one bucket, one chunk) run the prefix in the
  same matmul calls as the suffixes, layer by layer.
* **Length buckets**: sequences are grouped by their end-of-text position, each group truncated
  after its longest end-of-text token, instead of one truncation for all.
* **Last-layer pruning**: the last layer computes its attention output and MLP only at the
  end-of-text token (the only position that is pooled); the final layer norm runs on pooled rows.
* **Frozen first layer**: the suffix embeddings are frozen, so the first layer's layer norm and
  query/key/value projection of the suffix tokens run once per label, not once per image.
* **Weights cast once under autocast**: the frozen matmul weights are cast to the autocast dtype
  once and kept until they change (autocast would cast them again in every call), and on CPUs
  half-precision attention runs in fp32 (the CPU bf16 attention backward is slow).
* **Memory-budgeted chunks**: rows are encoded in chunks sized to an activation-memory budget;
  when training needs more than the budget, each chunk is recomputed in the backward pass
  (activation checkpointing), so the peak stays near one chunk's activations.

The memory-bound work between the matmuls goes through :mod:`cotprompt.kernels` (fused Triton
kernels on GPUs, PyTorch references elsewhere).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cotprompt.backbones.encoder_plan import length_buckets, plan_chunks, run_chunks
from cotprompt.backbones.encoder_weights import BlockWeights, TowerWeights
from cotprompt.kernels import add_layer_norm, bias_act, kernels_disabled, uses_triton

logger = logging.getLogger(__name__)


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype active for ``device_type``, or ``None``."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
    except TypeError:  # torch < 2.4: no device argument
        if device_type == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
        if device_type == "cpu" and torch.is_autocast_cpu_enabled():
            return torch.get_autocast_cpu_dtype()
    return None


def _lower_right_bias(queries: int, keys: int) -> Any:
    """A causal bias aligned to the last key (each query also sees the whole prefix), which
    ``scaled_dot_product_attention`` runs with flash / memory-efficient kernels; ``None`` on
    PyTorch versions without it."""
    try:
        from torch.nn.attention.bias import causal_lower_right
    except ImportError:
        return None
    return causal_lower_right(queries, keys)


def _attention(q: Tensor, k: Tensor, v: Tensor, **options: Any) -> Tensor:
    """``scaled_dot_product_attention``; on a CPU, half-precision inputs are attended in fp32.

    PyTorch's CPU flash-attention backward is about ten times slower in bf16 than in fp32
    (measured with torch 2.14: it was more than half of a bf16 training step), and attention
    is a small share of the FLOPs; fp32 is also the more accurate of the two.
    """
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **options)
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, **options)


def unsupported_reason(tower: nn.Module) -> str | None:
    """Why :class:`FastTextEncoder` cannot run ``tower``, or ``None`` when it can."""
    transformer = getattr(tower, "transformer", None)
    blocks = getattr(transformer, "resblocks", None)
    if blocks is None or len(blocks) == 0:
        return "the text tower has no transformer.resblocks"
    if getattr(tower, "positional_embedding", None) is None:
        return "the text tower has no positional embedding"
    if hasattr(tower, "attn_mask") and tower.attn_mask is None:
        return "the text tower is not causal (no attention mask)"
    for i, block in enumerate(blocks):
        attn = getattr(block, "attn", None)
        if not isinstance(attn, nn.MultiheadAttention):
            return f"block {i} is not an open_clip ResidualAttentionBlock (custom attention)"
        if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn:
            return f"block {i}: unsupported MultiheadAttention options"
        if hasattr(block, "ln_1_kv"):
            return f"block {i} is a cross-attention block"
        for name in ("ln_1", "ln_2"):
            if not isinstance(getattr(block, name, None), nn.LayerNorm):
                return f"block {i}: {name} is not a LayerNorm"
        mlp = getattr(block, "mlp", None)
        if mlp is None or set(dict(mlp.named_children())) != {"c_fc", "gelu", "c_proj"}:
            return f"block {i}: the MLP is not c_fc / activation / c_proj"
        for name in ("ls_1", "ls_2"):
            scale = getattr(block, name, None)
            if not isinstance(scale, nn.Identity) and not hasattr(scale, "gamma"):
                return f"block {i}: unsupported {name}"
    if not isinstance(getattr(tower, "ln_final", None), nn.LayerNorm):
        return "the text tower's ln_final is not a LayerNorm"
    return None


class FastTextEncoder:
    """Manual forward of an open_clip text tower (see the module docstring).

    Holds references to the tower's frozen modules; the only copies are those of
    :class:`~cotprompt.backbones.encoder_weights.TowerWeights` (layer-scale folded projections,
    matmul weights cast to the autocast dtype), rebuilt whenever the weights change.

    Args:
        tower: The module with ``token_embedding``, ``positional_embedding``, ``transformer``,
            ``ln_final`` and ``text_projection`` (open_clip's ``CLIP`` or ``TextTransformer``).
        compile: Run each chunk through ``torch.compile`` (the fused Triton kernels are then
            left to the compiler).

    Raises:
        ValueError: The tower's blocks are not open_clip ``ResidualAttentionBlock`` s.
    """

    def __init__(self, tower: nn.Module, compile: bool = False) -> None:
        reason = unsupported_reason(tower)
        if reason is not None:
            raise ValueError(reason)
        self.tower: Any = cast(Any, tower)  # open_clip's text tower: untyped attributes
        blocks = self.tower.transformer.resblocks
        self.num_layers = len(blocks)
        self.width = int(self.tower.positional_embedding.shape[-1])
        self.heads = int(blocks[0].attn.num_heads)
        self.compile = compile
        self._compiled: Callable[..., Tensor] | None = None
        self.weights = TowerWeights(blocks)
        #: How the last call was split: bucket lengths, rows, chunks, recomputation.
        self.last_plan: dict[str, Any] = {}

    @property
    def positional_embedding(self) -> Tensor:
        """``[context_length, W]``."""
        return self.tower.positional_embedding

    def _project(self, pooled: Tensor) -> Tensor:
        proj = self.tower.text_projection
        if isinstance(proj, nn.Linear):
            return proj(pooled)
        return pooled @ proj.to(pooled.dtype)

    # -- the layers -------------------------------------------------------------------------

    @staticmethod
    def _matmul_dtype(x: Tensor) -> torch.dtype:
        return autocast_dtype(x.device.type) or x.dtype

    @staticmethod
    def _ln(x: Tensor, residual: Tensor | None, norm: nn.LayerNorm, dtype: torch.dtype):
        return add_layer_norm(x, residual, norm.weight, norm.bias, norm.eps, out_dtype=dtype)

    def _mlp(self, blk: BlockWeights, h: Tensor) -> Tensor:
        if blk.act != "module" and uses_triton(h):
            # the matmul without its bias, then one fused pass: bias + activation
            hidden = bias_act(F.linear(h, blk.fc_w), blk.fc_b, blk.act)  # type: ignore[arg-type]
        elif blk.act == "quick_gelu":
            hidden = F.linear(h, blk.fc_w, blk.fc_b)
            hidden = hidden * torch.sigmoid(1.702 * hidden)
        elif blk.act in ("gelu", "gelu_tanh"):
            approximate = "tanh" if blk.act == "gelu_tanh" else "none"
            hidden = F.gelu(F.linear(h, blk.fc_w, blk.fc_b), approximate=approximate)
        else:
            hidden = blk.act_module(F.linear(h, blk.fc_w, blk.fc_b))
        return F.linear(hidden, blk.proj_w, blk.proj_b)

    def _first_layer_qkv(self, x: Tensor) -> Tensor:
        """Layer-0 ``qkv`` of frozen inputs ``x`` (embeddings + positions)."""
        dtype = self._matmul_dtype(x)
        blk = self.weights.blocks(autocast_dtype(x.device.type))[0]
        _, h = self._ln(x, None, blk.ln_1, dtype)
        return F.linear(h, blk.in_w, blk.in_b)

    def _run(
        self,
        x: Tensor,
        *,
        prefix_kv: Sequence[tuple[Tensor, Tensor]] | None = None,
        prefix_index: Tensor | None = None,
        pool: Tensor | None = None,
        qkv0: Tensor | None = None,
        record: bool = False,
        bool_masks: bool = False,
    ) -> Any:
        """The blocks over ``x`` ``[M, L, W]`` (embeddings + positions).

        Args:
            x: Input of the first block.
            prefix_kv: Per-layer cached ``(k, v)`` ``[P, H, Lp, d]`` that every row attends to.
            prefix_index: ``[M]`` which cached prefix each row attends to.
            pool: ``[M]`` position pooled per row: the last layer only computes that position,
                and the result is the projected feature ``[M, E]``.
            qkv0: Precomputed first-layer ``qkv`` ``[M, L, 3W]`` (frozen inputs).
            record: Return the per-layer ``(k, v)`` instead (for a prefix).
            bool_masks: Use boolean masks instead of a causal bias (for ``torch.compile``).
        """
        m, length, width = x.shape
        heads = self.heads
        head_dim = width // heads
        blocks = self.weights.blocks(autocast_dtype(x.device.type))
        dtype = self._matmul_dtype(x)
        lp = 0 if prefix_kv is None else int(prefix_kv[0][0].shape[2])
        kv: list[tuple[Tensor, Tensor]] = []
        pending: Tensor | None = None
        mask = None
        if prefix_kv is not None:
            mask = None if bool_masks else _lower_right_bias(length, lp + length)
            if mask is None:
                mask = torch.ones(length, lp + length, dtype=torch.bool, device=x.device).tril(lp)
        for i, blk in enumerate(blocks):
            last = i == len(blocks) - 1
            x, h = self._ln(x, pending, blk.ln_1, dtype)
            qkv = qkv0 if (i == 0 and qkv0 is not None) else F.linear(h, blk.in_w, blk.in_b)
            q, k, v = qkv.view(m, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            if record:
                kv.append((k, v))
                if last:
                    return kv
            if prefix_kv is not None:
                assert prefix_index is not None
                pk, pv = prefix_kv[i]
                k = torch.cat([pk[prefix_index].to(k.dtype), k], dim=2)
                v = torch.cat([pv[prefix_index].to(v.dtype), v], dim=2)
            if last and pool is not None:
                rows = torch.arange(m, device=x.device)
                q = q[rows, :, pool].unsqueeze(2)  # [M, H, 1, d]
                keys = torch.arange(lp + length, device=x.device)
                visible = (keys[None, :] <= (pool + lp)[:, None])[:, None, None, :]
                o = _attention(q, k, v, attn_mask=visible)
                o = o.reshape(m, width)
                x = x[rows, pool]
            else:
                if mask is None:
                    o = _attention(q, k, v, is_causal=True)
                else:
                    o = _attention(q, k, v, attn_mask=mask)
                o = o.transpose(1, 2).reshape(m, length, width)
            attn_out = F.linear(o, blk.out_w, blk.out_b)
            x, h = self._ln(x, attn_out, blk.ln_2, dtype)
            pending = self._mlp(blk, h)
        final = self.tower.ln_final
        if pool is None:
            _, h = self._ln(x, pending, final, x.dtype)
            return h
        _, pooled = self._ln(x, pending, final, x.dtype)
        return self._project(pooled)

    def _run_chunk(self, *args: Any, **kwargs: Any) -> Tensor:
        if not self.compile:
            return self._run(*args, **kwargs)
        if self._compiled is None:
            self._compiled = torch.compile(self._run, dynamic=True)
        with kernels_disabled():
            return self._compiled(*args, bool_masks=True, **kwargs)

    # -- public -----------------------------------------------------------------------------

    def encode(
        self,
        embeddings: Tensor,
        eot_index: Tensor,
        *,
        budget_bytes: int | None = None,
        max_rows: int | None = None,
    ) -> Tensor:
        """``[R, L, W]`` prompt embeddings -> ``[R, E]`` features (CLIP's text forward).

        Rows are bucketed by end-of-text position and chunked to ``budget_bytes``.
        """
        rows = embeddings.shape[0]
        lengths = eot_index + 1
        pos = self.positional_embedding

        def chunk_fn(idx: Tensor, length: int) -> Tensor:
            x = embeddings[idx, :length] + pos[:length].to(embeddings.dtype)
            return self._run_chunk(x, pool=eot_index[idx])

        groups = [(g, int(lengths[g].max())) for g in length_buckets(lengths)]
        chunks, recompute, plan = plan_chunks(
            groups, self.row_bytes, self._matmul_dtype(embeddings), embeddings.device,
            budget_bytes, max_rows,
        )
        self.last_plan = {**plan, "rows": rows, "joint_prefix": False}
        return run_chunks(chunks, lambda idx, length, _g: chunk_fn(idx, length), recompute, rows)

    def encode_with_prefix(
        self,
        prefix: Tensor,
        suffix: Tensor,
        suffix_eot: Tensor,
        row_prefix: Tensor,
        row_text: Tensor,
        *,
        budget_bytes: int | None = None,
        max_rows: int | None = None,
    ) -> Tensor:
        """Features of the rows ``prefix[row_prefix[r]] + suffix[row_text[r]]``.

        Args:
            prefix: ``[P, Lp, W]`` shared prefixes (start token and context; may need grad).
            suffix: ``[T, S, W]`` frozen suffix embeddings (label text, end-of-text, padding).
            suffix_eot: ``[T]`` end-of-text position within the suffix.
            row_prefix: ``[R]`` prefix of each row.
            row_text: ``[R]`` suffix of each row.
            budget_bytes: Activation budget (default: half the free memory).
            max_rows: At most this many rows per encoder call.

        Returns:
            ``[R, E]``, equal to encoding the concatenated sequences.
        """
        lp = prefix.shape[1]
        pos = self.positional_embedding
        prefix_x = prefix + pos[:lp].to(prefix.dtype)
        lengths = suffix_eot + 1
        rows_per_text = torch.bincount(row_text, minlength=suffix.shape[0])
        groups: list[tuple[Tensor, int]] = []
        first_layer: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
        for texts in length_buckets(lengths, rows_per_text):
            length = int(lengths[texts].max())
            local = torch.full((suffix.shape[0],), -1, dtype=torch.long, device=suffix.device)
            local[texts] = torch.arange(len(texts), device=suffix.device)
            x_text = suffix[texts, :length] + pos[lp : lp + length].to(suffix.dtype)
            with torch.set_grad_enabled(torch.is_grad_enabled() and x_text.requires_grad):
                qkv_text = self._first_layer_qkv(x_text)
            rows = torch.nonzero(local[row_text] >= 0).flatten()
            first_layer[len(groups)] = (local, x_text, qkv_text)
            groups.append((rows, length))

        def row_bytes(length: int, dtype: torch.dtype, training: bool) -> int:
            return self.row_bytes(length, dtype, training, prefix_length=lp)

        num_rows = int(row_text.shape[0])
        chunks, recompute, plan = plan_chunks(
            groups, row_bytes, self._matmul_dtype(prefix), prefix.device, budget_bytes, max_rows
        )
        joint = len(chunks) == 1 and not self.compile
        self.last_plan = {**plan, "rows": num_rows, "joint_prefix": joint}
        if joint:
            # one call: the prefix runs in the same matmuls as the suffixes, layer by layer
            idx, length, g = chunks[0]
            local, x_text, qkv_text = first_layer[g]
            text = local[row_text[idx]]
            features = self._run_joint(
                prefix_x,
                x_text[text],
                prefix_index=row_prefix[idx],
                pool=suffix_eot[row_text[idx]],
                qkv0=qkv_text[text],
            )
            return run_chunks([(idx, length, g)], lambda *_: features, False, num_rows)

        kv = self._run(prefix_x, record=True)

        def chunk_fn(idx: Tensor, length: int, group: int) -> Tensor:
            local, x_text, qkv_text = first_layer[group]
            text = local[row_text[idx]]
            return self._run_chunk(
                x_text[text],
                prefix_kv=kv,
                prefix_index=row_prefix[idx],
                pool=suffix_eot[row_text[idx]],
                qkv0=qkv_text[text],
            )

        return run_chunks(chunks, chunk_fn, recompute, num_rows)

    def _run_joint(
        self,
        prefix_x: Tensor,
        x: Tensor,
        *,
        prefix_index: Tensor,
        pool: Tensor,
        qkv0: Tensor,
    ) -> Tensor:
        """Prefixes ``[P, Lp, W]`` and suffix rows ``[M, L, W]`` through the blocks together:
        the position-wise work (layer norms, projections, MLP) of both in the same calls, the
        attention apart (prefix: causal; suffix: its prefix's keys/values of the same layer,
        then causal). Returns the pooled features ``[M, E]``."""
        p, lp, width = prefix_x.shape
        m, length, _ = x.shape
        heads = self.heads
        head_dim = width // heads
        n_p = p * lp
        dtype = self._matmul_dtype(x)
        stream = torch.cat([prefix_x.reshape(n_p, width), x.reshape(m * length, width)])
        mask = _lower_right_bias(length, lp + length)
        if mask is None:
            mask = torch.ones(length, lp + length, dtype=torch.bool, device=x.device).tril(lp)
        rows = torch.arange(m, device=x.device)
        keys = torch.arange(lp + length, device=x.device)
        visible = (keys[None, :] <= (pool + lp)[:, None])[:, None, None, :]
        pending: Tensor | None = None
        blocks = self.weights.blocks(autocast_dtype(x.device.type))
        for i, blk in enumerate(blocks):
            stream, h = self._ln(stream, pending, blk.ln_1, dtype)
            if i == 0:
                qkv_p = F.linear(h[:n_p], blk.in_w, blk.in_b)
                qkv_s = qkv0.to(qkv_p.dtype)
            else:
                qkv = F.linear(h, blk.in_w, blk.in_b)
                qkv_p, qkv_s = qkv[:n_p], qkv[n_p:]
            qp, kp, vp = qkv_p.reshape(p, lp, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            qs, ks, vs = qkv_s.reshape(m, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            k = torch.cat([kp[prefix_index], ks], dim=2)
            v = torch.cat([vp[prefix_index], vs], dim=2)
            if i == len(blocks) - 1:  # only the pooled position of each suffix row
                q = qs[rows, :, pool].unsqueeze(2)
                o = _attention(q, k, v, attn_mask=visible).reshape(m, width)
                xs = stream[n_p:].view(m, length, width)[rows, pool]
                xs, h = self._ln(xs, F.linear(o, blk.out_w, blk.out_b), blk.ln_2, dtype)
                _, pooled = self._ln(xs, self._mlp(blk, h), self.tower.ln_final, xs.dtype)
                return self._project(pooled)
            op = _attention(qp, kp, vp, is_causal=True)
            os_ = _attention(qs, k, v, attn_mask=mask)
            o = torch.cat(
                [
                    op.transpose(1, 2).reshape(n_p, width),
                    os_.transpose(1, 2).reshape(m * length, width),
                ]
            )
            stream, h = self._ln(stream, F.linear(o, blk.out_w, blk.out_b), blk.ln_2, dtype)
            pending = self._mlp(blk, h)
        raise RuntimeError("unreachable")

    # -- planning ---------------------------------------------------------------------------

    def row_bytes(
        self, length: int, dtype: torch.dtype, training: bool, prefix_length: int = 0
    ) -> int:
        """Estimated activation bytes of one row of ``length`` positions.

        Training keeps every layer's activations for the backward pass (about 16 W values per
        token and layer, the attention keys/values with the prefix, the attention weights);
        inference keeps one layer's working set.
        """
        act = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
        width, heads = self.width, self.heads
        keys = prefix_length + length
        per_layer = (
            length * width * (2 * 4 + 14 * act) + 2 * keys * width * act + heads * length * keys * 4
        )
        if training:
            return per_layer * self.num_layers
        return 2 * per_layer
