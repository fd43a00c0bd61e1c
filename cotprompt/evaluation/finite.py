"""Refusing scores that are not finite, rather than turning them into labels or accuracies."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from cotprompt.errors import NumericalError


def check_finite_scores(
    logits: Tensor,
    describe: Callable[[int], str | None],
    *,
    total: int,
    zero_shot: bool,
    offset: int = 0,
    consequence: str = "",
) -> None:
    """Refuse NaN/Inf logits ``[B, C]`` rather than turn them into a label or an accuracy.

    Args:
        logits: The scores of a batch.
        describe: Batch row -> a name for the image (a path), or ``None``.
        total: The number of images in the whole request (named in the message).
        zero_shot: Whether the untuned classifier produced them (names the cause).
        offset: Index of the batch's first image in the request.
        consequence: Appended to the message.

    Raises:
        NumericalError: Naming up to three images whose scores are not finite.
    """
    bad = (~torch.isfinite(logits).all(dim=-1)).nonzero().flatten().tolist()
    if not bad:
        return
    shown = []
    for i in bad[:3]:
        name = describe(i)
        shown.append(f"image {offset + i} ({name})" if name else f"image {offset + i}")
    more = f" and {len(bad) - len(shown)} more" if len(bad) > len(shown) else ""
    cause = "the backbone produces" if zero_shot else "the prompts or the backbone produce"
    raise NumericalError(
        f"non-finite scores for {', '.join(shown)}{more} (of {total} images): {cause} NaN/Inf"
        f"{consequence}"
    )
