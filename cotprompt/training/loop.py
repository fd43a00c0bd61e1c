"""The one training loop of every task: CPU, one GPU or several GPUs, through accelerate.

A task head (:mod:`cotprompt.pipeline.heads`) says what one run optimises as a
:class:`TrainingPlan` (items per epoch, how a batch of item indices becomes a loss, validation,
what identifies the run); :func:`run_training` runs it: writable folders checked first, the
global generators seeded, the optimiser built and a checkpoint resumed (:func:`setup_run`), then
the epochs (:func:`run_epochs`: learning-rate schedule, reproducible batch order, per-step
seeding, NaN guard, logging, checkpoints and callbacks).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from cotprompt.errors import TrainingError
from cotprompt.io import check_writable
from cotprompt.model import PromptModel
from cotprompt.training.accelerator import finish_trackers, log_epoch, start_trackers
from cotprompt.training.accelerator import make_accelerator as make_accelerator  # its old home
from cotprompt.training.checkpoint import (
    TrainingState,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from cotprompt.training.config import TrainingConfig
from cotprompt.training.schedule import epoch_batches, learning_rate
from cotprompt.training.seeding import seed_everything, seed_step

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger("cotprompt.training.trainer")  # the logger name users configure


@dataclass
class StepInfo:
    """Passed to step callbacks after every optimisation step."""

    global_step: int
    epoch: int
    loss: float
    lr: float


@dataclass
class TrainingResult:
    """What :meth:`CoTPipeline.fit` returns.

    Attributes:
        history: One dict per epoch (``epoch``, ``loss``, ``lr``, ``seconds`` and validation
            metrics when a validation set was given).
        global_step: Optimisation steps done.
        seconds: Wall time of this call.
        features_cached: Whether frozen image features were computed once.
        checkpoint: The last checkpoint written, if any.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    global_step: int = 0
    seconds: float = 0.0
    features_cached: bool = False
    checkpoint: Path | None = None


def make_optimizer(config: TrainingConfig, params: list[Tensor]) -> torch.optim.Optimizer:
    """SGD with momentum (CoOp's recipe) or AdamW."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def run_record(
    model: PromptModel, config: TrainingConfig, extra: dict[str, Any]
) -> dict[str, Any]:
    """What identifies a run: the training options that change its result, the trainable
    parameters' shapes and ``extra`` (labels, components, task). Stored in checkpoints, so that
    a resume of another run names the options that differ."""
    shapes = {name: list(p.shape) for name, p in model.trainable_state().items()}
    relevant = config.model_dump(exclude={
        "checkpoint_dir", "checkpoint_every", "keep_checkpoints", "progress", "log_every",
        "num_workers", "feature_cache_dir", "gradient_accumulation_steps", "log_with",
        "project_dir", "tracker_project", "run_name", "tracker_config"})
    steps = config.gradient_accumulation_steps
    if steps is not None and steps != 1:  # recorded only when it changes the run (old records)
        relevant["gradient_accumulation_steps"] = steps
    return json.loads(json.dumps({"config": relevant, "shapes": shapes, **extra}, sort_keys=True))


def fingerprint_of(record: dict[str, Any]) -> str:
    """A short hash of a :func:`run_record`."""
    blob = json.dumps(record, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_fingerprint(model: PromptModel, config: TrainingConfig, extra: dict[str, Any]) -> str:
    """Identifies a run, so that a checkpoint is only resumed by the same run."""
    return fingerprint_of(run_record(model, config, extra))


@dataclass
class Run:
    """What one training run optimises, from :func:`setup_run`.

    Attributes:
        model: The model, as prepared by accelerate when ``prepare_model`` was set.
        optimizer: The optimiser, prepared by accelerate.
        params: The trainable tensors by name (what checkpoints hold).
        fingerprint: Identifies the run (see :func:`run_fingerprint`).
        state: Where the run stands: fresh, or as loaded from a checkpoint.
        record: What the fingerprint is computed from (see :func:`run_record`).
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    params: dict[str, Tensor]
    fingerprint: str
    state: TrainingState
    record: dict[str, Any] = field(default_factory=dict)


