"""The training loop of the retrieval and VQA tasks, and what their modules share.

The loop mirrors :class:`cotprompt.training.trainer.Trainer` (same optimiser, learning-rate
schedule, batch order, checkpoints and NaN guard, built from the same helpers) but leaves the
loss to the task: ``loss_fn(batch, epoch)`` gets the dataset indices of one batch (from
:func:`~cotprompt.training.schedule.epoch_batches`) and returns a scalar loss with gradients.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cotprompt.data.records import ImageRecord, Transform
from cotprompt.errors import ConfigError, TrainingError
from cotprompt.tasks._io import PixelList, image_dataset
from cotprompt.training.checkpoint import (
    TrainingState,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from cotprompt.training.config import TrainingConfig
from cotprompt.training.schedule import epoch_batches, learning_rate
from cotprompt.training.trainer import (
    StepInfo,
    Trainer,
    TrainingResult,
    make_accelerator,
    make_optimizer,
    run_fingerprint,
)
from cotprompt.types import PromptChain, Task

if TYPE_CHECKING:
    from cotprompt.pipeline import CoTPipeline

logger = logging.getLogger(__name__)

LossFn = Callable[[list[int], int], Tensor]


def resolve_training(
    pipeline: CoTPipeline, training: TrainingConfig | Mapping[str, Any] | None
) -> TrainingConfig:
    """The options of one ``fit`` call (default: the pipeline's)."""
    if isinstance(training, Mapping):
        return TrainingConfig.model_validate(training)
    return training or pipeline.training


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
    """Optimise the pipeline's trainable tensors over ``num_items`` items.

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
    cfg = config
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = pipeline.model
    params = model.trainable_state()
    if not params:
        raise TrainingError("the pipeline has no trainable parameters")
    optimizer = make_optimizer(cfg, list(params.values()))
    fingerprint = run_fingerprint(model, cfg, fingerprint_extra or {})
    state = TrainingState()
    if resume_from is not None:
        path = resolve_checkpoint(resume_from, cfg.checkpoint_dir)
        state = load_checkpoint(path, params, optimizer, fingerprint)
    optimizer = accelerator.prepare(optimizer)
    num_batches = len(epoch_batches(num_items, cfg.batch_size, cfg.seed, 0, cfg.drop_last))
    show = cfg.progress and accelerator.is_local_main_process
    bar = tqdm(total=cfg.epochs * num_batches, initial=state.global_step, desc="training",
               disable=not show)
    result = TrainingResult(history=list(state.history))
    last_checkpoint = None
    model.train()
    try:
        for epoch in range(state.epoch, cfg.epochs):
            lr = learning_rate(cfg, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batches = epoch_batches(num_items, cfg.batch_size, cfg.seed, epoch, cfg.drop_last)
            first = state.step_in_epoch if epoch == state.epoch else 0
            losses: list[float] = []
            epoch_started = time.perf_counter()
            for step_in_epoch in range(first, len(batches)):
                with accelerator.autocast():
                    loss = loss_fn(batches[step_in_epoch], epoch)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"the loss became {loss.item()} at epoch {epoch + 1}, step "
                        f"{state.global_step + 1}; the parameters keep their last finite values. "
                        "Lower the learning rate, use precision='fp32', or resume from the last "
                        "checkpoint"
                    )
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                if cfg.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(list(params.values()), cfg.max_grad_norm)
                optimizer.step()
                state.global_step += 1
                state.epoch, state.step_in_epoch = epoch, step_in_epoch + 1
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}")
                if state.global_step % cfg.log_every == 0:
                    logger.info("step %d epoch %d loss %.4f lr %.3g", state.global_step,
                                epoch + 1, losses[-1], lr)
                if cfg.checkpoint_dir and cfg.checkpoint_every and (
                    state.global_step % cfg.checkpoint_every == 0
                ):
                    last_checkpoint = save_checkpoint(
                        Path(cfg.checkpoint_dir), state, params, optimizer, fingerprint,
                        cfg.keep_checkpoints,
                    )
                for callback in callbacks:
                    callback(StepInfo(state.global_step, epoch, losses[-1], lr))
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": (sum(losses) / len(losses)) if losses else math.nan,
                "lr": lr,
                "seconds": time.perf_counter() - epoch_started,
            }
            if validate is not None:
                model.eval()
                record.update(validate())
                model.train()
            logger.info("epoch %d: %s", epoch + 1, record)
            state.history.append(record)
            state.epoch, state.step_in_epoch = epoch + 1, 0
    finally:
        bar.close()
        model.eval()
    if cfg.checkpoint_dir and cfg.checkpoint_every:
        last_checkpoint = save_checkpoint(
            Path(cfg.checkpoint_dir), state, params, optimizer, fingerprint, cfg.keep_checkpoints
        )
    result.history = state.history
    result.global_step = state.global_step
    result.seconds = time.perf_counter() - started
    result.checkpoint = last_checkpoint
    return result
