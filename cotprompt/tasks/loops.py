"""The training loop of the retrieval and VQA tasks, and what their modules share.

The loop is the classification trainer's (:func:`~cotprompt.training.trainer.setup_run` and
:func:`~cotprompt.training.trainer.run_epochs`: same optimiser, learning-rate schedule, batch
order, checkpoints and NaN guard); the task gives the loss: ``loss_fn(batch, epoch)`` gets the
dataset indices of one batch (from :func:`~cotprompt.training.schedule.epoch_batches`) and returns
a scalar loss with gradients.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from cotprompt.data.records import ImageRecord, Transform
from cotprompt.errors import ConfigError, TrainingError
from cotprompt.tasks._io import PixelList, image_dataset
from cotprompt.training.config import TrainingConfig, merge_training
from cotprompt.training.seeding import redraw_untrained, seed_everything
from cotprompt.training.trainer import (
    StepInfo,
    Trainer,
    TrainingResult,
    make_accelerator,
    run_epochs,
    setup_run,
)
from cotprompt.types import PromptChain, Task

if TYPE_CHECKING:
    from cotprompt.pipeline.core import CoTPipeline

LossFn = Callable[[list[int], int], Tensor]


def resolve_training(
    pipeline: CoTPipeline, training: TrainingConfig | Mapping[str, Any] | None
) -> TrainingConfig:
    """The options of one ``fit`` call: the pipeline's, updated by the keys of a mapping (or
    replaced by a ``TrainingConfig``); see :func:`~cotprompt.training.config.merge_training`."""
    return merge_training(pipeline.training, training)


def check_generator(pipeline: CoTPipeline, kind: str) -> None:
    """Refuse a generator that does not write prompts for ``kind``.

    Raises:
        ConfigError: The generator does not list ``kind`` in its ``task_kinds``.
    """
    generator = pipeline.generator
    if kind not in tuple(getattr(generator, "task_kinds", ())):
        default = {"retrieval": "caption", "vqa": "question-answer"}.get(kind, "?")
        raise ConfigError(
            f"the generator {getattr(generator, 'name', type(generator).__name__)!r} writes "
            f"prompts for class names, not for the {kind!r} task; use a generator whose "
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


def task_accelerator(config: TrainingConfig) -> Any:
    """An accelerate ``Accelerator`` for one process.

    Raises:
        TrainingError: Launched on several processes (the task losses are not sharded).
    """
    accelerator = make_accelerator(config.precision)
    if accelerator.num_processes > 1:
        raise TrainingError(
            "retrieval and VQA training run in one process; launch without accelerate's "
            "multi-process mode"
        )
    return accelerator


def cacheable(pipeline: CoTPipeline, config: TrainingConfig) -> bool:
    """Whether frozen image features can be computed once (as the classification trainer)."""
    return (config.cache_features and not config.augment
            and not pipeline.tuner.tunes_image_encoder)


def train_features(
    pipeline: CoTPipeline, records: Sequence[ImageRecord], config: TrainingConfig,
    accelerator: Any,
) -> Tensor:
    """Normalised frozen features ``[N, E]`` of training images (the trainer's encoding, with its
    on-disk feature cache when ``feature_cache_dir`` is set)."""
    trainer = Trainer(pipeline.model, config, accelerator)
    transform = pipeline.backbone.image_transform(train=False)
    return trainer.encode_dataset(image_dataset(records, transform)).to(accelerator.device)


@torch.no_grad()
def eval_features(
    pipeline: CoTPipeline, records: Sequence[ImageRecord], batch_size: int,
    transform: Transform | None = None,
) -> Tensor:
    """Normalised image features ``[N, E]`` for evaluation (evaluation transform)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    transform = transform or pipeline.backbone.image_transform(train=False)
    loader = DataLoader(PixelList(records, transform), batch_size=batch_size, shuffle=False)
    pipeline.model.eval()
    parts = [pipeline.model.image_features(pixels.to(pipeline.device)).float()
             for pixels in loader]
    return torch.cat(parts)


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy with probability targets: ``[B, C]`` logits, ``[B, C]`` rows summing to 1."""
    return F.cross_entropy(logits.float(), targets.to(logits.device, torch.float32))


def run_loop(
    pipeline: CoTPipeline,
    config: TrainingConfig,
    accelerator: Any,
    *,
    num_items: int,
    loss_fn: LossFn,
    validate: Callable[[], dict[str, float]] | None = None,
    resume_from: str | Path | None = None,
    callbacks: Sequence[Callable[[StepInfo], None]] = (),
    fingerprint_extra: dict[str, Any] | None = None,
) -> TrainingResult:
    """Optimise the pipeline's trainable tensors over ``num_items`` items with the trainer's
    loop (:func:`~cotprompt.training.trainer.run_epochs`), ``loss_fn`` under autocast.

    Args:
        pipeline: Bound to its task; its tuner and aggregator are trained.
        config: Epochs, batch size, optimiser, schedule, checkpoints...
        accelerator: From :func:`task_accelerator`.
        num_items: Items per epoch (images for retrieval, questions for VQA).
        loss_fn: ``(batch indices, epoch) -> scalar loss``.
        validate: Called after every epoch; its metrics go into the epoch's history record.
        resume_from: A checkpoint folder, a folder of checkpoints, or ``"latest"``.
        callbacks: Called with a :class:`StepInfo` after every step.
        fingerprint_extra: What identifies the run besides options and parameter shapes.

    Returns:
        The :class:`TrainingResult` (per-epoch history).

    Raises:
        TrainingError: No trainable parameters, a non-finite loss, or a foreign checkpoint.
    """
    started = time.perf_counter()
    if resume_from is None:  # untrained parameters drawn with another seed: the run's draws
        redraw_untrained(pipeline, config.seed)
    seed_everything(config.seed)
    run = setup_run(pipeline.model, config, accelerator, resume_from=resume_from,
                    fingerprint_extra=fingerprint_extra, prepare_model=False)

    def step_loss(batch: list[int], epoch: int) -> Tensor:
        with accelerator.autocast():
            return loss_fn(batch, epoch)

    return run_epochs(run, config, accelerator, num_samples=num_items, step_loss=step_loss,
                      validate=validate, callbacks=callbacks, started=started)
