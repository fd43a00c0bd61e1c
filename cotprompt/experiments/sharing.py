"""Work a sweep shares between its runs: frozen image features computed once per sweep.

What is shared is shared within one sweep's output folder (its feature cache) and process (its
memory): protocols run into separate ``--output`` folders encode their test sets again.

- **Evaluation images** (:class:`SharedFeatures`): each split (a test set) is encoded once per
  backbone, in its own order and in fixed batches, kept on disk in the sweep's
  :class:`~cotprompt.training.feature_cache.FeatureCache` (shards and resumed sweeps writing
  into the same output read it) and in memory for the process; every method and seed whose
  image features are the frozen encoder's (:func:`encoder_id`) evaluates from those features
  (base and new classes are rows of the same test set).
- **Training views with augmentation** (:class:`TrainingViews`, :class:`SharedViewsHead`): a
  view is a function of (seed, epoch, sample) (:mod:`cotprompt.training.augment`), so the runs
  that train on the same images with the same seed (the methods of one dataset, shots and seed)
  see the same views. Each epoch's views are encoded once, all of them, in sample order and
  fixed batches, and kept in memory while the runs of that training set last (about
  ``epochs x images x E x 4`` bytes: 16-shot ImageNet with 50 epochs and E = 512 is 1.6 GB).
  Without augmentation the training images go through the sweep's feature cache instead
  (``TrainingConfig.feature_cache_dir``).

Features computed in the same batches are the same numbers whichever run computes them first,
so a sweep killed and resumed, or split into shards, gives the same results as one process.
Against ``share_features=False`` (each run encoding its own images, in its own batches) the
results are equal up to float rounding: the image encoder's outputs depend slightly on how
images are batched (CoCoOp's trained parameters differ by about 3e-8 on a CPU), which is why the
share mode is part of a result's fingerprint. Tuners whose image features are not the frozen
encoder's (VPT, multimodal, any tuner with its own ``encode_images``) evaluate as alone.
:class:`ForwardCounter` counts the images through the backbone's image encoder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cotprompt.data.records import ImageClassificationDataset
from cotprompt.tasks.classification import ClassificationHead
from cotprompt.training.augment import EpochSamples
from cotprompt.training.config import TrainingConfig
from cotprompt.training.feature_cache import FeatureCache, describe_transform
from cotprompt.training.loading import loader_options
from cotprompt.training.loop import TrainingPlan, progress_disabled
from cotprompt.training.seeding import loader_generator
from cotprompt.tuners.context_tuner import ContextPromptTuner

if TYPE_CHECKING:
    from accelerate import Accelerator

    from cotprompt.pipeline.heads import TunablePipeline
    from cotprompt.protocols import Backbone

__all__ = ["ForwardCounter", "SharedFeatures", "SharedViewsHead", "TrainingViews", "encoder_id"]

logger = logging.getLogger(__name__)

_FROZEN = ContextPromptTuner.encode_images


def encoder_id(pipeline: TunablePipeline, *, zero_shot: bool = False) -> str:
    """What computes a pipeline's image features: the frozen encoder (zero-shot, and the
    context tuners) or the tuner's own ``encode_images`` (its qualified name)."""
    function = _FROZEN if zero_shot else type(pipeline.tuner).encode_images
    return f"{function.__module__}.{function.__qualname__}"


class ForwardCounter:
    """Counts the images and calls through ``backbone.encode_images`` while installed.

    Args:
        backbone: Its ``encode_images`` is wrapped (an instance attribute, removed by
            :meth:`remove`).
    """

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone
        self.images = 0
        self.calls = 0
        original = backbone.encode_images

        def counted(pixels: Tensor, *args: Any, **kwargs: Any) -> Tensor:
            self.calls += 1
            self.images += int(pixels.shape[0])
            return original(pixels, *args, **kwargs)

        backbone.encode_images = counted  # type: ignore[method-assign]

    def remove(self) -> None:
        """Restore the backbone's own ``encode_images``."""
        if "encode_images" in vars(self.backbone):
            del self.backbone.encode_images


@torch.no_grad()
def encode_frozen(pipeline: TunablePipeline, dataset: ImageClassificationDataset, *,
                  batch_size: int, num_workers: int = 0, progress: bool = False) -> Tensor:
    """Normalised frozen image features ``[N, E]`` (float32) of ``dataset`` (its transform
    applied), in its order, in batches of ``batch_size``, as ``pipeline.evaluate`` computes
    them."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    parts = []
    bar = tqdm(loader, desc="image features", leave=False,
               disable=not progress or progress_disabled())
    for pixels, _ in bar:
        features = pipeline.backbone.encode_images(pixels.to(pipeline.device))
        parts.append(F.normalize(features.float(), dim=-1))
    return torch.cat(parts)


class SharedFeatures:
    """Frozen image features of whole splits, computed once per sweep (see the module).

    Args:
        cache_dir: The sweep's feature-cache folder (``None``: in memory only).
        batch_size: Images per encoder batch.
        num_workers: DataLoader workers decoding images.
        progress: Show a progress bar while encoding.
    """

    def __init__(self, cache_dir: Path | None, *, batch_size: int = 64, num_workers: int = 0,
                 progress: bool = False) -> None:
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.progress = progress
        self._memory: dict[tuple[str, str], Tensor] = {}

    def split_features(self, pipeline: TunablePipeline, name: str,
                       split: ImageClassificationDataset) -> Tensor:
        """Features ``[N, E]`` (CPU) of every image of ``split`` (named ``name``, such as
        ``"caltech101/test"``) under the backbone's evaluation transform."""
        key = (name, encoder_id(pipeline, zero_shot=True))
        if key not in self._memory:
            data = split.with_transform(pipeline.backbone.image_transform(train=False))

            def encode(part: ImageClassificationDataset) -> Tensor:
                return encode_frozen(pipeline, part, batch_size=self.batch_size,
                                     num_workers=self.num_workers, progress=self.progress)

            if self.cache_dir is None:
                features = encode(data).cpu()
            else:  # the trainer's key fields: its cached training features share the folder
                extra = {"precision": "no", "encode_images": key[1]}
                features = FeatureCache(self.cache_dir).features(data, pipeline.backbone, encode,
                                                                 extra)
            self._memory[key] = features
        return self._memory[key]


