"""Dispatch between the Triton kernels and their PyTorch references, with autograd."""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any, Literal

import torch
from torch import Tensor

from cotprompt.kernels.reference import (
    Activation,
    add_layer_norm_ref,
    bias_act_ref,
    cosine_cross_entropy_ref,
)

logger = logging.getLogger(__name__)

ENV_DISABLE = "COTPROMPT_DISABLE_KERNELS"
_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_ACT_CODES = {"quick_gelu": 0, "gelu": 1, "gelu_tanh": 2}
_override: bool | None = None


# -- switches -----------------------------------------------------------------------------------


def kernels_enabled() -> bool:
    """Whether the fused Triton kernels may run (they still need CUDA tensors and Triton).

    :func:`set_kernels_enabled` takes precedence over ``COTPROMPT_DISABLE_KERNELS``.
    """
    if _override is not None:
        return _override
    return os.environ.get(ENV_DISABLE, "").strip().lower() not in ("1", "true", "yes", "on")


def set_kernels_enabled(enabled: bool | None) -> None:
    """Turn the fused kernels on or off for this process; ``None`` returns to the environment
    variable ``COTPROMPT_DISABLE_KERNELS``."""
    global _override
    _override = enabled


@contextlib.contextmanager
def kernels_disabled() -> Iterator[None]:
    """Run a block with the PyTorch references only."""
    previous = _override
    set_kernels_enabled(False)
    try:
        yield
    finally:
        set_kernels_enabled(previous)


@functools.lru_cache(maxsize=1)
def _triton_module() -> ModuleType | None:
    try:
        return importlib.import_module("cotprompt.kernels._triton")
    except Exception as exc:  # ImportError, or a Triton that cannot initialise
        logger.info("Triton kernels unavailable (%s: %s); using PyTorch", type(exc).__name__, exc)
        return None


def triton_available() -> bool:
    """Whether ``triton`` can be imported (it ships with CUDA builds of PyTorch)."""
    return _triton_module() is not None


def _interpreting() -> bool:
    """``TRITON_INTERPRET=1``: Triton runs kernels on CPU tensors with its interpreter (slow; for
    tests). It must be set before ``triton`` is imported."""
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def uses_triton(*tensors: Tensor | None) -> bool:
    """True when the ops would run their Triton kernels for these tensors: CUDA tensors (CPU
    tensors too under Triton's interpreter) of a supported dtype, kernels enabled, Triton
    importable."""
    present = [t for t in tensors if t is not None]
    on_device = _interpreting() or all(t.is_cuda for t in present)
    return (
        bool(present)
        and kernels_enabled()
        and on_device
        and all(t.dtype in _SUPPORTED_DTYPES for t in present)
        and triton_available()
    )


def _kernels() -> Any:
    module = _triton_module()
    if module is None:
        raise RuntimeError("Triton is not available")
    return module


