"""Turning what users pass to ``predict`` (paths, PIL images, tensors) into pixel batches."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from cotprompt.data.images import load_image, to_rgb
from cotprompt.errors import DataError

ImageLike = str | os.PathLike | Image.Image
ImagesInput = ImageLike | Sequence[ImageLike] | Tensor


def as_image_list(images: ImagesInput) -> list[ImageLike] | Tensor:
    """A list of paths / PIL images, or a ``[B, 3, H, W]`` pixel tensor."""
    if isinstance(images, Tensor):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[1] != 3:
            raise DataError(
                "pixel tensors must be [B, 3, H, W] (preprocessed); "
                f"got shape {tuple(images.shape)}"
            )
        return images
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images]
    items = list(images)
    if not items:
        raise DataError("no images given")
    for item in items:
        if not isinstance(item, (str, os.PathLike, Image.Image)):
            raise DataError(
                f"cannot read an image from a {type(item).__name__}; pass paths, PIL images or a "
                "[B, 3, H, W] tensor"
            )
    return items


def read_image(item: ImageLike) -> Image.Image:
    """One path or PIL image as the RGB image the model sees (:func:`~cotprompt.data.images.
    load_image` / :func:`~cotprompt.data.images.to_rgb`).

    Raises:
        DataError: The image cannot be read or shown; the message names it.
    """
    return to_rgb(item) if isinstance(item, Image.Image) else load_image(Path(item))


def pixel_batches(
    images: list[ImageLike] | Tensor, transform: Callable[[Any], Tensor], batch_size: int
) -> Iterator[Tensor]:
    """Yield ``[b, 3, H, W]`` batches (images loaded and transformed lazily)."""
    if isinstance(images, Tensor):
        yield from images.split(batch_size)
        return
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        yield torch.stack([transform(read_image(item)) for item in chunk])
