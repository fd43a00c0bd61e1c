"""Classification's side of training: frozen image features (encoded once, optionally through
the on-disk feature cache) and the batches of one process, for the loop of
:mod:`cotprompt.training.loop` (which this module re-exports under its former names).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cotprompt.data.records import ImageClassificationDataset
from cotprompt.model import PromptModel
from cotprompt.training.augment import EpochSamples
from cotprompt.training.config import TrainingConfig
from cotprompt.training.loading import RunLoader, loader_options
from cotprompt.training.loop import (
    Run,
    StepInfo,
    TrainingPlan,
    TrainingResult,
    fingerprint_of,
    make_accelerator,
    make_optimizer,
    progress_disabled,
    run_epochs,
    run_fingerprint,
    run_record,
    run_training,
    setup_run,
)
from cotprompt.training.seeding import loader_generator

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = [
    "Run",
    "StepInfo",
    "Trainer",
    "TrainingPlan",
    "TrainingResult",
    "fingerprint_of",
    "make_accelerator",
    "make_optimizer",
    "run_epochs",
    "run_fingerprint",
    "run_record",
    "run_training",
    "setup_run",
]


class Trainer:
    """The data side of training a :class:`PromptModel`: frozen image features and the
    classification plan (:meth:`classification_plan`) that :func:`run_training` runs.

    Args:
        model: The model to train (its backbone stays frozen).
        config: Training options.
        accelerator: An accelerate ``Accelerator``; built from ``config`` if omitted
            (:func:`~cotprompt.training.accelerator.make_accelerator`: precision, gradient
            accumulation, trackers).
    """

    def __init__(self, model: PromptModel, config: TrainingConfig,
                 accelerator: Accelerator | None = None) -> None:
        self.model = model
        self.config = config
        self.accelerator = accelerator or make_accelerator(config)

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
        device = self.accelerator.device
        loader = DataLoader(  # its own generator: the global one is not drawn from
            dataset, batch_size=batch_size, shuffle=False,
            generator=loader_generator(self.config.seed, "encode"),
            **loader_options(self.config.loader_workers(), device,
                             num_batches=-(-len(dataset) // batch_size)),
        )
        parts = []
        bar = tqdm(loader, desc="image features", leave=False,
                   disable=not self._show_progress() or progress_disabled())
        for pixels, _ in bar:
            with self.accelerator.autocast():
                parts.append(self.model.image_features(
                    pixels.to(device, non_blocking=True)).float())
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

    def classification_plan(
        self,
        train: ImageClassificationDataset,
        *,
        eval_transform: Callable[[Any], Tensor],
        train_transform: Callable[[Any], Tensor],
        validate: Callable[[], dict[str, float]] | None = None,
    ) -> TrainingPlan:
        """What a classification run optimises: cross-entropy of the model's logits over cached
        frozen features (encoded here, once) or over pixels augmented per sample; batches
        sharded over processes (data parallel)."""
        cfg = self.config
        device = self.accelerator.device
        labels = torch.tensor(train.labels, dtype=torch.long)
        cached = self._cacheable()
        features: Tensor | None = None
        pixel_set = None
        if cached:
            features = self.encode_dataset(train.with_transform(eval_transform)).to(device)
        else:  # each sample's augmentation is a function of (seed, epoch, index)
            pixel_set = EpochSamples(train, train_transform if cfg.augment else eval_transform,
                                     cfg.seed, random=cfg.augment)

        def step_loss(model: torch.nn.Module, item: tuple[Tensor, Tensor], epoch: int) -> Tensor:
            inputs, targets = item
            return model(inputs.to(device, non_blocking=True), inputs_are_pixels=features is None,
                         targets=targets.to(device, non_blocking=True))

        loader = None
        if pixel_set is not None:  # one loader (one set of workers) for every epoch of the run
            loader = RunLoader(pixel_set, num_workers=cfg.loader_workers(), device=device,
                               generator=loader_generator(cfg.seed, "train"), epochs=cfg.epochs,
                               num_batches=-(-len(train) // cfg.batch_size))

        return TrainingPlan(
            num_items=len(train), step_loss=step_loss,
            load=lambda todo, epoch: self._batches(todo, epoch, features, labels, loader),
            validate=validate, features_cached=cached, prepare_model=True,
            close=loader.close if loader is not None else None,
        )

    def _batches(
        self,
        todo: list[list[int]],
        epoch: int,
        features: Tensor | None,
        labels: Tensor,
        loader: RunLoader | None,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(inputs, targets)`` of this process's share of each batch in ``todo``:
        cached features, or images loaded by the run's :class:`RunLoader` (worker processes
        prefetching the next batches)."""
        todo = [self._shard(b) for b in todo]
        if features is not None:
            for batch in todo:
                index = torch.tensor(batch, dtype=torch.long)
                yield features[index.to(features.device)], labels[index]
            return
        assert loader is not None
        yield from loader.epoch([[(epoch, i) for i in batch] for batch in todo], epoch)
