"""Task families beyond classification: image-text retrieval and visual question answering.

``CoTPipeline.fit`` and ``CoTPipeline.evaluate`` hand a :class:`RetrievalDataset` or a
:class:`VQADataset` to this package (see :func:`fit_task` and :func:`evaluate_task`); the same
backbones, tuners, aggregators, artifacts and model cards serve all three tasks. Build a pipeline
for a task with :func:`for_task`, which picks the task's generator (``caption`` or
``question-answer``). See ``docs/retrieval.md`` and ``docs/vqa.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotprompt.errors import ConfigError
from cotprompt.tasks.generators import (
    RETRIEVAL,
    VQA,
    CaptionGenerator,
    CaptionGeneratorConfig,
    QuestionAnswerGenerator,
    QuestionAnswerGeneratorConfig,
)
from cotprompt.tasks.metrics import (
    RetrievalResult,
    VQAResult,
    recall_from_scores,
    vqa_score,
)
from cotprompt.tasks.retrieval import (
    RetrievalEvalConfig,
    caption_logits,
    evaluate_retrieval,
    fit_retrieval,
    similarity,
)
from cotprompt.tasks.retrieval_data import (
    RetrievalDataset,
    from_caption_csv,
    from_coco_captions,
    from_karpathy,
)
from cotprompt.tasks.vqa import (
    VQAEvalConfig,
    answer_logits,
    evaluate_vqa,
    fit_vqa,
    predict_answers,
    set_answer_vocabulary,
)
from cotprompt.tasks.vqa_data import (
    VQADataset,
    VQAQuestion,
    from_vqa_json,
    normalize_answer,
)

if TYPE_CHECKING:
    from cotprompt.pipeline.core import CoTPipeline
    from cotprompt.training.config import TrainingConfig
    from cotprompt.training.trainer import StepInfo, TrainingResult

TaskDataset = RetrievalDataset | VQADataset
TaskResult = RetrievalResult | VQAResult

#: The generator of each task kind, by registered name.
TASK_GENERATORS = {RETRIEVAL: "caption", VQA: "question-answer"}

__all__ = [
    "RETRIEVAL",
    "TASK_GENERATORS",
    "VQA",
    "CaptionGenerator",
    "CaptionGeneratorConfig",
    "QuestionAnswerGenerator",
    "QuestionAnswerGeneratorConfig",
    "RetrievalDataset",
    "RetrievalEvalConfig",
    "RetrievalResult",
    "TaskDataset",
    "TaskResult",
    "VQADataset",
    "VQAEvalConfig",
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
    """Train on a retrieval or VQA dataset (``CoTPipeline.fit`` dispatches here).

    Raises:
        ConfigError: ``val`` is of another task than ``train``.
    """
    if val is not None and type(val) is not type(train):
        raise ConfigError(f"train is a {type(train).__name__} but val a {type(val).__name__}")
    options = {"val": val, "training": training, "resume_from": resume_from,
               "callbacks": callbacks}
    if isinstance(train, RetrievalDataset):
        return fit_retrieval(pipeline, train, **options)  # type: ignore[arg-type]
    return fit_vqa(pipeline, train, **options)  # type: ignore[arg-type]


def evaluate_task(
    pipeline: CoTPipeline,
    dataset: TaskDataset,
    *,
    batch_size: int = 64,
    zero_shot: bool = False,
    split: str | None = None,
) -> TaskResult:
    """Evaluate on a retrieval or VQA dataset (``CoTPipeline.evaluate`` dispatches here)."""
    if isinstance(dataset, RetrievalDataset):
        return evaluate_retrieval(pipeline, dataset, batch_size=batch_size,
                                  zero_shot=zero_shot, split=split)
    return evaluate_vqa(pipeline, dataset, batch_size=batch_size, zero_shot=zero_shot,
                        split=split)


def for_task(
    task: str,
    method: str = "coop",
    *,
    backbone: Any = None,
    model_name: str = "ViT-B-16",
    pretrained: str | None = "openai",
    generator_config: Mapping[str, Any] | None = None,
    tuner_config: Mapping[str, Any] | None = None,
    training: TrainingConfig | Mapping[str, Any] | None = None,
    device: str | Any = None,
) -> CoTPipeline:
    """CoOp, CoCoOp or CoT-PT set up for ``"retrieval"`` or ``"vqa"``.

    The tuner and aggregator are the method's (see ``CoTPipeline.for_method``); the generator is
    the task's (``caption`` / ``question-answer``), with its three-step ``cot`` preset for
    ``cotpt``.

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
        ConfigError: Unknown task or method.
    """
    from cotprompt.pipeline.core import METHODS, CoTPipeline

    if task not in TASK_GENERATORS:
        raise ConfigError(f"unknown task {task!r}; choose one of {sorted(TASK_GENERATORS)}")
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    specs = METHODS[method]
    generator_options = {**({"preset": "cot"} if method == "cotpt" else {}),
                         **(generator_config or {})}
    return CoTPipeline.create(
        backbone=backbone if backbone is not None else "open_clip",
        backbone_config=None if backbone is not None else {
            "model_name": model_name, "pretrained": pretrained},
        generator=TASK_GENERATORS[task], generator_config=generator_options,
        tuner=specs["tuner"].name, tuner_config={**specs["tuner"].config, **(tuner_config or {})},
        aggregator=specs["aggregator"].name, aggregator_config=specs["aggregator"].config,
        training=training, device=device,
    )
