"""Image-text retrieval as a task head: how ``CoTPipeline.fit`` and ``CoTPipeline.evaluate`` treat
a :class:`~cotprompt.tasks.RetrievalDataset` (scoring itself is :mod:`cotprompt.tasks.retrieval`).

Training: every epoch draws one caption per image (reproducibly from the seed); a batch of B
images and its U <= B distinct captions gives ``[B, U]`` logits and the symmetric contrastive loss
of :func:`~cotprompt.tasks.retrieval.contrastive_loss`. ``training.batch_size`` counts images.
Evaluation ranks the whole gallery and reports recall@k both ways.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from cotprompt.config import validate_options
from cotprompt.data.retrieval import RetrievalDataset
from cotprompt.data.task_io import PixelList
from cotprompt.evaluation.task_metrics import RetrievalResult
from cotprompt.tasks import loops
from cotprompt.tasks.generators import RETRIEVAL
from cotprompt.tasks.long_captions import (
    LongCaptions,
    caption_images,
    check_caption_lengths,
    long_captions_policy,
    truncating,
)
from cotprompt.tasks.retrieval import (
    RetrievalEvalConfig,
    caption_logits,
    contrastive_loss,
    prepare,
    sample_captions,
    score_gallery,
)
from cotprompt.training.config import TrainingConfig
from cotprompt.training.loop import StepInfo, TrainingPlan, TrainingResult

if TYPE_CHECKING:
    from accelerate import Accelerator

    from cotprompt.pipeline import CoTPipeline

logger = logging.getLogger("cotprompt.tasks.retrieval")  # the logger name users configure


class RetrievalHead:
    """Images with captions (:class:`~cotprompt.tasks.RetrievalDataset`).

    Args:
        eval_config: Scoring options of evaluation and of the validation gallery.
        long_captions: Captions too long for the context (training and validation): ``error``
            or ``truncate``; default: the generator's option (see
            :func:`~cotprompt.tasks.retrieval.check_caption_lengths`).
    """

    kind = RETRIEVAL
    data_parallel = False

    def __init__(self, eval_config: RetrievalEvalConfig | Mapping[str, Any] | None = None,
                 long_captions: LongCaptions | None = None) -> None:
        if isinstance(eval_config, Mapping):
            eval_config = validate_options(RetrievalEvalConfig, eval_config,
                                           label="retrieval scoring")
        self.eval_config = eval_config
        self.long_captions = long_captions

    def accepts(self, dataset: object) -> bool:
        return isinstance(dataset, RetrievalDataset)

    def _val_config(self, pipeline: CoTPipeline) -> RetrievalEvalConfig:
        config = self.eval_config or RetrievalEvalConfig()
        if config.long_captions is None:
            policy = long_captions_policy(pipeline, self.long_captions)
            config = config.model_copy(update={"long_captions": policy})
        return config

    def prepare(self, pipeline: CoTPipeline, train: RetrievalDataset,
                val: RetrievalDataset | None, config: TrainingConfig) -> None:
        prepare(pipeline)
        # every caption, before the first step: a long one no longer stops an epoch half-way
        policy = long_captions_policy(pipeline, self.long_captions)
        check_caption_lengths(pipeline, train.unique_captions()[0], long_captions=policy,
                              images=caption_images(train), what="training captions")
        if val is not None:
            check_caption_lengths(pipeline, val.unique_captions()[0],
                                  long_captions=self._val_config(pipeline).long_captions,
                                  images=caption_images(val), what="validation captions")

    def plan(self, pipeline: CoTPipeline, train: RetrievalDataset, val: RetrievalDataset | None,
             config: TrainingConfig, accelerator: Accelerator) -> TrainingPlan:
        device = accelerator.device
        cached = loops.cacheable(pipeline, config)
        features = (loops.train_features(pipeline, train.images, config, accelerator)
                    if cached else None)
        pixels = PixelList(train.images, pipeline.backbone.image_transform(train=config.augment))
        caption_sets = [set(group) for group in train.captions]
        picks: dict[int, list[int]] = {}

        def step_loss(model: Any, batch: list[int], epoch: int) -> Tensor:
            if epoch not in picks:
                picks.clear()
                picks[epoch] = sample_captions(train, config.seed, epoch)
            chosen = [train.captions[i][picks[epoch][i]] for i in batch]
            unique = list(dict.fromkeys(chosen))
            positives = torch.tensor([[u in caption_sets[i] for u in unique] for i in batch])
            if features is not None:
                feats = features[torch.tensor(batch, device=features.device)]
            else:
                feats = pipeline.model.image_features(pixels.batch(batch).to(device))
            return contrastive_loss(caption_logits(pipeline, feats, unique), positives)

        validate = None
        if val is not None:
            val_features = loops.frozen_val_features(pipeline, val.images, val.transform)
            val_config = self._val_config(pipeline)

            def validate() -> dict[str, float]:
                features = loops.current_val_features(pipeline, val_features, val.images,
                                                      val.transform)
                result = score_gallery(pipeline, features, val, val_config)
                return {f"val_{k}": v for k, v in result.metrics().items()}

        policy = long_captions_policy(pipeline, self.long_captions)
        return TrainingPlan(
            num_items=len(train), step_loss=step_loss, validate=validate,
            fingerprint={"task": RETRIEVAL, "num_images": len(train),
                         "num_captions": train.num_captions,
                         **({"long_captions": policy} if policy == "truncate" else {})},
            features_cached=cached,
        )

    @contextlib.contextmanager
    def training_scope(self, pipeline: CoTPipeline) -> Iterator[None]:
        try:
            with truncating(long_captions_policy(pipeline, self.long_captions)):
                yield
        finally:
            loops.restore_binding(pipeline)

    def training_record(self, train: RetrievalDataset, config: TrainingConfig,
                        plan: TrainingPlan) -> dict[str, Any]:
        return {"task": RETRIEVAL, "num_images": len(train),
                "num_captions": train.num_captions, "epochs": config.epochs, "seed": config.seed}

    def evaluate(self, pipeline: CoTPipeline, dataset: RetrievalDataset, *, batch_size: int,
                 zero_shot: bool, num_workers: int = 0,
                 pin_memory: bool | None = None) -> RetrievalResult:
        started = time.perf_counter()
        prepare(pipeline)
        features = loops.eval_features(pipeline, dataset.images, batch_size, dataset.transform,
                                       num_workers, pin_memory)
        result = score_gallery(pipeline, features, dataset, self.eval_config,
                               zero_shot=zero_shot)
        seconds = time.perf_counter() - started
        result = dataclasses.replace(result, seconds=seconds)
        logger.info(
            "retrieval (%s, %d images, %d captions): i2t %s, t2i %s, %.1f s", result.mode,
            result.num_images, result.num_captions, _fmt(result.image_to_text),
            _fmt(result.text_to_image), seconds,
        )
        return result


def _fmt(recalls: Mapping[int, float]) -> str:
    return " ".join(f"R@{k} {v:.1f}" for k, v in recalls.items())


def evaluate_retrieval(
    pipeline: CoTPipeline,
    dataset: RetrievalDataset,
    *,
    batch_size: int = 64,
    zero_shot: bool = False,
    split: str | None = None,
    config: RetrievalEvalConfig | Mapping[str, Any] | None = None,
) -> RetrievalResult:
    """Recall@1/5/10 image -> text and text -> image on a gallery (what
    ``pipeline.evaluate(retrieval_dataset)`` runs, with scoring options).

    Args:
        pipeline: The pipeline; bound to the retrieval task if it is not yet.
        dataset: The gallery: images with their captions.
        batch_size: Images per image-encoder batch.
        zero_shot: Evaluate the untuned model (the generator's zero-shot sentences).
        split: If given, the metrics are recorded in ``pipeline.metrics[split]`` (model card).
        config: Scoring options (:class:`~cotprompt.tasks.RetrievalEvalConfig`).
    """
    return pipeline.evaluate(dataset, batch_size=batch_size, zero_shot=zero_shot, split=split,
                             task_head=RetrievalHead(eval_config=config))


def fit_retrieval(
    pipeline: CoTPipeline,
    train: RetrievalDataset,
    *,
    val: RetrievalDataset | None = None,
    training: TrainingConfig | Mapping[str, Any] | None = None,
    resume_from: str | Path | None = None,
    callbacks: Sequence[Callable[[StepInfo], None]] = (),
    eval_config: RetrievalEvalConfig | None = None,
    long_captions: LongCaptions | None = None,
) -> TrainingResult:
    """Train the prompts for retrieval (what ``pipeline.fit(retrieval_dataset)`` runs, with the
    head's options; see :class:`RetrievalHead`).

    Args:
        pipeline: Bound to the retrieval task here if it is not yet.
        train: Images with captions (:meth:`RetrievalDataset.fraction` keeps a reproducible
            fraction of them).
        val: Optional gallery evaluated after every epoch (``val_rsum`` and the recalls in the
            history).
        training: Options of this call (default: the pipeline's).
        resume_from: A checkpoint folder, a folder of checkpoints, or ``"latest"``.
        callbacks: Called with a :class:`StepInfo` after every step.
        eval_config: Scoring options of the validation gallery.
        long_captions: Captions too long for the context (training and validation):
            ``error`` or ``truncate``; default: the generator's option. Every caption is
            checked before the first step.

    Returns:
        A :class:`TrainingResult` with per-epoch history.

    Raises:
        DataError: Captions too long for the context, with ``long_captions="error"``.
    """
    return pipeline.fit(train, val=val, training=training, resume_from=resume_from,
                        callbacks=callbacks,
                        task_head=RetrievalHead(eval_config=eval_config,
                                                long_captions=long_captions))