def _block(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def _warps(block: int) -> int:
    return 8 if block >= 2048 else 4


# -- add + layer norm ---------------------------------------------------------------------------


class AddLayerNormFunction(torch.autograd.Function):
    """Triton ``(y, h) = (x + r, LN(x + r))``; ``r`` may be ``None`` (then only ``h``).

    Gradients reach ``x``, ``r`` and (computed with PyTorch, since the backbone is frozen they are
    rarely needed) the layer-norm weight and bias.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        residual: Tensor | None,
        weight: Tensor | None,
        bias: Tensor | None,
        eps: float,
        out_dtype: torch.dtype | None,
    ) -> tuple[Tensor, Tensor] | Tensor:
        kernels = _kernels()
        n = x.shape[-1]
        x2 = x.reshape(-1, n).contiguous()
        rows = x2.shape[0]
        has_r = residual is not None
        if residual is not None:
            y_dtype = torch.promote_types(x.dtype, residual.dtype)
            r2 = residual.reshape(-1, n).contiguous()
            y2 = torch.empty((rows, n), device=x.device, dtype=y_dtype)
        else:
            y_dtype = x.dtype
            r2 = x2
            y2 = x2
        h2 = torch.empty((rows, n), device=x.device, dtype=out_dtype or y_dtype)
        mean = torch.empty(rows, device=x.device, dtype=torch.float32)
        rstd = torch.empty(rows, device=x.device, dtype=torch.float32)
        block = _block(n)
        if rows:
            kernels.add_layer_norm_fwd_kernel[(rows,)](
                x2,
                r2,
                y2,
                h2,
                weight if weight is not None else x2,
                bias if bias is not None else x2,
                mean,
                rstd,
                n,
                eps,
                HAS_R=has_r,
                HAS_W=weight is not None,
                HAS_B=bias is not None,
                BLOCK_N=block,
                num_warps=_warps(block),
            )
        ctx.save_for_backward(y2, weight, bias, mean, rstd)
        ctx.has_r = has_r
        ctx.x_dtype = x.dtype
        ctx.r_dtype = None if residual is None else residual.dtype
        ctx.shape = x.shape
        h = h2.reshape(x.shape)
        if has_r:
            return y2.reshape(x.shape), h
        return h

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        kernels = _kernels()
        y2, weight, bias, mean, rstd = ctx.saved_tensors
        if ctx.has_r:
            dy, dh = grads
        else:
            dy, (dh,) = None, grads
        rows, n = y2.shape
        dh2 = torch.zeros_like(y2) if dh is None else dh.reshape(rows, n).contiguous()
        dy2 = None if dy is None else dy.reshape(rows, n).contiguous()
        dx2 = torch.empty_like(y2)
        block = _block(n)
        if rows:
            kernels.add_layer_norm_bwd_kernel[(rows,)](
                dh2,
                dy2 if dy2 is not None else dh2,
                y2,
                weight if weight is not None else y2,
                mean,
                rstd,
                dx2,
                n,
                HAS_DY=dy2 is not None,
                HAS_W=weight is not None,
                BLOCK_N=block,
                num_warps=_warps(block),
            )
        dx = dx2.reshape(ctx.shape)
        needs = ctx.needs_input_grad
        dweight = dbias = None
        if (needs[2] and weight is not None) or (needs[3] and bias is not None):
            xhat = (y2.float() - mean[:, None]) * rstd[:, None]
            dhf = dh2.float()
            if needs[2] and weight is not None:
                dweight = (dhf * xhat).sum(0).to(weight.dtype)
            if needs[3] and bias is not None:
                dbias = dhf.sum(0).to(bias.dtype)
        gx = dx.to(ctx.x_dtype) if needs[0] else None
        gr = dx.to(ctx.r_dtype) if ctx.has_r and needs[1] else None
        return gx, gr, dweight, dbias, None, None


def add_layer_norm(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float = 1e-5,
    out_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """``y = x + residual`` (``x`` when ``residual`` is ``None``) and ``h = layer_norm(y)``.

    Args:
        x: ``[..., N]`` residual stream.
        residual: Branch output to add, same shape, or ``None``.
        weight: ``[N]`` layer-norm weight, or ``None``.
        bias: ``[N]`` layer-norm bias, or ``None``.
        eps: Layer-norm epsilon.
        out_dtype: dtype of ``h`` (for example the autocast dtype of the next matmul); default
            the dtype of ``y``.

    Returns:
        ``(y, h)``.
    """
    if uses_triton(x, residual):
        if residual is None:
            return x, AddLayerNormFunction.apply(x, None, weight, bias, eps, out_dtype)
        y, h = AddLayerNormFunction.apply(x, residual, weight, bias, eps, out_dtype)
        return y, h
    return add_layer_norm_ref(x, residual, weight, bias, eps, out_dtype)


# -- bias + activation --------------------------------------------------------------------------


class BiasActFunction(torch.autograd.Function):
    """Triton ``act(x + bias)``; the bias gradient (rarely needed) is summed with PyTorch."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, bias: Tensor | None, activation: Activation
    ) -> Tensor:
        kernels = _kernels()
        x_c = x.contiguous()
        out = torch.empty_like(x_c)
        total, n = x_c.numel(), x_c.shape[-1]
        block = 1024
        if total:
            kernels.bias_act_fwd_kernel[(triton_cdiv(total, block),)](
                x_c,
                bias if bias is not None else x_c,
                out,
                total,
                n,
                HAS_BIAS=bias is not None,
                ACT=_ACT_CODES[activation],
                BLOCK=block,
            )
        ctx.save_for_backward(x_c, bias)
        ctx.activation = activation
        return out

    @staticmethod
    def backward(ctx: Any, dout: Tensor) -> tuple[Tensor | None, ...]:
        kernels = _kernels()
        x_c, bias = ctx.saved_tensors
        dout = dout.contiguous()
        dx = torch.empty_like(x_c)
        total, n = x_c.numel(), x_c.shape[-1]
        block = 1024
        if total:
            kernels.bias_act_bwd_kernel[(triton_cdiv(total, block),)](
                dout,
                x_c,
                bias if bias is not None else x_c,
                dx,
                total,
                n,
                HAS_BIAS=bias is not None,
                ACT=_ACT_CODES[ctx.activation],
                BLOCK=block,
            )
        dbias = None
        if bias is not None and ctx.needs_input_grad[1]:
            dbias = dx.reshape(-1, n).float().sum(0).to(bias.dtype)
        return dx, dbias, None


