"""PyTorch references of the fused kernels: the oracle for tests and the CPU implementation.

Each function computes in float32 and returns the dtype the fused kernel returns, so that a
kernel and its reference can be compared directly.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Activation = Literal["quick_gelu", "gelu", "gelu_tanh"]

#: F.normalize's clamp on the norm.
NORM_EPS = 1e-12


def add_layer_norm_ref(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float = 1e-5,
    out_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """``y = x + residual``; ``h = layer_norm(y)``. Returns ``(y, h)``.

    ``y`` has the promoted dtype of ``x`` and ``residual``; ``h`` has ``out_dtype`` (default: the
    dtype of ``y``). The normalisation is computed in float32.
    """
    y = x if residual is None else x + residual
    h = F.layer_norm(
        y.float(),
        (y.shape[-1],),
        None if weight is None else weight.float(),
        None if bias is None else bias.float(),
        eps,
    )
    return y, h.to(out_dtype or y.dtype)


def activation_ref(h: Tensor, activation: Activation) -> Tensor:
    """The MLP activation of CLIP-style transformers."""
    if activation == "quick_gelu":
        return h * torch.sigmoid(1.702 * h)
    if activation == "gelu_tanh":
        return F.gelu(h, approximate="tanh")
    return F.gelu(h)


def bias_act_ref(x: Tensor, bias: Tensor | None, activation: Activation) -> Tensor:
    """``act(x + bias)``, computed in float32, returned in ``x``'s dtype."""
    h = x.float() if bias is None else x.float() + bias.float()
    return activation_ref(h, activation).to(x.dtype)


def cosine_logits_ref(image: Tensor, text: Tensor, scale: Tensor | float) -> Tensor:
    """Scaled cosine logits averaged over chain steps.

    Args:
        image: ``[B, E]`` image features (any norm).
        text: ``[B or 1, K, C, E]`` text features (any norm).
        scale: The logit scale (``exp(logit_scale)``).

    Returns:
        ``[B, C]`` float32 logits ``scale * mean_k cos(image_b, text_bkc)``.
    """
    image = F.normalize(image.float(), dim=-1, eps=NORM_EPS)
    text = F.normalize(text.float(), dim=-1, eps=NORM_EPS)
    if text.shape[0] == 1:
        cos = torch.einsum("be,kce->bkc", image, text[0])
    else:
        cos = torch.einsum("be,bkce->bkc", image, text)
    return scale * cos.mean(dim=1)


def cosine_cross_entropy_ref(
    image: Tensor,
    text: Tensor,
    scale: Tensor | float,
    targets: Tensor,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> Tensor:
    """Cross-entropy of :func:`cosine_logits_ref` against ``targets`` ``[B]``."""
    logits = cosine_logits_ref(image, text, scale)
    return F.cross_entropy(logits, targets, reduction=reduction)
