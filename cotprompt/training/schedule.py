"""Learning-rate schedule and reproducible batch order."""

from __future__ import annotations

import math

import torch

from cotprompt.training.config import TrainingConfig
from cotprompt.training.seeding import derive_seed


def learning_rate(config: TrainingConfig, epoch: int) -> float:
    """Learning rate for ``epoch`` (0-based): constant warm-up, then cosine or constant.

    The cosine is CoOp's ``CosineAnnealingLR(T_max=epochs)`` stepped once per epoch; warm-up
    epochs use ``warmup_lr`` instead (Dassl's constant warm-up).
    """
    if epoch < config.warmup_epochs:
        return config.warmup_lr
    if config.scheduler == "constant":
        return config.lr
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * epoch / config.epochs))


def epoch_batches(
    num_samples: int, batch_size: int, seed: int, epoch: int, drop_last: bool = False
) -> list[list[int]]:
    """Shuffled index batches of one epoch, a function of (seed, epoch) only.

    Resuming mid-epoch recomputes the same order and skips the batches already done.
    """
    generator = torch.Generator().manual_seed(derive_seed(seed, "shuffle", epoch))
    order = torch.randperm(num_samples, generator=generator).tolist()
    batches = [order[i : i + batch_size] for i in range(0, num_samples, batch_size)]
    if drop_last and len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    return batches