def setup_run(
    model: PromptModel,
    config: TrainingConfig,
    accelerator: Accelerator,
    *,
    resume_from: str | Path | None = None,
    fingerprint_extra: dict[str, Any] | None = None,
    prepare_model: bool = True,
) -> Run:
    """Build the optimiser, load a checkpoint to resume from, and prepare both with accelerate.

    Args:
        model: Its trainable tensors are optimised.
        config: Optimiser options and the checkpoint folder.
        accelerator: An accelerate ``Accelerator``.
        resume_from: A checkpoint folder, a folder of checkpoints, or ``"latest"``.
        fingerprint_extra: What identifies the run besides options and parameter shapes.
        prepare_model: Pass the model through ``accelerator.prepare`` too (classification,
            whose loss calls the model); the tasks call its parts directly.

    Returns:
        The :class:`Run`.

    Raises:
        TrainingError: No trainable parameters, or a checkpoint of another run.
    """
    params = model.trainable_state()
    if not params:
        raise TrainingError("the pipeline has no trainable parameters")
    optimizer = make_optimizer(config, list(params.values()))
    # the steps the accelerator accumulates over, also when the launcher chose them
    steps = {"gradient_accumulation_steps": accelerator.gradient_accumulation_steps}
    record = run_record(model, config.model_copy(update=steps), fingerprint_extra or {})
    fingerprint = fingerprint_of(record)
    state = TrainingState()
    if resume_from is not None:
        path = resolve_checkpoint(resume_from, config.checkpoint_dir)
        state = load_checkpoint(path, params, optimizer, fingerprint, record)
    if prepare_model:
        prepared, optimizer = accelerator.prepare(model, optimizer)
    else:
        prepared, optimizer = model, accelerator.prepare(optimizer)
    return Run(prepared, optimizer, params, fingerprint, state, record)


def _load_indices(todo: list[list[int]], epoch: int) -> Iterable[Any]:
    return iter(todo)


