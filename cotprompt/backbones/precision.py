"""Precision of a frozen open_clip model: the dtype a module computes in, and whether a half
precision runs on a device (some CPU builds lack fp16 kernels), refused in one line if not."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cotprompt.errors import ConfigError, one_line

__all__ = ["check_precision", "half_precision_problem", "matmul_dtype"]


def half_precision_problem(device: torch.device, dtype: torch.dtype) -> str | None:
    """``None`` when the operations of a CLIP forward run in ``dtype`` on ``device``, else the
    error of the first one that does not (a tiny probe: convolution, linear, layer norm,
    attention, GELU, softmax)."""
    try:
        x = torch.ones(1, 3, 4, 4, device=device, dtype=dtype)
        y = F.conv2d(x, x.new_ones(2, 3, 2, 2), stride=2).flatten(2).transpose(1, 2)  # [1, 4, 2]
        y = F.linear(y, y.new_ones(2, 2), y.new_ones(2))
        y = F.layer_norm(y.float(), (2,)).to(dtype)
        y = F.scaled_dot_product_attention(y[None], y[None], y[None], is_causal=True)[0]
        F.gelu(y).softmax(-1).sum().item()
    except (RuntimeError, NotImplementedError) as exc:
        return one_line(exc, 160)
    return None


def matmul_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of the first convolution / linear / attention weight of ``module`` (what its
    inputs must be cast to), or of its first floating parameter when it has none."""
    for sub in module.modules():
        if isinstance(sub, (nn.Conv2d, nn.Linear)):
            return sub.weight.dtype
        if isinstance(sub, nn.MultiheadAttention) and sub.in_proj_weight is not None:
            return sub.in_proj_weight.dtype
    for param in module.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32


def check_precision(
    device: torch.device,
    dtype: torch.dtype,
    precision: str,
    supported: set[tuple[str, torch.dtype]],
) -> None:
    """Refuse, in one line, a half precision that ``device``'s kernels lack.

    Args:
        device: Where the backbone's weights live.
        dtype: The dtype about to be computed in; fp32 always passes.
        precision: The backbone's ``precision`` option, named in the error.
        supported: The (device type, dtype) pairs already found to run; a pair that passes is
            added, so that each is probed once.

    Raises:
        ConfigError: ``dtype`` is half precision and one of the operations of a CLIP forward
            does not run in it on ``device`` (see :func:`half_precision_problem`).
    """
    key = (device.type, dtype)
    if dtype == torch.float32 or key in supported:
        return
    reason = half_precision_problem(device, dtype)
    if reason is not None:
        name = "fp16" if dtype == torch.float16 else "bf16"
        raise ConfigError(
            f"backbone precision {precision!r} needs {name} kernels that this "
            f"{device.type.upper()} lacks ({reason}); use precision 'fp32' (or "
            f"{'bf16' if name == 'fp16' else 'fp16'}), or run on a GPU"
        )
    supported.add(key)
