"""The tasks: classification, image-text retrieval and visual question answering.

Each is a task head (:mod:`cotprompt.pipeline.heads`) registered here: ``CoTPipeline.fit`` and
``CoTPipeline.evaluate`` find the head of the dataset they are given
(:class:`~cotprompt.data.ImageClassificationDataset`, :class:`RetrievalDataset`,
:class:`VQADataset`) and drive it through one training template; the same backbones, tuners,
aggregators, artifacts and model cards serve all three. Build a pipeline for a task with
:func:`for_task`, which picks the task's generator (``caption`` or ``question-answer``). See
``docs/retrieval.md`` and ``docs/vqa.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cotprompt.backbones.base import Backbone
from cotprompt.data.retrieval import (
    RetrievalDataset,
    from_caption_csv,
    from_coco_captions,
    from_karpathy,
)
from cotprompt.data.vqa import (
    VQADataset,
    VQAQuestion,
    from_vqa_json,
    normalize_answer,
)
from cotprompt.errors import ConfigError
from cotprompt.evaluation.task_metrics import (
    RetrievalResult,
    VQAResult,
    recall_from_scores,
    vqa_score,
)
from cotprompt.pipeline.config import TASK_GENERATORS, choose_preset, method_create_kwargs
from cotprompt.pipeline.core import CoTPipeline
from cotprompt.pipeline.heads import register_task_head
from cotprompt.tasks.classification import ClassificationHead
from cotprompt.tasks.generators import (
    RETRIEVAL,
    VQA,
    CaptionGenerator,
    CaptionGeneratorConfig,
    QuestionAnswerGenerator,
    QuestionAnswerGeneratorConfig,
)
from cotprompt.tasks.retrieval import (
    RetrievalEvalConfig,
    caption_logits,
    similarity,
)
from cotprompt.tasks.retrieval_head import RetrievalHead, evaluate_retrieval, fit_retrieval
from cotprompt.tasks.vqa import (
    VQAEvalConfig,
    answer_logits,
    predict_answers,
    set_answer_vocabulary,
)
from cotprompt.tasks.vqa_head import VQAHead, evaluate_vqa, fit_vqa

if TYPE_CHECKING:
    from cotprompt.training.config import TrainingConfig
    from cotprompt.training.loop import StepInfo, TrainingResult

TaskDataset = RetrievalDataset | VQADataset
TaskResult = RetrievalResult | VQAResult

for _head in (ClassificationHead(), RetrievalHead(), VQAHead()):
    register_task_head(_head)

__all__ = [
    "RETRIEVAL",
    "TASK_GENERATORS",
    "VQA",
    "CaptionGenerator",
    "CaptionGeneratorConfig",
    "ClassificationHead",
    "QuestionAnswerGenerator",
    "QuestionAnswerGeneratorConfig",
    "RetrievalDataset",
    "RetrievalEvalConfig",
    "RetrievalHead",
    "RetrievalResult",
    "TaskDataset",
    "TaskResult",
    "VQADataset",
    "VQAEvalConfig",
    "VQAHead",
    "VQAQuestion",
    "VQAResult",
    "answer_logits",
    "caption_logits",
    "evaluate_retrieval",
    "evaluate_task",
    "evaluate_vqa",
    "fit_retrieval",
    "fit_task",
    "fit_vqa",
    "for_task",
    "from_caption_csv",
    "from_coco_captions",
    "from_karpathy",
    "from_vqa_json",
    "is_task_dataset",
    "normalize_answer",
    "predict_answers",
    "recall_from_scores",
    "set_answer_vocabulary",
    "similarity",
    "vqa_score",
]


def is_task_dataset(dataset: object) -> bool:
    """True for the datasets this package handles (retrieval, VQA)."""
    return isinstance(dataset, (RetrievalDataset, VQADataset))


def fit_task(
    pipeline: CoTPipeline,
    train: TaskDataset,
    *,
    val: TaskDataset | None = None,
    training: TrainingConfig | Mapping[str, Any] | None = None,
    resume_from: str | Path | None = None,
    callbacks: Sequence[Callable[[StepInfo], None]] = (),
) -> TrainingResult:
    """Train on a retrieval or VQA dataset: ``pipeline.fit`` (kept for its callers).

    Raises:
        ConfigError: ``val`` is of another task than ``train``.
    """
    return pipeline.fit(train, val=val, training=training, resume_from=resume_from,
                        callbacks=callbacks)


def evaluate_task(
    pipeline: CoTPipeline,
    dataset: TaskDataset,
    *,
    batch_size: int = 64,
    zero_shot: bool = False,
    split: str | None = None,
) -> TaskResult:
    """Evaluate on a retrieval or VQA dataset: ``pipeline.evaluate`` (kept for its callers)."""
    return pipeline.evaluate(dataset, batch_size=batch_size, zero_shot=zero_shot, split=split)


def for_task(
    task: str,
    method: str = "coop",
    *,
    backbone: Backbone | None = None,
    model_name: str = "ViT-B-16",
    pretrained: str | None = "openai",
    generator_config: Mapping[str, Any] | None = None,
    tuner_config: Mapping[str, Any] | None = None,
    training: TrainingConfig | Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
) -> CoTPipeline:
    """CoOp, CoCoOp or CoT-PT set up for ``"retrieval"`` or ``"vqa"``.

    The tuner and aggregator are the method's (see ``CoTPipeline.for_method``); the generator is
    the task's (``caption`` / ``question-answer``), with its three-step ``cot`` preset for
    ``cotpt`` (:func:`cotprompt.pipeline.config.method_create_kwargs`).

    Args:
        task: ``"retrieval"`` or ``"vqa"``.
        method: ``"coop"``, ``"cocoop"`` or ``"cotpt"``.
        backbone: An already built backbone (else open_clip ``model_name`` / ``pretrained``).
        generator_config: Options of the task's generator (for VQA e.g.
            ``{"template": "Q: {question} A: {answer}"}``).
        tuner_config: Overrides of the tuner's options.
        training: Training options.
        device: Where to run.

    Raises:
        ConfigError: Unknown task or method (with the closest name).
    """
    if task == "classification":
        raise ConfigError("for_task builds retrieval and VQA pipelines; for classification use "
                          f"CoTPipeline.for_method({method!r}, ...)")
    choose_preset("task", task, TASK_GENERATORS)
    kwargs = method_create_kwargs(method, model_name=model_name, pretrained=pretrained,
                                  backbone=backbone, tuner_config=tuner_config, task=task,
                                  generator_config=generator_config)
    return CoTPipeline.create(**kwargs, training=training, device=device)
