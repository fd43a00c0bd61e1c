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
from torch.utils.data import DataLoader, Dataset

from cotprompt.errors import ConfigError, DataError
from cotprompt.pipeline.inputs import ImageLike, read_image
from cotprompt.training.loading import batch_progress, check_loader_options, loader_options

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



def check_predict_options(on_bad_image: object, batch_size: object, num_workers: object,
                          pin_memory: object = None) -> None:
    """What ``CoTPipeline.predict`` checks before any work.

    Raises:
        ConfigError: ``on_bad_image`` not ``"error"`` or ``"skip"``, a batch size below 1, or
            bad loader options (:func:`~cotprompt.training.loading.check_loader_options`).
    """
    if on_bad_image not in ("error", "skip"):
        raise ConfigError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    check_loader_options(num_workers, pin_memory)


class ReadableImages(Dataset):
    """``images[i]`` is ``(i, transform(image) or None, error or None)``: an image that cannot be
    read is returned as its :class:`~cotprompt.errors.DataError`, so that the caller (in the
    main process, whichever worker read it) raises or skips it."""

    def __init__(self, items: Sequence[ImageLike], transform: Callable[[Any], Tensor]) -> None:
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, Tensor | None, DataError | None]:
        try:
            image = read_image(self.items[index])
        except DataError as exc:
            return index, None, exc
        return index, self.transform(image), None


def collate_readable(
    samples: list[tuple[int, Tensor | None, DataError | None]],
) -> tuple[list[int], Tensor | None, list[tuple[int, DataError]]]:
    """A batch of :class:`ReadableImages` samples: the indices and ``[b, 3, H, W]`` pixels of
    the images read (``None`` if none was), and the errors of the others by index."""
    indices = [i for i, pixels, _ in samples if pixels is not None]
    pixels = [p for _, p, _ in samples if p is not None]
    errors = [(i, error) for i, _, error in samples if error is not None]
    return indices, (torch.stack(pixels) if pixels else None), errors


def readable_batches(
    items: Sequence[ImageLike], transform: Callable[[Any], Tensor], batch_size: int,
    on_bad_image: OnBadImage, num_workers: int = 0, pin_memory: bool | None = None,
    device: torch.device | str | None = None,
) -> Iterator[tuple[list[int], Tensor]]:
    """Yield ``(indices, [b, 3, H, W] pixels)`` of the images that can be read, ``batch_size``
    images at a time (decoded and shown once, as evaluation reads them), by ``num_workers``
    worker processes (``0``: in this process) into pinned memory when ``pin_memory`` (``None``:
    when ``device`` is CUDA); a progress bar over many batches.

    Raises:
        DataError: An image cannot be read (``on_bad_image="error"``), or none can.
    """
    options = loader_options(num_workers, device, num_batches=-(-len(items) // batch_size),
                             pin_memory=pin_memory)
    loader = DataLoader(ReadableImages(items, transform), batch_size=batch_size, shuffle=False,
                        collate_fn=collate_readable, **options)
    read = 0
    for indices, pixels, errors in batch_progress(loader, len(loader), "images"):
        for index, error in errors:
            if on_bad_image == "error":
                raise error
            logger.warning("skipping image %d: %s", index, error)
        if pixels is not None:
            read += len(indices)
            yield indices, pixels
    if not read:
        raise DataError(f"none of the {len(items)} image(s) could be read")
    if read < len(items):
        logger.warning("skipped %d of %d image(s) that could not be read", len(items) - read,
                       len(items))


def readable_features(
    items: Sequence[ImageLike], transform: Callable[[Any], Tensor],
    encode: Callable[[Tensor], Tensor], batch_size: int, on_bad_image: OnBadImage,
    num_workers: int = 0, pin_memory: bool | None = None,
    device: torch.device | str | None = None,
) -> tuple[list[int], Tensor]:
    """The indices of the images that can be read and ``encode`` of their pixels, ``[n, E]``
    (:func:`readable_batches`, one batch at a time).

    Raises:
        DataError: An image cannot be read (``on_bad_image="error"``), or none can.
    """
    kept: list[int] = []
    parts = []
    for indices, pixels in readable_batches(items, transform, batch_size, on_bad_image,
                                            num_workers, pin_memory, device):
        kept += indices
        parts.append(encode(pixels))
    return kept, torch.cat(parts)


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
