"""The training loop: one loop for CPU, one GPU and several GPUs, through accelerate.

:func:`setup_run` and :func:`run_epochs` are the loop itself, shared by :class:`Trainer`
(classification: cross-entropy over cached features or pixels) and the retrieval and VQA tasks
(:mod:`cotprompt.tasks.loops`), which pass their own per-batch loss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cotprompt.data.records import ImageClassificationDataset
from cotprompt.errors import TrainingError
from cotprompt.io import check_writable
from cotprompt.model import PromptModel
from cotprompt.training.augment import EpochSamples
from cotprompt.training.checkpoint import (
    TrainingState,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from cotprompt.training.config import TrainingConfig
from cotprompt.training.schedule import epoch_batches, learning_rate
from cotprompt.training.seeding import (
    loader_generator,
    seed_everything,
    seed_step,
)

logger = logging.getLogger(__name__)


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


def make_accelerator(precision: str) -> Any:
    """An ``accelerate.Accelerator`` for the precision (``auto``: bf16 on a capable GPU)."""
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not cuda:
        raise TrainingError("precision='fp16' needs a GPU; use 'fp32' or 'bf16' on the CPU")
    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    return Accelerator(cpu=not cuda, mixed_precision=mixed)


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
    relevant = config.model_dump(
        exclude={
            "checkpoint_dir",
            "checkpoint_every",
            "keep_checkpoints",
            "progress",
            "log_every",
            "num_workers",
            "feature_cache_dir",
        }
    )
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

    model: Any
    optimizer: Any
    params: dict[str, Tensor]
    fingerprint: str
    state: TrainingState
    record: dict[str, Any] = field(default_factory=dict)


def setup_run(
    model: PromptModel,
    config: TrainingConfig,
    accelerator: Any,
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
    record = run_record(model, config, fingerprint_extra or {})
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
    accelerator: Any,
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
    :func:`~cotprompt.training.schedule.epoch_batches` (from the resumed step on), and for each
    seeds torch's generators for the step (:func:`~cotprompt.training.seeding.seed_step`),
    computes the loss, refuses a non-finite one, and steps the optimiser; it logs, writes
    checkpoints, calls the callbacks, and records the epoch (with validation metrics; its loss
    is the mean over all of its batches, also those done before a resume).

    Args:
        run: From :func:`setup_run`; its ``state`` advances.
        config: Epochs, batch size, schedule, logging and checkpoint options.
        accelerator: The accelerate ``Accelerator`` of :func:`setup_run`.
        num_samples: Items per epoch.
        step_loss: ``(item, epoch) -> scalar loss`` with gradients for one item of ``load``;
            it runs its forward pass under ``accelerator.autocast()`` itself.
        load: ``(batches, epoch) ->`` one item per step, from the epoch's remaining batches
            (lists of item indices; default: the index lists themselves).
        validate: Called after every epoch, in eval mode; its metrics join the epoch's record.
        callbacks: Called with a :class:`StepInfo` after every step.
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
    num_batches = len(epoch_batches(num_samples, cfg.batch_size, cfg.seed, 0, cfg.drop_last))
    show = cfg.progress and accelerator.is_local_main_process
    bar = tqdm(total=cfg.epochs * num_batches, initial=state.global_step, desc="training",
               disable=not show)
    last_checkpoint = None
    run.model.train()
    try:
        for epoch in range(state.epoch, cfg.epochs):
            lr = learning_rate(cfg, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batches = epoch_batches(num_samples, cfg.batch_size, cfg.seed, epoch, cfg.drop_last)
            first = state.step_in_epoch if epoch == state.epoch else 0
            if first == 0:
                state.epoch_losses = []
            losses = state.epoch_losses  # with those done before a resume mid-epoch
            epoch_started = time.perf_counter()
            for step_in_epoch, item in enumerate(load(batches[first:], epoch), start=first):
                seed_step(cfg.seed, state.global_step, accelerator.process_index)
                loss = step_loss(item, epoch)
                # the batch's loss over all processes: the one every process logs and checks,
                # so that a NaN on one stops them all
                shown = (loss.detach() if accelerator.num_processes == 1
                         else accelerator.reduce(loss.detach(), reduction="mean"))
                if not torch.isfinite(shown):
                    raise TrainingError(
                        f"the loss became {shown.item()} at epoch {epoch + 1}, step "
                        f"{state.global_step + 1}; the parameters keep their last finite "
                        "values (nothing was updated with it). Lower the learning rate, use "
                        "precision='fp32', or resume from the last checkpoint"
                    )
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                if cfg.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(list(params.values()), cfg.max_grad_norm)
                optimizer.step()
                state.global_step += 1
                state.epoch, state.step_in_epoch = epoch, step_in_epoch + 1
                losses.append(shown.item())
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}")
                if state.global_step % cfg.log_every == 0:
                    logger.info("step %d epoch %d loss %.4f lr %.3g", state.global_step,
                                epoch + 1, losses[-1], lr)
                if cfg.checkpoint_every and state.global_step % cfg.checkpoint_every == 0:
                    last_checkpoint = _checkpoint(run, cfg, accelerator)
                for callback in callbacks:
                    callback(StepInfo(state.global_step, epoch, losses[-1], lr))
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
            logger.info("epoch %d: %s", epoch + 1, record)
            state.history.append(record)
            state.epoch, state.step_in_epoch, state.epoch_losses = epoch + 1, 0, []
    finally:
        bar.close()
        run.model.eval()
    if cfg.checkpoint_dir and cfg.checkpoint_every:
        last_checkpoint = _checkpoint(run, cfg, accelerator)
    return TrainingResult(history=state.history, global_step=state.global_step,
                          seconds=time.perf_counter() - started, checkpoint=last_checkpoint)


def _checkpoint(run: Run, config: TrainingConfig, accelerator: Any) -> Path | None:
    """Save ``run`` to ``config.checkpoint_dir`` from the main process; its path, else None."""
    if config.checkpoint_dir is None or not accelerator.is_main_process:
        return None
    return save_checkpoint(Path(config.checkpoint_dir), run.state, run.params, run.optimizer,
                           run.fingerprint, config.keep_checkpoints, run.record)


class Trainer:
    """Trains the tuner and aggregator parameters of a :class:`PromptModel`.

    Args:
        model: The model to train (its backbone stays frozen).
        config: Training options.
        accelerator: An accelerate ``Accelerator``; built from ``config.precision`` if omitted.
    """

    def __init__(self, model: PromptModel, config: TrainingConfig, accelerator: Any = None) -> None:
        self.model = model
        self.config = config
        self.accelerator = accelerator or make_accelerator(config.precision)

    # -- data -------------------------------------------------------------------------------

    def _cacheable(self) -> bool:
        cfg = self.config
        return cfg.cache_features and not cfg.augment and not self.model.tuner.tunes_image_encoder

    @torch.no_grad()
    def encode_dataset(self, dataset: ImageClassificationDataset, batch_size: int = 64) -> Tensor:
        """Normalised frozen image features ``[N, E]`` of ``dataset`` (its transform applied),
        read from and written to ``config.feature_cache_dir`` when it is set."""
        if self.config.feature_cache_dir is not None and not self.model.tuner.tunes_image_encoder:
            from cotprompt.training.feature_cache import FeatureCache

            encode_images = type(self.model.tuner).encode_images
            extra = {
                "precision": str(self.accelerator.mixed_precision),
                "encode_images": f"{encode_images.__module__}.{encode_images.__qualname__}",
            }
            features = FeatureCache(self.config.feature_cache_dir).features(
                dataset, self.model.backbone, lambda part: self._encode(part, batch_size), extra
            )
            return features.to(self.accelerator.device)
        return self._encode(dataset, batch_size)

    def _encode(self, dataset: ImageClassificationDataset, batch_size: int) -> Tensor:
        loader = DataLoader(  # its own generator: the global one is not drawn from
            dataset, batch_size=batch_size, shuffle=False, num_workers=self.config.num_workers,
            generator=loader_generator(self.config.seed, "encode"),
        )
        device = self.accelerator.device
        parts = []
        bar = tqdm(loader, desc="image features", disable=not self._show_progress(), leave=False)
        for pixels, _ in bar:
            with self.accelerator.autocast():
                parts.append(self.model.image_features(pixels.to(device)).float())
        return torch.cat(parts)

    def _show_progress(self) -> bool:
        return self.config.progress and self.accelerator.is_local_main_process

    def _shard(self, batch: list[int]) -> list[int]:
        """This process's share of a global batch (data parallel). A batch smaller than the
        number of processes (the last of an epoch) gives the processes left without a share a
        copy of one of its images: DDP averages the processes' gradients, so a batch of one
        image trains exactly as in a single process."""
        n, rank = self.accelerator.num_processes, self.accelerator.process_index
        if n == 1:
            return batch
        return batch[rank::n] or [batch[rank % len(batch)]]

    # -- loop -------------------------------------------------------------------------------

    def fit(
        self,
        train: ImageClassificationDataset,
        *,
        eval_transform: Callable[[Any], Tensor],
        train_transform: Callable[[Any], Tensor],
        validate: Callable[[], dict[str, float]] | None = None,
        resume_from: str | Path | None = None,
        callbacks: Sequence[Callable[[StepInfo], None]] = (),
        fingerprint_extra: dict[str, Any] | None = None,
    ) -> TrainingResult:
        """Train; see :meth:`cotprompt.CoTPipeline.fit` for the arguments."""
        cfg = self.config
        started = time.perf_counter()
        accelerator = self.accelerator
        device = accelerator.device
        for folder, what in ((cfg.checkpoint_dir, "checkpoint folder"),
                             (cfg.feature_cache_dir, "feature cache folder")):
            if folder is not None:  # found now, not after hours of training
                check_writable(folder, what=what)
        seed_everything(cfg.seed)
        labels = torch.tensor(train.labels, dtype=torch.long)
        cached = self._cacheable()
        features: Tensor | None = None
        pixel_set = None
        if cached:
            features = self.encode_dataset(train.with_transform(eval_transform)).to(device)
        else:  # each sample's augmentation is a function of (seed, epoch, index)
            pixel_set = EpochSamples(train, train_transform if cfg.augment else eval_transform,
                                     cfg.seed, random=cfg.augment)

        run = setup_run(self.model, cfg, accelerator, resume_from=resume_from,
                        fingerprint_extra=fingerprint_extra)

        def step_loss(item: tuple[Tensor, Tensor], epoch: int) -> Tensor:
            inputs, targets = item
            with accelerator.autocast():
                return run.model(
                    inputs.to(device), inputs_are_pixels=features is None,
                    targets=targets.to(device),
                )

        result = run_epochs(
            run, cfg, accelerator, num_samples=len(train), step_loss=step_loss,
            load=lambda todo, epoch: self._batches(todo, epoch, features, labels, pixel_set),
            validate=validate, callbacks=callbacks, started=started,
        )
        result.features_cached = cached
        return result

    def _batches(
        self,
        todo: list[list[int]],
        epoch: int,
        features: Tensor | None,
        labels: Tensor,
        pixel_set: EpochSamples | None,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(inputs, targets)`` of this process's share of each batch in ``todo``."""
        todo = [self._shard(b) for b in todo]
        if features is not None:
            for batch in todo:
                index = torch.tensor(batch, dtype=torch.long)
                yield features[index.to(features.device)], labels[index]
            return
        assert pixel_set is not None
        keyed = [[(epoch, i) for i in batch] for batch in todo]
        loader = DataLoader(
            pixel_set, batch_sampler=keyed, num_workers=self.config.num_workers,
            generator=loader_generator(self.config.seed, "train", epoch),
        )
        yield from loader
