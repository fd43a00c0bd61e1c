"""The text tower's weights as the fast encoder uses them.

Layer scales are folded into the projections they follow, and under autocast the matmul weights
are cast to the autocast dtype once and kept while the frozen weights stay unchanged: autocast
caches its casts only for weights that require gradients, so it would cast the frozen tower's
weights again in every encoder call (on a CPU that cost about as much as bf16 matmuls save).
The cast values are the ones autocast itself would make.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

#: The fields of :class:`BlockWeights` that feed matmuls (cast once under autocast).
MATMUL_WEIGHTS = ("in_w", "in_b", "out_w", "out_b", "fc_w", "fc_b", "proj_w", "proj_b")


@dataclasses.dataclass
class BlockWeights:
    """One residual attention block: its layer norms, matmul weights ``[out, in]`` and biases
    (layer scales folded in), and its MLP activation (``act``: a kernel name, or ``"module"``
    to call ``act_module``)."""

    ln_1: nn.LayerNorm
    in_w: Tensor
    in_b: Tensor | None
    out_w: Tensor
    out_b: Tensor | None
    ln_2: nn.LayerNorm
    fc_w: Tensor
    fc_b: Tensor | None
    proj_w: Tensor
    proj_b: Tensor | None
    act: str
    act_module: nn.Module

    def cast(self, dtype: torch.dtype) -> BlockWeights:
        """A copy with the matmul weights and biases in ``dtype`` (no gradients)."""
        with torch.no_grad():
            fields = {name: getattr(self, name) for name in MATMUL_WEIGHTS}
            cast: dict[str, Any] = {name: None if w is None else w.to(dtype)
                                    for name, w in fields.items()}
        return dataclasses.replace(self, **cast)


def activation_name(module: nn.Module) -> str:
    """The fused-kernel name of an MLP activation module, or ``"module"``."""
    if type(module).__name__ == "QuickGELU":
        return "quick_gelu"
    if isinstance(module, nn.GELU):
        return "gelu_tanh" if module.approximate == "tanh" else "gelu"
    return "module"


def fold_scale(weight: Tensor, bias: Tensor | None, scale: nn.Module
               ) -> tuple[Tensor, Tensor | None]:
    """``ls(x @ W^T + b)`` -> ``x @ (g W)^T + g b`` for a LayerScale ``ls``."""
    gamma = getattr(scale, "gamma", None)
    if gamma is None:
        return weight, bias
    gamma = gamma.to(weight.dtype)
    return weight * gamma[:, None], None if bias is None else bias * gamma


class TowerWeights:
    """The weights of open_clip residual attention blocks, for a manual forward.

    Args:
        resblocks: The tower's ``transformer.resblocks``.
    """

    def __init__(self, resblocks: nn.ModuleList) -> None:
        self.resblocks: Any = resblocks  # open_clip's blocks (untyped attributes)
        self._cast: dict[torch.dtype, tuple[Any, list[BlockWeights]]] = {}

    def folded(self) -> list[BlockWeights]:
        """The blocks in the weights' own dtype, layer scales folded (built on every call, so
        that moving or changing the tower is always seen)."""
        out = []
        for block in self.resblocks:
            attn = block.attn
            out_w, out_b = fold_scale(attn.out_proj.weight, attn.out_proj.bias, block.ls_1)
            proj_w, proj_b = fold_scale(block.mlp.c_proj.weight, block.mlp.c_proj.bias, block.ls_2)
            out.append(
                BlockWeights(
                    ln_1=block.ln_1,
                    in_w=attn.in_proj_weight,
                    in_b=attn.in_proj_bias,
                    out_w=out_w,
                    out_b=out_b,
                    ln_2=block.ln_2,
                    fc_w=block.mlp.c_fc.weight,
                    fc_b=block.mlp.c_fc.bias,
                    proj_w=proj_w,
                    proj_b=proj_b,
                    act=activation_name(block.mlp.gelu),
                    act_module=block.mlp.gelu,
                )
            )
        return out

    def blocks(self, dtype: torch.dtype | None = None) -> list[BlockWeights]:
        """The blocks for a call whose autocast dtype is ``dtype`` (``None``: no autocast).

        Under autocast, the matmul weights come cast to ``dtype``, from a copy made once and
        kept until a weight changes (moved, loaded, edited in place). A tower whose weights
        require gradients gets its own weights: autocast casts and differentiates them.
        """
        if dtype is None or self.resblocks[0].attn.in_proj_weight.dtype == dtype:
            return self.folded()
        params = [p for block in self.resblocks for p in block.parameters()]
        if any(p.requires_grad for p in params):
            return self.folded()
        key = tuple((p.data_ptr(), p._version) for p in params)
        cached = self._cast.get(dtype)
        if cached is None or cached[0] != key:
            cached = self._cast[dtype] = (key, [blk.cast(dtype) for blk in self.folded()])
        return cached[1]
