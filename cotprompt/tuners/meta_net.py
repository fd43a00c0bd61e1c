"""Meta-nets: small networks that turn an image feature into a context shift."""

from __future__ import annotations

from torch import Tensor, nn


class MetaNet(nn.Module):
    """CoCoOp's meta-net: ``Linear(E, E // r) -> ReLU -> Linear(E // r, W)``.

    The output is one bias vector per image, added to every context vector.

    Args:
        embed_dim: E, the image feature dimension.
        width: W, the text token width.
        reduction: r, CoCoOp uses 16.
    """

    def __init__(self, embed_dim: int, width: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, embed_dim // reduction)
        self.linear1 = nn.Linear(embed_dim, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.linear2 = nn.Linear(hidden, width)

    def forward(self, image_features: Tensor) -> Tensor:
        """``[B, E]`` -> ``[B, W]``."""
        return self.linear2(self.relu(self.linear1(image_features)))


class ChainLink(nn.Module):
    """Projects step k-1's context shift into step k's meta-net input (Meta-Nets Chaining).

    Zero-initialised, so an untrained chain behaves like independent CoCoOp steps.
    (Reconstruction: the CoT-PT paper's exact chaining function is not published.)

    Args:
        width: W, the size of the previous step's shift.
        embed_dim: E, the meta-net input size.
    """

    def __init__(self, width: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(width, embed_dim, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, image_features: Tensor, previous_shift: Tensor) -> Tensor:
        """``[B, E]``, ``[B, W]`` -> ``[B, E]`` meta-net input of the next step."""
        return image_features + self.proj(previous_shift)
