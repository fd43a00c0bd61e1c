"""Training options (CoOp / CoCoOp's recipe by default)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError

from cotprompt.config import ComponentConfig, machine_local
from cotprompt.errors import ConfigError

Precision = Literal["auto", "fp32", "bf16", "fp16"]


class TrainingConfig(ComponentConfig):
    """How :meth:`CoTPipeline.fit` trains.

    Defaults follow CoCoOp's published recipe (SGD, lr 0.002, momentum 0.9, weight decay 5e-4,
    one warm-up epoch at a constant 1e-5, cosine decay over the epochs, 10 epochs, random resized
    crop and flip), except the batch size: CoCoOp uses 1 because of its memory use, cotprompt's
    batched encoder affords CoOp's 32.

    Args:
        epochs: Passes over the training set.
        batch_size: Images per optimisation step (over all processes).
        optimizer: ``sgd`` (CoOp / CoCoOp) or ``adamw``.
        lr: Base learning rate.
        momentum: SGD momentum (ignored by AdamW).
        weight_decay: Weight decay.
        warmup_epochs: Epochs at the constant ``warmup_lr`` before the schedule starts.
        warmup_lr: Learning rate during warm-up.
        scheduler: ``cosine`` (annealed per epoch to 0 over ``epochs``) or ``constant``.
        max_grad_norm: Clip the gradient norm (``None``: no clipping).
        seed: The one seed of a run (``0 <= seed < 2**63``): parameter initialisation,
            shuffling, augmentation (classification: a function of seed, epoch and sample;
            retrieval and VQA: of seed and step), dropout and DataLoader workers (see
            :mod:`cotprompt.training.seeding`); ``cotprompt train`` also samples the few-shot
            images with it unless the data section sets its own ``seed``.
        precision: ``auto`` is bf16 autocast on a GPU that supports it and fp32 elsewhere.
        augment: CoOp's random resized crop and flip; ``False`` uses the deterministic
            evaluation transform, which lets frozen image features be computed once.
        cache_features: Compute frozen image features once per run when the transform is
            deterministic and the image encoder is not tuned.
        feature_cache_dir: Also keep those features on disk in this folder, keyed by backbone,
            transform and image contents, and reuse them across runs and methods (see
            :mod:`cotprompt.training.feature_cache`); ``None``: in memory for one run only.
        drop_last: Drop the last incomplete batch of each epoch.
        num_workers: DataLoader worker processes for image decoding.
        checkpoint_dir: Where checkpoints go (``None``: no checkpoints).
        checkpoint_every: Save a checkpoint every N optimisation steps (and at the end).
        keep_checkpoints: How many recent checkpoints to keep.
        progress: Show a tqdm progress bar.
        log_every: Log the running loss every N steps.
    """

    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=32, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.002, gt=0)
    momentum: float = Field(default=0.9, ge=0)
    weight_decay: float = Field(default=5e-4, ge=0)
    warmup_epochs: int = Field(default=1, ge=0)
    warmup_lr: float = Field(default=1e-5, gt=0)
    scheduler: Literal["cosine", "constant"] = "cosine"
    max_grad_norm: float | None = Field(default=None, gt=0)
    seed: int = Field(default=1, ge=0, lt=2**63)
    precision: Precision = "auto"
    augment: bool = True
    cache_features: bool = True
    feature_cache_dir: str | None = machine_local(None, description="feature cache folder")
    drop_last: bool = False
    num_workers: int = Field(default=0, ge=0)
    checkpoint_dir: str | None = machine_local(None, description="checkpoint folder")
    checkpoint_every: int | None = Field(default=None, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    progress: bool = True
    log_every: int = Field(default=10, ge=1)


def merge_training(
    base: TrainingConfig, training: TrainingConfig | Mapping[str, Any] | None
) -> TrainingConfig:
    """The options of one ``fit`` call: ``base`` (the pipeline's) updated by ``training``.

    A mapping updates only the options it names (``{"epochs": 1}`` keeps the pipeline's
    optimiser, learning rate, seed...); a :class:`TrainingConfig` replaces ``base`` whole;
    ``None`` keeps ``base``.

    Raises:
        ConfigError: The mapping names an unknown option or an invalid value.
    """
    if training is None:
        return base
    if isinstance(training, TrainingConfig):
        return training
    if not isinstance(training, Mapping):
        raise ConfigError(
            f"training options must be a TrainingConfig or a mapping, got {type(training).__name__}"
        )
    merged = {**base.model_dump(), **dict(training)}
    try:
        return TrainingConfig.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())) or 'options'}: "
            f"{'unknown option' if e.get('type') == 'extra_forbidden' else e.get('msg')}"
            for e in exc.errors()
        )
        raise ConfigError(f"invalid training options: {problems}") from exc
