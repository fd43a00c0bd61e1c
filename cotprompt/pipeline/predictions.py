"""What ``CoTPipeline.predict`` returns, and how it reads the images it is given: one batch in
memory at a time, unreadable images raised or skipped."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from cotprompt.errors import DataError
from cotprompt.pipeline.inputs import ImageLike, read_image

logger = logging.getLogger("cotprompt.pipeline")  # the logger name users configure

OnBadImage = Literal["error", "skip"]


@dataclass(frozen=True)
class Prediction:
    """One image's prediction.

    Attributes:
        label: The most likely label.
        index: Its index in the pipeline's labels.
        score: Its softmax probability.
        top_k: ``(label, probability)`` pairs, most likely first.
    """

    label: str
    index: int
    score: float
    top_k: tuple[tuple[str, float], ...]



def readable_batches(
    items: Sequence[ImageLike], transform: Callable[[Any], Tensor], batch_size: int,
    on_bad_image: OnBadImage,
) -> Iterator[tuple[list[int], Tensor]]:
    """Yield ``(indices, [b, 3, H, W] pixels)`` of the images that can be read, ``batch_size``
    images at a time (decoded and shown once, as evaluation reads them).

    Raises:
        DataError: An image cannot be read (``on_bad_image="error"``), or none can.
    """
    read = 0
    for start in range(0, len(items), batch_size):
        indices, batch = [], []
        for index in range(start, min(start + batch_size, len(items))):
            try:
                image = read_image(items[index])
            except DataError as exc:
                if on_bad_image == "error":
                    raise
                logger.warning("skipping image %d: %s", index, exc)
                continue
            batch.append(transform(image))
            indices.append(index)
        if batch:
            read += len(batch)
            yield indices, torch.stack(batch)
    if not read:
        raise DataError(f"none of the {len(items)} image(s) could be read")
    if read < len(items):
        logger.warning("skipped %d of %d image(s) that could not be read", len(items) - read,
                       len(items))


def describe_item(item: object) -> str | None:
    """A name for an image in messages: its path, or the file a PIL image was read from."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    return getattr(item, "filename", None) or None


def rank_predictions(probs: Tensor, labels: Sequence[str], top_k: int, rows: Sequence[int],
                     total: int) -> list[Prediction | None]:
    """One :class:`Prediction` per row of ``probs`` ``[R, C]``, placed at ``rows`` in a list of
    ``total`` (``None`` elsewhere: skipped images)."""
    k = max(1, min(top_k, len(labels)))
    values, indices = probs.topk(k, dim=-1)
    out: list[Prediction | None] = [None] * total
    for row, (vals, idxs) in enumerate(zip(values.tolist(), indices.tolist(), strict=True)):
        ranked = tuple((labels[i], float(v)) for i, v in zip(idxs, vals, strict=True))
        out[rows[row]] = Prediction(label=labels[idxs[0]], index=idxs[0], score=vals[0],
                                    top_k=ranked)
    return out