def run_epochs(
    run: Run,
    config: TrainingConfig,
    accelerator: Accelerator,
    *,
    num_samples: int,
    step_loss: Callable[[Any, int], Tensor],
    load: Callable[[list[list[int]], int], Iterable[Any]] = _load_indices,
    validate: Callable[[], dict[str, float]] | None = None,
    callbacks: Sequence[Callable[[StepInfo], None]] = (),
    started: float | None = None,
) -> TrainingResult:
    """The training loop shared by classification and the tasks.

    Every epoch sets the learning rate, takes the epoch's batches from
    :func:`~cotprompt.training.schedule.epoch_batches` (from the resumed step on) in
    optimisation steps of ``accelerator.gradient_accumulation_steps`` batches, and for each
    batch seeds torch's generators (:func:`~cotprompt.training.seeding.seed_step`), computes
    the loss, refuses a non-finite one and accumulates its gradients
    (``accelerator.accumulate``); the optimiser steps on their mean. After every step it logs,
    writes checkpoints and calls the callbacks, and it records the epoch (with validation
    metrics; its loss is the mean over all of its batches, also those done before a resume),
    also to the accelerator's trackers.

    Args:
        run: From :func:`setup_run`; its ``state`` advances.
        config: Epochs, batch size, schedule, logging and checkpoint options.
        accelerator: The accelerate ``Accelerator`` of :func:`setup_run`.
        num_samples: Items per epoch.
        step_loss: ``(item, epoch) -> scalar loss`` with gradients for one item of ``load``;
            it runs its forward pass under ``accelerator.autocast()`` itself.
        load: ``(batches, epoch) ->`` one item per batch, in order, from the epoch's remaining
            batches (lists of item indices; default: the index lists themselves); an iterator
            with a ``close`` method (a generator) is closed when the epoch ends early (an
            error, an interrupt), so that what it holds open (loader workers) stops.
        validate: Called after every epoch, in eval mode; its metrics join the epoch's record.
        callbacks: Called with a :class:`StepInfo` after every optimisation step.
        started: ``time.perf_counter()`` when the call began (default: now).

    Returns:
        The :class:`TrainingResult` (``features_cached`` left for the caller to set).

    Raises:
        TrainingError: A non-finite loss.
    """
    cfg, state, optimizer, params = config, run.state, run.optimizer, run.params
    started = time.perf_counter() if started is None else started
    if cfg.epochs <= cfg.warmup_epochs:
        logger.warning("epochs (%d) <= warmup_epochs (%d): the whole run trains at the warm-up "
                       "rate %g; raise epochs or set warmup_epochs: 0", cfg.epochs,
                       cfg.warmup_epochs, cfg.warmup_lr)
    accumulate = accelerator.gradient_accumulation_steps
    num_steps = len(_steps(epoch_batches(num_samples, cfg.batch_size, cfg.seed, 0, cfg.drop_last),
                           accumulate))
    show = cfg.progress and accelerator.is_local_main_process and not progress_disabled()
    bar = tqdm(total=cfg.epochs * num_steps, initial=state.global_step, desc="training",
               disable=not show)
    last_checkpoint = None
    for tensor in params.values():
        tensor.grad = None
    run.model.train()
    items: Iterator[Any] | None = None
    try:
        for epoch in range(state.epoch, cfg.epochs):
            lr = learning_rate(cfg, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            steps = _steps(epoch_batches(num_samples, cfg.batch_size, cfg.seed, epoch,
                                         cfg.drop_last), accumulate)
            first = state.step_in_epoch if epoch == state.epoch else 0
            if first == 0:
                state.epoch_losses = []
            losses = state.epoch_losses  # with those done before a resume mid-epoch
            epoch_started = time.perf_counter()
            items = iter(load([batch for step in steps[first:] for batch in step], epoch))
            for step_in_epoch, step in enumerate(steps[first:], start=first):
                step_losses = _optimisation_step(run, cfg, accelerator, step_loss, items,
                                                 len(step), epoch, state.global_step)
                state.global_step += 1
                state.epoch, state.step_in_epoch = epoch, step_in_epoch + 1
                losses.extend(step_losses)
                loss = sum(step_losses) / len(step_losses)
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                if state.global_step % cfg.log_every == 0:
                    logger.info("step %d, epoch %d/%d: loss %.4f, lr %.2e", state.global_step,
                                epoch + 1, cfg.epochs, loss, lr)
                if cfg.checkpoint_every and state.global_step % cfg.checkpoint_every == 0:
                    last_checkpoint = _checkpoint(run, cfg, accelerator)
                for callback in callbacks:
                    callback(StepInfo(state.global_step, epoch, loss, lr))
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": (sum(losses) / len(losses)) if losses else math.nan,
                "lr": lr,
                "seconds": time.perf_counter() - epoch_started,
            }
            if validate is not None:
                run.model.eval()
                record.update(validate())
                run.model.train()
            logger.info("%s", epoch_summary(record, cfg.epochs))
            log_epoch(accelerator, record)
            state.history.append(record)
            state.epoch, state.step_in_epoch, state.epoch_losses = epoch + 1, 0, []
    finally:
        # a kept exception (a notebook's sys.last_traceback) keeps this frame and so the
        # epoch's iterator alive: close it now rather than when it is collected
        close = getattr(items, "close", None)
        if callable(close):
            close()
        bar.close()
        run.model.eval()
    if cfg.checkpoint_dir and cfg.checkpoint_every:
        last_checkpoint = _checkpoint(run, cfg, accelerator)
    return TrainingResult(history=state.history, global_step=state.global_step,
                          seconds=time.perf_counter() - started, checkpoint=last_checkpoint)


def _steps(batches: list[list[int]], accumulate: int) -> list[list[list[int]]]:
    """The epoch's batches in optimisation steps of ``accumulate`` batches (the last one may
    have fewer)."""
    return [batches[i:i + accumulate] for i in range(0, len(batches), accumulate)]


