"""Triton kernels (imported lazily: only when a kernel is about to run).

All kernels load their inputs, compute in float32 and store in the output tensor's dtype. They run
on CUDA tensors, and on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set before
``triton`` is imported), which is how the tests check them without a GPU.
"""

from __future__ import annotations

import triton
import triton.language as tl

ACT_QUICK_GELU = 0
ACT_GELU = 1
ACT_GELU_TANH = 2


# -- layer norm with residual add ---------------------------------------------------------------


@triton.jit
def add_layer_norm_fwd_kernel(
    X,
    R,
    Y,
    H,
    W,
    B,
    Mean,
    Rstd,
    N,
    eps,
    HAS_R: tl.constexpr,
    HAS_W: tl.constexpr,
    HAS_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """One row per program: ``y = x + r`` (stored when ``HAS_R``), ``h = LN(y) * w + b``."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    offset = row * N + cols
    y = tl.load(X + offset, mask=mask, other=0.0).to(tl.float32)
    if HAS_R:
        y += tl.load(R + offset, mask=mask, other=0.0).to(tl.float32)
        y_stored = y.to(Y.dtype.element_ty)
        tl.store(Y + offset, y_stored, mask=mask)
        # normalise what is stored, so that forward and backward see the same y
        y = y_stored.to(tl.float32)
    mean = tl.sum(y, axis=0) / N
    centred = tl.where(mask, y - mean, 0.0)
    var = tl.sum(centred * centred, axis=0) / N
    rstd = 1.0 / tl.sqrt(var + eps)
    h = centred * rstd
    if HAS_W:
        h = h * tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_B:
        h = h + tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(H + offset, h.to(H.dtype.element_ty), mask=mask)
    tl.store(Mean + row, mean)
    tl.store(Rstd + row, rstd)


@triton.jit
def add_layer_norm_bwd_kernel(
    DH,
    DY,
    Y,
    W,
    Mean,
    Rstd,
    DX,
    N,
    HAS_DY: tl.constexpr,
    HAS_W: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """``dx = dy + LN'(y)^T dh`` (the gradient reaching both ``x`` and the residual)."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    offset = row * N + cols
    y = tl.load(Y + offset, mask=mask, other=0.0).to(tl.float32)
    mean = tl.load(Mean + row)
    rstd = tl.load(Rstd + row)
    xhat = tl.where(mask, (y - mean) * rstd, 0.0)
    g = tl.load(DH + offset, mask=mask, other=0.0).to(tl.float32)
    if HAS_W:
        g = g * tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    c1 = tl.sum(xhat * g, axis=0) / N
    c2 = tl.sum(g, axis=0) / N
    dx = (g - (xhat * c1 + c2)) * rstd
    if HAS_DY:
        dx += tl.load(DY + offset, mask=mask, other=0.0).to(tl.float32)
    tl.store(DX + offset, dx.to(DX.dtype.element_ty), mask=mask)


# -- bias + activation --------------------------------------------------------------------------


@triton.jit
def _gelu_erf(h):
    return 0.5 * h * (1.0 + tl.math.erf(h * 0.7071067811865476))


@triton.jit
def _tanh(z):
    return 2.0 * tl.sigmoid(2.0 * z) - 1.0


@triton.jit
def _biased_block(X, Bias, total, N, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
    """This program's offsets, their mask and ``x + bias`` in float32 (bias broadcast over rows)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    h = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        h += tl.load(Bias + offs % N, mask=mask, other=0.0).to(tl.float32)
    return offs, mask, h


@triton.jit
def bias_act_fwd_kernel(
    X,
    Bias,
    Out,
    total,
    N,
    HAS_BIAS: tl.constexpr,
    ACT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``out = act(x + bias)`` over a flat ``[rows * N]`` tensor."""
    offs, mask, h = _biased_block(X, Bias, total, N, HAS_BIAS, BLOCK)
    if ACT == 0:
        out = h * tl.sigmoid(1.702 * h)
    elif ACT == 1:
        out = _gelu_erf(h)
    else:
        out = 0.5 * h * (1.0 + _tanh(0.7978845608028654 * (h + 0.044715 * h * h * h)))
    tl.store(Out + offs, out.to(Out.dtype.element_ty), mask=mask)


@triton.jit
def bias_act_bwd_kernel(
    DOut,
    X,
    Bias,
    DX,
    total,
    N,
    HAS_BIAS: tl.constexpr,
    ACT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``dx = dout * act'(x + bias)``."""
    offs, mask, h = _biased_block(X, Bias, total, N, HAS_BIAS, BLOCK)
    g = tl.load(DOut + offs, mask=mask, other=0.0).to(tl.float32)
    if ACT == 0:
        s = tl.sigmoid(1.702 * h)
        d = s + 1.702 * h * s * (1.0 - s)
    elif ACT == 1:
        cdf = 0.5 * (1.0 + tl.math.erf(h * 0.7071067811865476))
        pdf = tl.exp(-0.5 * h * h) * 0.3989422804014327
        d = cdf + h * pdf
    else:
        inner = 0.7978845608028654 * (h + 0.044715 * h * h * h)
        t = _tanh(inner)
        d = 0.5 * (1.0 + t) + 0.5 * h * (1.0 - t * t) * 0.7978845608028654 * (
            1.0 + 0.134145 * h * h
        )
    tl.store(DX + offs, (g * d).to(DX.dtype.element_ty), mask=mask)


# -- normalise + scaled cosine logits + cross-entropy --------------------------------------------


@triton.jit
def cosine_ce_fwd_kernel(
    Img,
    Txt,
    Tgt,
    Logits,
    Lse,
    Loss,
    scale,
    K,
    C,
    E,
    stride_ib,
    stride_tb,
    stride_tk,
    stride_tc,
    BLOCK_C: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    """Row b: logits over all classes (mean over steps of scaled cosines), online log-sum-exp,
    loss ``lse - logit[target]``. The text tensor is shared by all rows when ``stride_tb == 0``."""
    b = tl.program_id(0).to(tl.int64)
    e = tl.arange(0, BLOCK_E)
    emask = e < E
    img = tl.load(Img + b * stride_ib + e, mask=emask, other=0.0).to(tl.float32)
    img = img / tl.maximum(tl.sqrt(tl.sum(img * img, axis=0)), 1e-12)
    target = tl.load(Tgt + b)
    running_max = tl.max(tl.full([BLOCK_C], float("-inf"), tl.float32), axis=0)
    running_sum = tl.sum(tl.zeros([BLOCK_C], tl.float32), axis=0)
    target_logit = tl.sum(tl.zeros([BLOCK_C], tl.float32), axis=0)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < C
        acc = tl.zeros([BLOCK_C], tl.float32)
        for k in range(0, K):
            ptr = Txt + b * stride_tb + k * stride_tk + c[:, None] * stride_tc + e[None, :]
            t = tl.load(ptr, mask=cmask[:, None] & emask[None, :], other=0.0).to(tl.float32)
            dot = tl.sum(t * img[None, :], axis=1)
            norm = tl.maximum(tl.sqrt(tl.sum(t * t, axis=1)), 1e-12)
            acc += dot / norm
        logit = acc * (scale / K)
        tl.store(Logits + b * C + c, logit, mask=cmask)
        logit = tl.where(cmask, logit, float("-inf"))
        new_max = tl.maximum(running_max, tl.max(logit, axis=0))
        running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(
            tl.exp(logit - new_max), axis=0
        )
        running_max = new_max
        target_logit += tl.sum(tl.where(c == target, logit, 0.0), axis=0)
    lse = running_max + tl.log(running_sum)
    tl.store(Lse + b, lse)
    tl.store(Loss + b, lse - target_logit)


@triton.jit
def cosine_ce_bwd_kernel(
    Img,
    Txt,
    Tgt,
    Logits,
    Lse,
    Grad,
    DImg,
    DTxt,
    scale,
    K,
    C,
    E,
    stride_ib,
    stride_tb,
    stride_tk,
    stride_tc,
    BLOCK_C: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    """Gradients for one row b with a per-image text tensor (``[B, K, C, E]``, contiguous)."""
    b = tl.program_id(0).to(tl.int64)
    e = tl.arange(0, BLOCK_E)
    emask = e < E
    img = tl.load(Img + b * stride_ib + e, mask=emask, other=0.0).to(tl.float32)
    img_norm = tl.maximum(tl.sqrt(tl.sum(img * img, axis=0)), 1e-12)
    img = img / img_norm
    target = tl.load(Tgt + b)
    lse = tl.load(Lse + b)
    g = tl.load(Grad + b)
    u = tl.zeros([BLOCK_E], tl.float32)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < C
        logit = tl.load(Logits + b * C + c, mask=cmask, other=0.0)
        p = tl.exp(logit - lse)
        d = tl.where(cmask, (p - tl.where(c == target, 1.0, 0.0)) * g, 0.0)
        coef = d * (scale / K)
        for k in range(0, K):
            offset = b * stride_tb + k * stride_tk + c[:, None] * stride_tc + e[None, :]
            tmask = cmask[:, None] & emask[None, :]
            t = tl.load(Txt + offset, mask=tmask, other=0.0).to(tl.float32)
            norm = tl.maximum(tl.sqrt(tl.sum(t * t, axis=1)), 1e-12)
            that = t / norm[:, None]
            cos = tl.sum(that * img[None, :], axis=1)
            u += tl.sum(coef[:, None] * that, axis=0)
            dt = coef[:, None] * (img[None, :] - cos[:, None] * that) / norm[:, None]
            tl.store(DTxt + offset, dt.to(DTxt.dtype.element_ty), mask=tmask)
    dimg = (u - tl.sum(u * img, axis=0) * img) / img_norm
    tl.store(DImg + b * stride_ib + e, dimg.to(DImg.dtype.element_ty), mask=emask)
