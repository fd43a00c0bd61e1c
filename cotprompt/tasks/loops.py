"""What the retrieval and VQA heads share: checking the generator, binding stand-in labels,
encoding images for training and evaluation, and the soft cross-entropy.

Their training runs through the pipeline's one training template
(:func:`~cotprompt.training.loop.run_training`, driven by ``CoTPipeline.fit``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from cotprompt.data.records import ImageRecord, Transform
from cotprompt.data.task_io import PixelList, image_dataset
from cotprompt.errors import ConfigError
from cotprompt.pipeline.config import TASK_GENERATORS
from cotprompt.training.config import TrainingConfig
from cotprompt.training.loading import batch_progress, loader_options
from cotprompt.training.trainer import (
    Trainer,
)
from cotprompt.types import PromptChain, Task

if TYPE_CHECKING:
    from accelerate import Accelerator

    from cotprompt.pipeline import CoTPipeline


def check_generator(pipeline: CoTPipeline, kind: str) -> None:
    """Refuse a generator that does not write prompts for ``kind``.

    Raises:
        ConfigError: The generator does not list ``kind`` in its ``task_kinds``.
    """
    generator = pipeline.generator
    kinds = tuple(getattr(generator, "task_kinds", ("classification",)))
    if kind not in kinds:
        default = TASK_GENERATORS.get(kind, "?")
        written = " and ".join(repr(k) for k in kinds) or "no"
        raise ConfigError(
            f"the generator {getattr(generator, 'name', type(generator).__name__)!r} writes "
            f"prompts for the {written} task, not for the {kind!r} task; use a generator whose "
            f"task_kinds include {kind!r}, such as {default!r} (for example "
            f"cotprompt.tasks.for_task({kind!r}, 'cotpt', ...))"
        )


def class_specific(pipeline: CoTPipeline) -> bool:
    """Whether the tuner learns one context per label (``class_specific=true``)."""
    return bool(getattr(pipeline.tuner.config, "class_specific", False))


def bind_placeholder(pipeline: CoTPipeline, task: Task) -> None:
    """Bind the pipeline to ``task`` (its stand-in labels) unless it already is: this creates the
    parameters on first use and is what a saved artifact records."""
    current = pipeline.task
    if current is not None and current.kind == task.kind and current.labels == task.labels:
        return
    pipeline.set_classes(task)


def restore_binding(pipeline: CoTPipeline) -> None:
    """Re-bind the tuner to the pipeline's own chain after binding it to batch chains."""
    if pipeline.chain is not None:
        pipeline.tuner.bind(pipeline.backbone, pipeline.chain)


def generate(pipeline: CoTPipeline, task: Task) -> PromptChain:
    """The generator's chain for ``task``, with the tuner's step count checked."""
    chain = pipeline.generator.generate(task, pipeline.backbone)
    steps = getattr(pipeline.tuner, "num_steps", None)
    if steps is not None and chain.num_steps != steps:
        raise ConfigError(f"the tuner was trained with {steps} chain steps but the generator "
                          f"produced {chain.num_steps}")
    return chain


def cacheable(pipeline: CoTPipeline, config: TrainingConfig) -> bool:
    """Whether frozen image features can be computed once (as the classification trainer)."""
    return (config.cache_features and not config.augment
            and not pipeline.tuner.tunes_image_encoder)


def train_features(
    pipeline: CoTPipeline, records: Sequence[ImageRecord], config: TrainingConfig,
    accelerator: Accelerator,
) -> Tensor:
    """Normalised frozen features ``[N, E]`` of training images (the trainer's encoding, with its
    on-disk feature cache when ``feature_cache_dir`` is set)."""
    trainer = Trainer(pipeline.model, config, accelerator)
    transform = pipeline.backbone.image_transform(train=False)
    return trainer.encode_dataset(image_dataset(records, transform)).to(accelerator.device)


@torch.no_grad()
def eval_features(
    pipeline: CoTPipeline, records: Sequence[ImageRecord], batch_size: int,
    transform: Transform | None = None, num_workers: int = 0, pin_memory: bool | None = None,
    *, progress: bool = True,
) -> Tensor:
    """Normalised image features ``[N, E]`` for evaluation (evaluation transform), images loaded
    by ``num_workers`` worker processes into pinned memory when ``pin_memory`` (``None``: when
    the pipeline is on CUDA); with ``progress``, a progress bar over many batches."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    transform = transform or pipeline.backbone.image_transform(train=False)
    loader = eval_loader(PixelList(records, transform), pipeline.device, batch_size, num_workers,
                         pin_memory)
    pipeline.model.eval()
    parts = [pipeline.model.image_features(pixels.to(pipeline.device, non_blocking=True)).float()
             for pixels in batch_progress(loader, len(loader), "image features",
                                          enabled=progress)]
    return torch.cat(parts)


def eval_loader(dataset: Dataset[Any], device: torch.device, batch_size: int, num_workers: int,
                pin_memory: bool | None) -> DataLoader[Any]:
    """The ``DataLoader`` of an evaluation pass over ``dataset`` for a model on ``device``: in
    order, ``num_workers`` workers (no more than there are batches), pinned memory when
    ``pin_memory`` (``None``: when ``device`` is CUDA)."""
    batches = -(-len(dataset) // batch_size)  # type: ignore[arg-type]
    return DataLoader(dataset, batch_size=batch_size, shuffle=False,
                      **loader_options(num_workers, device, num_batches=batches,
                                       pin_memory=pin_memory))


def frozen_val_features(pipeline: CoTPipeline, records: Sequence[ImageRecord],
                        transform: Transform | None) -> Tensor | None:
    """Validation image features ``[N, E]`` encoded once, before training; ``None`` when the
    tuner tunes the image encoder (its features change every step: see
    :func:`current_val_features`)."""
    if pipeline.tuner.tunes_image_encoder:
        return None
    return eval_features(pipeline, records, 64, transform, progress=False)


def current_val_features(pipeline: CoTPipeline, frozen: Tensor | None,
                         records: Sequence[ImageRecord], transform: Transform | None) -> Tensor:
    """The validation features to score now: the frozen ones, or the images encoded again with
    the image encoder as tuned so far."""
    if frozen is not None:
        return frozen
    return eval_features(pipeline, records, 64, transform, progress=False)  # the training's bar


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy with probability targets: ``[B, C]`` logits, ``[B, C]`` rows summing to 1."""
    return F.cross_entropy(logits.float(), targets.to(logits.device, torch.float32))


