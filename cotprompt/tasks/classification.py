"""Image classification as a task head: the pipeline's own task (CoOp, CoCoOp, CoT-PT).

Training is cross-entropy over the bound labels, on frozen image features cached once when the
transform is deterministic, else on pixels augmented per sample
(:meth:`~cotprompt.training.trainer.Trainer.classification_plan`), sharded over processes;
evaluation reports accuracy, mean per-class accuracy and per-class accuracy.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch

from cotprompt.data.records import ImageClassificationDataset
from cotprompt.errors import DataError
from cotprompt.evaluation.finite import check_finite_scores
from cotprompt.evaluation.metrics import EvaluationResult
from cotprompt.tasks.loops import eval_loader
from cotprompt.training.config import TrainingConfig
from cotprompt.training.loading import batch_progress
from cotprompt.training.loop import TrainingPlan
from cotprompt.training.trainer import Trainer

if TYPE_CHECKING:
    from accelerate import Accelerator

    from cotprompt.pipeline.heads import TunablePipeline


def check_dataset_classes(pipeline: TunablePipeline, dataset: ImageClassificationDataset) -> None:
    """Bind the pipeline to the dataset's classes if it has none; else require the same labels
    in the same order.

    Raises:
        DataError: The classes differ (naming a few on each side).
    """
    names = [n.replace("_", " ") for n in dataset.class_names]
    if pipeline.task is None:
        pipeline.set_classes(dataset.class_names)
    elif names != list(pipeline.task.labels):
        extra = sorted(set(names) - set(pipeline.task.labels))[:5]
        missing = sorted(set(pipeline.task.labels) - set(names))[:5]
        raise DataError(
            "the dataset's classes do not match the pipeline's "
            f"({len(names)} vs {len(pipeline.task.labels)}; only in the dataset: {extra}, only "
            f"in the pipeline: {missing}, or a different order). Call "
            "pipeline.set_classes(dataset.class_names) to use the prompts on these classes"
        )


class ClassificationHead:
    """Labelled images (:class:`~cotprompt.data.ImageClassificationDataset`)."""

    kind = "classification"
    data_parallel = True

    def accepts(self, dataset: object) -> bool:
        return isinstance(dataset, ImageClassificationDataset)

    def prepare(self, pipeline: TunablePipeline, train: ImageClassificationDataset,
                val: ImageClassificationDataset | None, config: TrainingConfig) -> None:
        train.check_nonempty_classes()
        check_dataset_classes(pipeline, train)
        if val is not None:
            check_dataset_classes(pipeline, val)

    def plan(self, pipeline: TunablePipeline, train: ImageClassificationDataset,
             val: ImageClassificationDataset | None, config: TrainingConfig,
             accelerator: Accelerator) -> TrainingPlan:
        trainer = Trainer(pipeline.model, config, accelerator)
        validate = None
        if val is not None:
            val_set = val.with_transform(pipeline.backbone.image_transform())
            # features of a tuned image encoder change every step: encode them at each validation
            frozen_features = None
            if not pipeline.tuner.tunes_image_encoder:
                frozen_features = trainer.encode_dataset(val_set)
            val_labels = torch.tensor(val.labels)

            def validate() -> dict[str, float]:
                features = frozen_features
                if features is None:
                    features = trainer.encode_dataset(val_set)
                preds = pipeline.logits_from_features(features).argmax(-1).cpu()
                return {"val_accuracy": float((preds == val_labels).float().mean() * 100)}

        plan = trainer.classification_plan(
            train,
            eval_transform=pipeline.backbone.image_transform(train=False),
            train_transform=pipeline.backbone.image_transform(train=True),
            validate=validate,
        )
        assert pipeline.task is not None
        plan.fingerprint = {"labels": list(pipeline.task.labels)}
        return plan

    def training_scope(self, pipeline: TunablePipeline) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def training_record(self, train: ImageClassificationDataset, config: TrainingConfig,
                        plan: TrainingPlan) -> dict[str, Any]:
        return {"num_images": len(train), "num_classes": train.num_classes,
                "epochs": config.epochs, "seed": config.seed}

    @torch.no_grad()
    def evaluate(self, pipeline: TunablePipeline, dataset: ImageClassificationDataset, *,
                 batch_size: int, zero_shot: bool, num_workers: int = 0,
                 pin_memory: bool | None = None) -> EvaluationResult:
        check_dataset_classes(pipeline, dataset)
        transform = pipeline.backbone.image_transform(train=False)
        loader = eval_loader(dataset.with_transform(transform), pipeline.device, batch_size,
                             num_workers, pin_memory)
        preds = []
        seen = 0
        for pixels, _ in batch_progress(loader, len(loader), "evaluation"):
            pixels = pixels.to(pipeline.device, non_blocking=True)
            features = pipeline.image_features(pixels, len(pixels), frozen=zero_shot)
            logits = (pipeline.zero_shot_logits(features) if zero_shot
                      else pipeline.logits_from_features(features))
            check_finite_scores(
                # mypy cannot type a lambda with a default (python/mypy#15459)
                logits, lambda i, start=seen: dataset.records[start + i].describe(),  # type: ignore[misc]
                total=len(dataset), zero_shot=zero_shot, offset=seen,
                consequence="; no accuracy can be computed",
            )
            preds.append(logits.argmax(-1).cpu())
            seen += len(logits)
        assert pipeline.task is not None
        return EvaluationResult.from_predictions(torch.cat(preds), dataset.labels,
                                                 list(pipeline.task.labels))