def _optimisation_step(run: Run, cfg: TrainingConfig, accelerator: Accelerator,
                       step_loss: Callable[[Any, int], Tensor], items: Iterator[Any], size: int,
                       epoch: int, global_step: int) -> list[float]:
    """One optimiser step over the next ``size`` items of ``items`` (accelerate's gradient
    accumulation: the gradients of their losses are averaged, then the optimiser steps);
    returns each batch's loss (over all processes)."""
    accumulate = accelerator.gradient_accumulation_steps
    # accelerate steps the optimiser when its counter reaches a multiple of the accumulation
    # steps: starting it there makes a short last step of an epoch end with a step too
    accelerator.step = accumulate - size
    losses = []
    for index in range(size):
        item = next(items)
        seed_step(cfg.seed, global_step * accumulate + index, accelerator.process_index)
        with accelerator.accumulate(run.model):
            loss = step_loss(item, epoch)
            # the batch's loss over all processes: the one every process logs and checks,
            # so that a NaN on one stops them all
            shown = (loss.detach() if accelerator.num_processes == 1
                     else accelerator.reduce(loss.detach(), reduction="mean"))
            if not torch.isfinite(shown):
                raise TrainingError(
                    f"the loss became {shown.item()} at epoch {epoch + 1}, step "
                    f"{global_step + 1}; the parameters keep their last finite values (nothing "
                    "was updated with it). Lower the learning rate, use precision='fp32', or "
                    "resume from the last checkpoint"
                )
            # accelerate divides by the accumulation steps; a short step is a mean over fewer
            accelerator.backward(loss if size == accumulate else loss * (accumulate / size))
            if accelerator.sync_gradients:
                if cfg.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(list(run.params.values()), cfg.max_grad_norm)
                run.optimizer.step()
                run.optimizer.zero_grad(set_to_none=True)
        losses.append(shown.item())
    return losses


def progress_disabled() -> bool:
    """Whether ``TQDM_DISABLE`` in the environment turns progress bars off (``1``, ``true``,
    ``yes``, ``on``), read when a bar is made: a bar given ``disable=`` explicitly, as
    cotprompt's are, does not see tqdm's own reading of it (done once, at import)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in {"1", "true", "yes", "on"}


def _figure(value: Any) -> str:
    """A loss or metric with 4 significant digits (``0.6969``, ``81.25``; one decimal from
    10 000 up)."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.1f}" if abs(value) >= 1e4 else f"{value:.4g}"


def epoch_summary(record: dict[str, Any], epochs: int) -> str:
    """One epoch's history record as a log line: ``epoch 3/10: loss 0.6969, lr 1.00e-05,
    val_accuracy 81.25, 2.0 s`` (losses and metrics with 4 significant digits, the learning
    rate in ``%.2e``, seconds in ``%.1f``); the record itself is left as it is."""
    parts = [f"{key} {value:.2e}" if key == "lr" and isinstance(value, float)
             else f"{key} {_figure(value)}"
             for key, value in record.items() if key not in ("epoch", "seconds")]
    if isinstance(record.get("seconds"), (int, float)):
        parts.append(f"{record['seconds']:.1f} s")
    return f"epoch {record.get('epoch')}/{epochs}: " + ", ".join(parts)


def _checkpoint(run: Run, config: TrainingConfig, accelerator: Accelerator) -> Path | None:
    """Save ``run`` to ``config.checkpoint_dir`` from the main process; its path, else None."""
    if config.checkpoint_dir is None or not accelerator.is_main_process:
        return None
    return save_checkpoint(Path(config.checkpoint_dir), run.state, run.params, run.optimizer,
                           run.fingerprint, config.keep_checkpoints, run.record)


