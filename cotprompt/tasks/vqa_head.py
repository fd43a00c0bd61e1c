"""Visual question answering as a task head: how ``CoTPipeline.fit`` and ``CoTPipeline.evaluate``
treat a :class:`~cotprompt.tasks.VQADataset` (scoring itself is :mod:`cotprompt.tasks.vqa`).

Training: a pipeline not yet bound to a VQA task gets the ``num_answers`` most frequent reference
answers of the training set as its vocabulary; each question's target is the distribution of its
human answers' VQA scores over the vocabulary (soft cross-entropy). Questions none of whose human
answers is in the vocabulary cannot be learned: they are counted, logged and left out of the
loss. ``training.batch_size`` counts questions. Evaluation reports VQA accuracy with
out-of-vocabulary counts.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from cotprompt.config import validate_options
from cotprompt.data.task_io import PixelList
from cotprompt.data.vqa import DEFAULT_NUM_ANSWERS, VQADataset
from cotprompt.errors import DataError
from cotprompt.evaluation.task_metrics import VQAResult
from cotprompt.tasks import loops
from cotprompt.tasks.generators import VQA
from cotprompt.tasks.vqa import (
    VQAEvalConfig,
    answer_logits,
    score_questions,
    set_answer_vocabulary,
    soft_targets,
    summarise,
    vocabulary,
)
from cotprompt.training.config import TrainingConfig
from cotprompt.training.loop import StepInfo, TrainingPlan, TrainingResult

if TYPE_CHECKING:
    from accelerate import Accelerator

    from cotprompt.pipeline import CoTPipeline

logger = logging.getLogger("cotprompt.tasks.vqa")  # the logger name users configure


class VQAHead:
    """Questions about images (:class:`~cotprompt.tasks.VQADataset`).

    Args:
        eval_config: Scoring options of evaluation and validation.
        num_answers: Vocabulary size given to a pipeline not yet bound to a VQA task.
    """

    kind = VQA
    data_parallel = False

    def __init__(self, eval_config: VQAEvalConfig | Mapping[str, Any] | None = None,
                 num_answers: int = DEFAULT_NUM_ANSWERS) -> None:
        if isinstance(eval_config, Mapping):
            eval_config = validate_options(VQAEvalConfig, eval_config, label="VQA scoring")
        self.eval_config = eval_config
        self.num_answers = num_answers

    def accepts(self, dataset: object) -> bool:
        return isinstance(dataset, VQADataset)

    def prepare(self, pipeline: CoTPipeline, train: VQADataset, val: VQADataset | None,
                config: TrainingConfig) -> None:
        if not train.annotated:
            raise DataError("VQA training needs human answers for every question")
        loops.check_generator(pipeline, VQA)
        if pipeline.task is None or pipeline.task.kind != VQA:
            set_answer_vocabulary(pipeline, train.answer_vocabulary(self.num_answers))

    def plan(self, pipeline: CoTPipeline, train: VQADataset, val: VQADataset | None,
             config: TrainingConfig, accelerator: Accelerator) -> TrainingPlan:
        vocab = vocabulary(pipeline)
        kept, targets = soft_targets(train, vocab)
        skipped = len(train) - len(kept)
        if not kept:
            raise DataError(f"none of the {len(train)} training questions has a human answer in "
                            f"the {len(vocab)}-answer vocabulary")
        if skipped:
            logger.warning("%d of %d training questions have no human answer in the %d-answer "
                           "vocabulary; they are left out of the loss", skipped, len(train),
                           len(vocab))
        device = accelerator.device
        cached = loops.cacheable(pipeline, config)
        features = (loops.train_features(pipeline, train.images, config, accelerator)
                    if cached else None)
        pixels = PixelList(train.images, pipeline.backbone.image_transform(train=config.augment))

        def step_loss(model: Any, batch: list[int], epoch: int) -> Tensor:
            picked = [kept[b] for b in batch]
            images = [train.questions[n].image for n in picked]
            if features is not None:
                feats = features[torch.tensor(images, device=features.device)]
            else:
                feats = pipeline.model.image_features(pixels.batch(images).to(device))
            questions = [train.questions[n].question for n in picked]
            logits = answer_logits(pipeline, feats, questions, self.eval_config)
            return loops.soft_cross_entropy(logits, targets[torch.tensor(batch)])

        validate = None
        if val is not None:
            val_features = loops.frozen_val_features(pipeline, val.images, val.transform)
            val_config = self.eval_config or VQAEvalConfig()

            def validate() -> dict[str, float]:
                features = loops.current_val_features(pipeline, val_features, val.images,
                                                      val.transform)
                logits = score_questions(pipeline, features, val, val_config, False)
                predicted = [vocab[i] for i in logits.argmax(-1).tolist()]
                result = summarise(val, vocab, predicted, val_config.leave_one_out, 0.0)
                return {"val_vqa_accuracy": result.accuracy}

        return TrainingPlan(
            num_items=len(kept), step_loss=step_loss, validate=validate,
            fingerprint={"task": VQA, "answers": list(vocab), "num_questions": len(kept)},
            features_cached=cached,
        )

    @contextlib.contextmanager
    def training_scope(self, pipeline: CoTPipeline) -> Iterator[None]:
        try:
            yield
        finally:
            loops.restore_binding(pipeline)

    def training_record(self, train: VQADataset, config: TrainingConfig,
                        plan: TrainingPlan) -> dict[str, Any]:
        return {"task": VQA, "num_questions": len(train),
                "num_trained_questions": plan.num_items, "num_images": len(train.images),
                "num_answers": len(plan.fingerprint["answers"]), "epochs": config.epochs,
                "seed": config.seed}

    def evaluate(self, pipeline: CoTPipeline, dataset: VQADataset, *, batch_size: int,
                 zero_shot: bool, num_workers: int = 0,
                 pin_memory: bool | None = None) -> VQAResult:
        config = self.eval_config or VQAEvalConfig()
        loops.check_generator(pipeline, VQA)
        vocab = vocabulary(pipeline)
        if not dataset.annotated:
            raise DataError("the VQA dataset has questions without human answers: it cannot be "
                            "scored (use cotprompt.tasks.predict_answers)")
        started = time.perf_counter()
        features = loops.eval_features(pipeline, dataset.images, batch_size, dataset.transform,
                                       num_workers, pin_memory)
        logits = score_questions(pipeline, features, dataset, config, zero_shot)
        predicted = [vocab[i] for i in logits.argmax(-1).tolist()]
        result = summarise(dataset, vocab, predicted, config.leave_one_out,
                           time.perf_counter() - started)
        logger.info("VQA accuracy %.2f%% on %d questions (%d out of vocabulary), %.1f s",
                    result.accuracy, result.num_questions, result.num_out_of_vocabulary,
                    result.seconds)
        return result


def evaluate_vqa(
    pipeline: CoTPipeline,
    dataset: VQADataset,
    *,
    batch_size: int = 64,
    zero_shot: bool = False,
    split: str | None = None,
    config: VQAEvalConfig | Mapping[str, Any] | None = None,
) -> VQAResult:
    """VQA accuracy over the pipeline's answer vocabulary (what ``pipeline.evaluate(vqa_dataset)``
    runs, with scoring options). Questions whose answers are outside the vocabulary are kept,
    counted in the result and logged.

    Args:
        pipeline: Bound to a VQA task (fitted, loaded, or
            :func:`~cotprompt.tasks.set_answer_vocabulary`).
        dataset: Annotated questions.
        batch_size: Images per image-encoder batch.
        zero_shot: Evaluate the untuned model (the generator's zero-shot sentences).
        split: If given, the metrics are recorded in ``pipeline.metrics[split]`` (model card).
        config: Scoring options (:class:`~cotprompt.tasks.VQAEvalConfig`).

    Raises:
        ConfigError: No answer vocabulary, or a generator without VQA prompts.
        DataError: Questions without human answers.
    """
    return pipeline.evaluate(dataset, batch_size=batch_size, zero_shot=zero_shot, split=split,
                             task_head=VQAHead(eval_config=config))


def fit_vqa(
    pipeline: CoTPipeline,
    train: VQADataset,
    *,
    val: VQADataset | None = None,
    training: TrainingConfig | Mapping[str, Any] | None = None,
    resume_from: str | Path | None = None,
    callbacks: Sequence[Callable[[StepInfo], None]] = (),
    num_answers: int = DEFAULT_NUM_ANSWERS,
    eval_config: VQAEvalConfig | None = None,
) -> TrainingResult:
    """Train the prompts for VQA (what ``pipeline.fit(vqa_dataset)`` runs, with the head's
    options; see :class:`VQAHead`).

    Raises:
        DataError: Unannotated questions, or none with an answer in the vocabulary.
    """
    return pipeline.fit(train, val=val, training=training, resume_from=resume_from,
                        callbacks=callbacks,
                        task_head=VQAHead(eval_config=eval_config, num_answers=num_answers))
