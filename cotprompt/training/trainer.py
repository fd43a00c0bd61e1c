"""The training loop: one loop for CPU, one GPU and several GPUs, through accelerate."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cotprompt.data.records import ImageClassificationDataset
from cotprompt.errors import TrainingError
from cotprompt.model import PromptModel
from cotprompt.training.checkpoint import (
    TrainingState,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from cotprompt.training.config import TrainingConfig
from cotprompt.training.schedule import epoch_batches, learning_rate

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


def run_fingerprint(model: PromptModel, config: TrainingConfig, extra: dict[str, Any]) -> str:
    """Identifies a run, so that a checkpoint is only resumed by the same run."""
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
    blob = json.dumps({"config": relevant, "shapes": shapes, **extra}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
        loader = DataLoader(
            dataset, batch_size=batch_size, shuffle=False, num_workers=self.config.num_workers
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
        """This process's share of a global batch (data parallel)."""
        n = self.accelerator.num_processes
        return batch if n == 1 else batch[self.accelerator.process_index :: n]

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
        torch.manual_seed(cfg.seed)
        labels = torch.tensor(train.labels, dtype=torch.long)
        cached = self._cacheable()
        features: Tensor | None = None
        pixel_set = None
        if cached:
            features = self.encode_dataset(train.with_transform(eval_transform)).to(device)
        else:
            pixel_set = train.with_transform(train_transform if cfg.augment else eval_transform)

        params = self.model.trainable_state()
        if not params:
            raise TrainingError("the pipeline has no trainable parameters")
        optimizer = make_optimizer(cfg, list(params.values()))
        fingerprint = run_fingerprint(self.model, cfg, fingerprint_extra or {})
        state = TrainingState()
        if resume_from is not None:
            path = resolve_checkpoint(resume_from, cfg.checkpoint_dir)
            state = load_checkpoint(path, params, optimizer, fingerprint)
        model, optimizer = accelerator.prepare(self.model, optimizer)

        num_batches = len(epoch_batches(len(train), cfg.batch_size, cfg.seed, 0, cfg.drop_last))
        total_steps = cfg.epochs * num_batches
        result = TrainingResult(history=list(state.history), features_cached=cached)
        bar = tqdm(
            total=total_steps,
            initial=state.global_step,
            desc="training",
            disable=not self._show_progress(),
        )
        last_checkpoint = None
        model.train()
        try:
            for epoch in range(state.epoch, cfg.epochs):
                lr = learning_rate(cfg, epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batches = epoch_batches(len(train), cfg.batch_size, cfg.seed, epoch, cfg.drop_last)
                first = state.step_in_epoch if epoch == state.epoch else 0
                losses: list[float] = []
                epoch_started = time.perf_counter()
                for step_in_epoch, inputs, targets in self._batches(
                    batches, first, features, labels, pixel_set
                ):
                    with accelerator.autocast():
                        logits = model(inputs.to(device), inputs_are_pixels=features is None)
                    loss = F.cross_entropy(logits.float(), targets.to(device))
                    if not torch.isfinite(loss):
                        raise TrainingError(
                            f"the loss became {loss.item()} at epoch {epoch + 1}, step "
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
                    losses.append(loss.item())
                    bar.update(1)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}")
                    if state.global_step % cfg.log_every == 0:
                        logger.info(
                            "step %d epoch %d loss %.4f lr %.3g",
                            state.global_step,
                            epoch + 1,
                            losses[-1],
                            lr,
                        )
                    if cfg.checkpoint_every and state.global_step % cfg.checkpoint_every == 0:
                        last_checkpoint = self._checkpoint(state, params, optimizer, fingerprint)
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
            last_checkpoint = self._checkpoint(state, params, optimizer, fingerprint)
        result.history = state.history
        result.global_step = state.global_step
        result.seconds = time.perf_counter() - started
        result.checkpoint = last_checkpoint
        return result

    def _batches(
        self,
        batches: list[list[int]],
        first: int,
        features: Tensor | None,
        labels: Tensor,
        pixel_set: ImageClassificationDataset | None,
    ):
        """Yield ``(step_in_epoch, inputs, targets)`` from batch ``first`` on."""
        todo = [self._shard(b) for b in batches[first:]]
        if features is not None:
            for offset, batch in enumerate(todo):
                index = torch.tensor(batch, dtype=torch.long)
                yield first + offset, features[index.to(features.device)], labels[index]
            return
        assert pixel_set is not None
        loader = DataLoader(pixel_set, batch_sampler=todo, num_workers=self.config.num_workers)
        for offset, (pixels, targets) in enumerate(loader):
            yield first + offset, pixels, targets

    def _checkpoint(self, state, params, optimizer, fingerprint) -> Path | None:
        cfg = self.config
        if cfg.checkpoint_dir is None or not self.accelerator.is_main_process:
            return None
        return save_checkpoint(
            Path(cfg.checkpoint_dir), state, params, optimizer, fingerprint, cfg.keep_checkpoints
        )