def triton_cdiv(a: int, b: int) -> int:
    """Ceiling division."""
    return -(-a // b)


def bias_act(x: Tensor, bias: Tensor | None, activation: Activation) -> Tensor:
    """``act(x + bias)`` in ``x``'s dtype (computed in float32).

    Args:
        x: ``[..., N]`` matmul output without its bias.
        bias: ``[N]`` or ``None``.
        activation: ``quick_gelu`` (OpenAI CLIP), ``gelu`` (erf) or ``gelu_tanh``.
    """
    if uses_triton(x, bias):
        return BiasActFunction.apply(x, bias, activation)
    return bias_act_ref(x, bias, activation)


# -- cosine logits + cross-entropy --------------------------------------------------------------


class CosineCrossEntropyFunction(torch.autograd.Function):
    """Triton forward (both text layouts) and backward (per-image text; a shared text tensor
    ``[1, K, C, E]`` takes the matmul form of the backward in PyTorch)."""

    @staticmethod
    def forward(
        ctx: Any,
        image: Tensor,
        text: Tensor,
        scale: float,
        targets: Tensor,
        reduction: str,
    ) -> Tensor:
        kernels = _kernels()
        image_c, text_c = image.contiguous(), text.contiguous()
        batch, dim = image_c.shape
        shared, steps, classes, _ = text_c.shape
        logits = torch.empty((batch, classes), device=image.device, dtype=torch.float32)
        lse = torch.empty(batch, device=image.device, dtype=torch.float32)
        loss = torch.empty(batch, device=image.device, dtype=torch.float32)
        block_e = _block(dim)
        block_c = max(1, min(64, 16384 // block_e))
        kernels.cosine_ce_fwd_kernel[(batch,)](
            image_c,
            text_c,
            targets,
            logits,
            lse,
            loss,
            float(scale),
            steps,
            classes,
            dim,
            image_c.stride(0),
            0 if shared == 1 else text_c.stride(0),
            text_c.stride(1),
            text_c.stride(2),
            BLOCK_C=block_c,
            BLOCK_E=block_e,
        )
        ctx.save_for_backward(image_c, text_c, targets, logits, lse)
        ctx.scale, ctx.reduction = float(scale), reduction
        ctx.blocks = (block_c, block_e)
        if reduction == "mean":
            return loss.mean()
        if reduction == "sum":
            return loss.sum()
        return loss

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        image, text, targets, logits, lse = ctx.saved_tensors
        batch, dim = image.shape
        shared, steps, classes, _ = text.shape
        grad = grad.float()
        if ctx.reduction == "mean":
            row_grad = (grad / batch).expand(batch).contiguous()
        elif ctx.reduction == "sum":
            row_grad = grad.expand(batch).contiguous()
        else:
            row_grad = grad.contiguous()
        if shared == batch:  # one text tensor per image: rows write disjoint gradients
            kernels = _kernels()
            dimage = torch.empty_like(image)
            dtext = torch.empty_like(text)
            block_c, block_e = ctx.blocks
            kernels.cosine_ce_bwd_kernel[(batch,)](
                image,
                text,
                targets,
                logits,
                lse,
                row_grad,
                dimage,
                dtext,
                ctx.scale,
                steps,
                classes,
                dim,
                image.stride(0),
                text.stride(0),
                text.stride(1),
                text.stride(2),
                BLOCK_C=block_c,
                BLOCK_E=block_e,
            )
            return dimage, dtext, None, None, None
        # shared text: the backward is two matmuls
        probs = torch.softmax(logits, dim=-1)
        probs[torch.arange(batch, device=probs.device), targets] -= 1.0
        coef = probs * row_grad[:, None] * (ctx.scale / steps)  # [B, C]
        img = image.float()
        img_norm = img.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        ihat = img / img_norm
        txt = text[0].float()
        txt_norm = txt.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        that = txt / txt_norm  # [K, C, E]
        u = torch.einsum("bc,kce->be", coef, that)
        dimage = (u - (u * ihat).sum(-1, keepdim=True) * ihat) / img_norm
        v = coef.t() @ ihat  # [C, E], the same for every step
        dthat = v.unsqueeze(0).expand(steps, -1, -1)
        dtext = (dthat - (dthat * that).sum(-1, keepdim=True) * that) / txt_norm
        return dimage.to(image.dtype), dtext.unsqueeze(0).to(text.dtype), None, None, None


def cosine_cross_entropy(
    image: Tensor,
    text: Tensor,
    scale: Tensor | float,
    targets: Tensor,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Tensor:
    """Cross-entropy of ``scale * mean_k cos(image_b, text_bkc)`` against ``targets``.

    Equal to ``F.cross_entropy(MeanAggregator()(normalize(image), normalize(text), scale),
    targets)``.

    Args:
        image: ``[B, E]`` image features (normalised or not).
        text: ``[B or 1, K, C, E]`` step text features (normalised or not).
        scale: Logit scale; a tensor that requires grad takes the PyTorch path.
        targets: ``[B]`` class indices.
        reduction: ``mean``, ``sum`` or ``none``.
    """
    scale_grad = isinstance(scale, Tensor) and scale.requires_grad
    if (
        not scale_grad
        and image.dim() == 2
        and text.dim() == 4
        and text.shape[0] in (1, image.shape[0])
        and uses_triton(image, text)
    ):
        return CosineCrossEntropyFunction.apply(
            image, text, float(scale), targets.contiguous(), reduction
        )
    return cosine_cross_entropy_ref(image, text, scale, targets, reduction)
