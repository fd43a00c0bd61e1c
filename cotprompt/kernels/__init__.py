"""Fused kernels for the memory-bound work around the matmuls of the text encoder and the head.

Each op has a PyTorch reference (:mod:`cotprompt.kernels.reference`) and a Triton kernel
(forward and backward). Dispatch: the Triton kernel runs for CUDA tensors in float32, float16 or
bfloat16 when Triton can be imported and kernels are enabled; everything else (CPU tensors, other
dtypes, no Triton) runs the reference. Turn the kernels off with the environment variable
``COTPROMPT_DISABLE_KERNELS=1``, :func:`set_kernels_enabled` or :func:`kernels_disabled`.

Ops:
    :func:`add_layer_norm`: ``y = x + residual``, ``h = layer_norm(y)`` in one pass.
    :func:`bias_act`: ``act(x + bias)`` for QuickGELU / GELU.
    :func:`cosine_cross_entropy`: normalise, scaled cosine logits averaged over chain steps and
        cross-entropy, without materialising normalised text features.
"""

from __future__ import annotations

from cotprompt.kernels.ops import (
    add_layer_norm,
    bias_act,
    cosine_cross_entropy,
    kernels_disabled,
    kernels_enabled,
    set_kernels_enabled,
    triton_available,
    uses_triton,
)
from cotprompt.kernels.reference import (
    add_layer_norm_ref,
    bias_act_ref,
    cosine_cross_entropy_ref,
    cosine_logits_ref,
)

__all__ = [
    "add_layer_norm",
    "add_layer_norm_ref",
    "bias_act",
    "bias_act_ref",
    "cosine_cross_entropy",
    "cosine_cross_entropy_ref",
    "cosine_logits_ref",
    "kernels_disabled",
    "kernels_enabled",
    "set_kernels_enabled",
    "triton_available",
    "uses_triton",
]