@dataclass
class TrainingPlan:
    """What one training run optimises, as a task head describes it.

    Attributes:
        num_items: Items per epoch (images, questions...); batches are lists of their indices.
        step_loss: ``(model, item, epoch) -> scalar loss`` with gradients, for one item of
            ``load``; ``model`` is the model as accelerate prepared it. It runs under
            ``accelerator.autocast()``.
        load: ``(batches, epoch) ->`` one item per batch, in order, from the epoch's remaining
            batches (default: the index lists themselves).
        validate: Called after every epoch in eval mode; its metrics join the epoch's record.
        fingerprint: What identifies the run besides the options, the parameter shapes and the
            components (labels, task, answer vocabulary...).
        features_cached: Whether frozen image features were computed once.
        prepare_model: Pass the model through ``accelerator.prepare`` (data parallel: the loss
            calls the model); heads that call its parts directly leave it unprepared.
        close: Called when the run ends, also when it fails: releases what the plan holds
            open (the worker processes of its loader).
    """

    num_items: int
    step_loss: Callable[[Any, Any, int], Tensor]
    load: Callable[[list[list[int]], int], Iterable[Any]] | None = None
    validate: Callable[[], dict[str, float]] | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)
    features_cached: bool = False
    prepare_model: bool = False
    close: Callable[[], None] | None = None


def check_output_folders(config: TrainingConfig) -> None:
    """Check that the checkpoint, feature-cache and tracker folders can be written: found before
    any work, not after hours of training.

    Raises:
        ConfigError: Naming the folder and why (not a folder, no permission, no space).
    """
    for folder, what in ((config.checkpoint_dir, "checkpoint folder"),
                         (config.feature_cache_dir, "feature cache folder"),
                         (config.project_dir, "tracker folder")):
        if folder is not None:
            check_writable(folder, what=what)


def run_training(
    model: PromptModel,
    config: TrainingConfig,
    accelerator: Accelerator,
    plan: TrainingPlan,
    *,
    resume_from: str | Path | None = None,
    callbacks: Sequence[Callable[[StepInfo], None]] = (),
    fingerprint_extra: dict[str, Any] | None = None,
    started: float | None = None,
) -> TrainingResult:
    """Run ``plan``: the training template every task goes through.

    Args:
        model: Its trainable tensors are optimised.
        config: Epochs, batch size, optimiser, schedule, checkpoints...
        accelerator: From :func:`make_accelerator`.
        plan: The head's :class:`TrainingPlan`.
        resume_from: A checkpoint folder, a folder of checkpoints, or ``"latest"``.
        callbacks: Called with a :class:`StepInfo` after every step.
        fingerprint_extra: Added to the plan's fingerprint (the components' records); its
            ``components`` (``{kind: record}``) also go to the trackers' hyperparameters.
        started: ``time.perf_counter()`` when the call began (default: now).

    Returns:
        The :class:`TrainingResult` (per-epoch history).

    Raises:
        TrainingError: No trainable parameters, a non-finite loss, or a checkpoint of another
            run.
        ConfigError: A checkpoint, feature-cache or tracker folder (``project_dir``) that
            cannot be written.
    """
    started = time.perf_counter() if started is None else started
    try:
        check_output_folders(config)
        seed_everything(config.seed)
        run = setup_run(model, config, accelerator, resume_from=resume_from,
                        fingerprint_extra={**plan.fingerprint, **(fingerprint_extra or {})},
                        prepare_model=plan.prepare_model)

        def step_loss(item: Any, epoch: int) -> Tensor:
            with accelerator.autocast():
                return plan.step_loss(run.model, item, epoch)

        name = start_trackers(accelerator, config,
                              components=(fingerprint_extra or {}).get("components"),
                              resumed=run.state.run_name)
        if name is not None:  # kept in the checkpoints: a resume goes on under this name
            run.state.run_name = name
        try:
            result = run_epochs(run, config, accelerator, num_samples=plan.num_items,
                                step_loss=step_loss, load=plan.load or _load_indices,
                                validate=plan.validate, callbacks=callbacks, started=started)
        finally:
            finish_trackers(accelerator)
    finally:
        if plan.close is not None:
            plan.close()
    result.features_cached = plan.features_cached
    return result