class TrainingViews:
    """The features of augmented training views, shared by the runs that train on the same
    images with the same seed (see the module); one training set is kept at a time.

    Args:
        batch_size: Views per encoder batch (fixed: the same numbers whichever run asks first).
        progress: Show a progress bar while encoding an epoch.
    """

    def __init__(self, *, batch_size: int = 64, progress: bool = False) -> None:
        self.batch_size = batch_size
        self.progress = progress
        self._key: tuple[Any, ...] | None = None
        self._epochs: dict[int, Tensor] = {}
        self.epochs_encoded = 0
        self.epochs_reused = 0

    def group(self, pipeline: TunablePipeline, train: ImageClassificationDataset,
              config: TrainingConfig, accelerator: Accelerator) -> Callable[[int], Tensor]:
        """``epoch -> [N, E]`` features (CPU) of the views of ``train`` in that epoch."""
        transform = pipeline.backbone.image_transform(train=True)
        key = (
            tuple((str(r.path) if r.path is not None else f"id:{id(r.image)}", r.label)
                  for r in train.records),
            config.seed, describe_transform(transform), encoder_id(pipeline),
            str(accelerator.mixed_precision), id(pipeline.backbone),
        )
        if key != self._key:
            self._key, self._epochs = key, {}

        def epoch_features(epoch: int) -> Tensor:
            if self._key != key:  # another training set took over: start again
                self._key, self._epochs = key, {}
            if epoch in self._epochs:
                self.epochs_reused += 1
            else:
                self._epochs[epoch] = self._encode(pipeline, train, transform, config,
                                                   accelerator, epoch)
                self.epochs_encoded += 1
            return self._epochs[epoch]

        return epoch_features

    @torch.no_grad()
    def _encode(self, pipeline: TunablePipeline, train: ImageClassificationDataset,
                transform: Callable[[Any], Tensor], config: TrainingConfig,
                accelerator: Accelerator, epoch: int) -> Tensor:
        samples = EpochSamples(train, transform, config.seed, random=True)
        n = len(train)
        batches = [[(epoch, i) for i in range(start, min(start + self.batch_size, n))]
                   for start in range(0, n, self.batch_size)]
        loader = DataLoader(samples, batch_sampler=batches,
                            generator=loader_generator(config.seed, "train", epoch),
                            **loader_options(config.loader_workers(), accelerator.device,
                                             num_batches=len(batches)))
        parts = []
        bar = tqdm(loader, desc=f"views of epoch {epoch + 1}", leave=False,
                   disable=not self.progress or progress_disabled())
        for pixels, _ in bar:
            with accelerator.autocast():
                parts.append(pipeline.model.image_features(pixels.to(accelerator.device))
                             .float().cpu())
        return torch.cat(parts)


class SharedViewsHead(ClassificationHead):
    """Classification training whose augmented views come from a :class:`TrainingViews`
    (one process: not data parallel). Other runs (no augmentation, a tuned image encoder)
    train as :class:`~cotprompt.tasks.ClassificationHead` does."""

    data_parallel = False

    def __init__(self, views: TrainingViews) -> None:
        self.views = views

    def plan(self, pipeline: TunablePipeline, train: ImageClassificationDataset,
             val: ImageClassificationDataset | None, config: TrainingConfig,
             accelerator: Accelerator) -> TrainingPlan:
        plan = super().plan(pipeline, train, val, config, accelerator)
        if not config.augment or pipeline.tuner.tunes_image_encoder:
            return plan
        views = self.views.group(pipeline, train, config, accelerator)
        labels = torch.tensor(train.labels, dtype=torch.long)
        device = accelerator.device

        def load(todo: list[list[int]], epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
            features = views(epoch)
            for batch in todo:
                index = torch.tensor(batch, dtype=torch.long)
                yield features[index].to(device), labels[index]

        def step_loss(model: torch.nn.Module, item: tuple[Tensor, Tensor], epoch: int
                      ) -> Tensor:
            inputs, targets = item
            return model(inputs, inputs_are_pixels=False, targets=targets.to(device))

        plan.load, plan.step_loss, plan.features_cached = load, step_loss, True
        return plan
