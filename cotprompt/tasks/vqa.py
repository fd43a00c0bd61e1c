"""Visual question answering with prompt chains: candidate answers are the classes.

A VQA pipeline is bound to an answer vocabulary (the most frequent N reference answers of the
training set); for a question q the generator (``question-answer``) writes, for every candidate
answer a and chain step k, a text such as ``"question: q answer: a"``, the tuner puts its
(image-conditioned, chained) context around it and the aggregator scores the image against the
A answers. Training minimises the cross-entropy against the soft VQA targets
``min(#humans / 3, 1)`` (normalised over the vocabulary).

Cost: every question has its own A x K texts, so a set of Q questions costs Q_distinct x A x K
text-encoder passes with an unconditioned tuner (questions asked several times are encoded once;
the texts of many questions are bound together, up to ``max_texts_per_call``) and Q x A x K with
an image-conditioned one (one call per distinct question, batched over its images, answers and
steps). Keep A moderate (hundreds) on large question sets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from pydantic import Field
from torch import Tensor

from cotprompt.backbones.zero_shot import zero_shot_classifier, zero_shot_logits
from cotprompt.config import ComponentConfig
from cotprompt.data.vqa import VQADataset
from cotprompt.errors import ConfigError, DataError
from cotprompt.evaluation.task_metrics import VQAResult, vqa_score
from cotprompt.pipeline.inputs import ImagesInput
from cotprompt.tasks import loops
from cotprompt.tasks._tokens import binding_backbone
from cotprompt.tasks.generators import VQA
from cotprompt.tuners.prompt_tokens import labels_may_coincide
from cotprompt.types import PromptChain, PromptStep, Task

if TYPE_CHECKING:
    from cotprompt.pipeline import CoTPipeline

logger = logging.getLogger(__name__)

#: The stand-in question of the chain a VQA pipeline is bound to (and saved with).
QUESTION_PLACEHOLDER = "{question}"


class VQAEvalConfig(ComponentConfig):
    """How VQA questions are scored.

    Args:
        leave_one_out: Average ``min(matches / 3, 1)`` over the ten 9-annotator subsets (the
            official script) instead of using all answers at once.
        questions_per_batch: Questions scored together (sorted by text, so repeated questions
            share their texts).
        max_texts_per_call: Texts bound and encoded at once with an unconditioned tuner.
    """

    leave_one_out: bool = False
    questions_per_batch: int = Field(default=256, ge=1)
    max_texts_per_call: int = Field(default=16_384, ge=1)


def vocabulary(pipeline: CoTPipeline) -> tuple[str, ...]:
    """The answer vocabulary the pipeline is bound to.

    Raises:
        ConfigError: The pipeline is not bound to a VQA task.
    """
    if pipeline.task is None or pipeline.task.kind != VQA:
        raise ConfigError(
            "the pipeline has no answer vocabulary: fit it on VQA data, or call "
            "cotprompt.tasks.set_answer_vocabulary(pipeline, answers) first"
        )
    return pipeline.task.labels


def set_answer_vocabulary(pipeline: CoTPipeline, answers: Sequence[str]) -> None:
    """Bind the pipeline to a VQA task over ``answers`` (duplicates and blanks dropped).

    Raises:
        DataError: The vocabulary is empty.
        ConfigError: The generator has no VQA prompts.
    """
    loops.check_generator(pipeline, VQA)
    clean = list(dict.fromkeys(str(a).strip() for a in answers if str(a).strip()))
    if not clean:
        raise DataError("the answer vocabulary is empty; give at least one answer")
    pipeline.set_classes(
        Task(labels=tuple(clean), kind=VQA, extra={"question": QUESTION_PLACEHOLDER})
    )


def _chain(pipeline: CoTPipeline, question: str) -> PromptChain:
    task = Task(labels=vocabulary(pipeline), kind=VQA, extra={"question": question})
    return loops.generate(pipeline, task)


def _merge(chains: Sequence[PromptChain]) -> PromptChain:
    """One chain over the answers of several questions, question-major (labels made unique)."""
    steps = tuple(
        PromptStep(name=step.name, texts=tuple(t for c in chains for t in c.steps[k].texts))
        for k, step in enumerate(chains[0].steps)
    )
    return PromptChain(
        labels=tuple(f"[{j}] {label}" for j, c in enumerate(chains) for label in c.labels),
        steps=steps,
        zero_shot=tuple(z for c in chains for z in c.zero_shot),
    )


def _aggregate(pipeline: CoTPipeline, features: Tensor, text: Tensor) -> Tensor:
    return pipeline.aggregator(features, text, pipeline.backbone.logit_scale.float())


def answer_logits(
    pipeline: CoTPipeline,
    image_features: Tensor,
    questions: Sequence[str],
    config: VQAEvalConfig | None = None,
) -> Tensor:
    """Logits ``[B, A]`` of each image's question against the A vocabulary answers.

    Image-conditioned (or class-specific) tuners: one tuner call per distinct question over its
    images, batched over answers x steps. Others: the texts of several distinct questions are
    bound once and encoded without images. Gradients flow when enabled.

    Args:
        pipeline: Bound to a VQA task.
        image_features: ``[B, E]`` normalised features, one per question.
        questions: B question texts.
    """
    config = config or VQAEvalConfig()
    if len(questions) != image_features.shape[0]:
        raise DataError(f"{len(questions)} questions for {image_features.shape[0]} images")
    tuner, backbone = pipeline.tuner, pipeline.backbone
    binder = binding_backbone(pipeline)
    index: dict[str, int] = {}
    inverse = torch.tensor([index.setdefault(q, len(index)) for q in questions])
    unique = list(index)
    rows_of = [torch.nonzero(inverse == j).flatten() for j in range(len(unique))]
    pieces: list[Tensor] = []
    order: list[Tensor] = []
    device = image_features.device
    if tuner.image_conditioned or loops.class_specific(pipeline):
        for question, rows in zip(unique, rows_of, strict=True):
            with labels_may_coincide():  # answers are free text: two may tokenize alike
                tuner.bind(binder, _chain(pipeline, question))
            feats = image_features[rows.to(device)]
            text = tuner.encode_text(backbone, feats if tuner.image_conditioned else None)
            pieces.append(_aggregate(pipeline, feats, text))
            order.append(rows)
    else:
        first = _chain(pipeline, unique[0])
        per_question = sum(len(t) for step in first.steps for t in step.texts)
        per_call = max(1, config.max_texts_per_call // per_question)
        for start in range(0, len(unique), per_call):
            chunk = range(start, min(start + per_call, len(unique)))
            chains = [first if j == 0 else _chain(pipeline, unique[j]) for j in chunk]
            with labels_may_coincide():
                tuner.bind(binder, _merge(chains))
            text = tuner.encode_text(backbone, None)  # [1, K, m * A, E]
            steps, answers = text.shape[1], text.shape[2] // len(chunk)
            text = text[0].reshape(steps, len(chunk), answers, -1)
            for local, j in enumerate(chunk):
                feats = image_features[rows_of[j].to(device)]
                pieces.append(_aggregate(pipeline, feats, text[:, local].unsqueeze(0)))
                order.append(rows_of[j])
    logits = torch.cat(pieces)
    return logits[torch.argsort(torch.cat(order)).to(logits.device)]


@torch.no_grad()
def _zero_shot_logits(
    pipeline: CoTPipeline, image_features: Tensor, questions: Sequence[str]
) -> Tensor:
    """``[B, A]`` logits of the untuned model: zero-shot sentences, plain text encoder."""
    out = []
    cache: dict[str, Tensor] = {}
    for feats, question in zip(image_features, questions, strict=True):
        if question not in cache:
            chain = _chain(pipeline, question)
            cache[question] = zero_shot_classifier(pipeline.backbone, chain.zero_shot)
        out.append(zero_shot_logits(pipeline.backbone, feats, cache[question]))
    return torch.stack(out)


@torch.no_grad()
def score_questions(
    pipeline: CoTPipeline, features: Tensor, dataset: VQADataset, config: VQAEvalConfig,
    zero_shot: bool,
) -> Tensor:
    """``[Q, A]`` logits of every question of ``dataset`` (``features``: its images')."""
    pipeline.model.eval()
    order = sorted(range(len(dataset)), key=lambda n: dataset.questions[n].question)
    out = torch.empty(len(dataset), len(vocabulary(pipeline)))
    try:
        for start in range(0, len(order), config.questions_per_batch):
            batch = order[start : start + config.questions_per_batch]
            questions = [dataset.questions[n].question for n in batch]
            images = torch.tensor([dataset.questions[n].image for n in batch],
                                  device=features.device)
            feats = features[images]
            logits = (_zero_shot_logits(pipeline, feats, questions) if zero_shot
                      else answer_logits(pipeline, feats, questions, config))
            out[torch.tensor(batch)] = logits.float().cpu()
    finally:
        loops.restore_binding(pipeline)
    return out


def summarise(
    dataset: VQADataset, vocab: Sequence[str], predicted: Sequence[str], leave_one_out: bool,
    seconds: float,
) -> VQAResult:
    """VQA accuracy of predicted answers (one per question of ``dataset``), with the in-vocabulary
    and oracle accuracies and the out-of-vocabulary counts (logged)."""
    known = set(vocab)
    scores, in_vocab, oracle = [], [], []
    oov = unanswerable = 0
    for question, answer in zip(dataset.questions, predicted, strict=True):
        score = vqa_score(answer, question.answers, leave_one_out)
        scores.append(score)
        if question.answer in known:
            in_vocab.append(score)
        else:
            oov += 1
        reachable = [a for a in set(question.answers) if a in known]
        if not reachable:
            unanswerable += 1
        oracle.append(max((vqa_score(a, question.answers, leave_one_out) for a in reachable),
                          default=0.0))
    if oov:
        logger.warning(
            "%d of %d questions have a reference answer outside the %d-answer vocabulary "
            "(%d with no human answer in it: these score 0 whatever is predicted)",
            oov, len(scores), len(vocab), unanswerable,
        )
    return VQAResult(
        accuracy=100 * sum(scores) / len(scores),
        accuracy_in_vocabulary=100 * sum(in_vocab) / len(in_vocab) if in_vocab else None,
        oracle_accuracy=100 * sum(oracle) / len(oracle),
        num_questions=len(scores),
        num_out_of_vocabulary=oov,
        num_unanswerable=unanswerable,
        num_answers=len(vocab),
        seconds=seconds,
        predictions=tuple(predicted),
    )


@torch.no_grad()
def predict_answers(
    pipeline: CoTPipeline,
    images: ImagesInput,
    questions: Sequence[str],
    *,
    top_k: int = 1,
    batch_size: int = 64,
) -> list[list[tuple[str, float]]]:
    """The ``top_k`` answers (with softmax probabilities over the vocabulary) of each question.

    Args:
        images: One image per question (paths, PIL images or ``[B, 3, H, W]`` pixels).
        questions: The questions.
    """
    vocab = vocabulary(pipeline)
    loops.check_generator(pipeline, VQA)
    features = pipeline.image_features(images, batch_size)
    try:
        probs = answer_logits(pipeline, features, list(questions)).softmax(-1)
    finally:
        loops.restore_binding(pipeline)
    values, indices = probs.topk(max(1, min(top_k, len(vocab))), dim=-1)
    return [
        [(vocab[i], float(v)) for v, i in zip(vs, ids, strict=True)]
        for vs, ids in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def soft_targets(dataset: VQADataset, vocab: Sequence[str]) -> tuple[list[int], Tensor]:
    """Training targets: the questions with at least one human answer in the vocabulary, and
    their ``[Q', A]`` target distributions (VQA scores ``min(count / 3, 1)``, normalised)."""
    position = {a: i for i, a in enumerate(vocab)}
    kept, rows = [], []
    for n, question in enumerate(dataset.questions):
        row = torch.zeros(len(vocab))
        for answer in set(question.answers):
            if answer in position:
                row[position[answer]] = vqa_score(answer, question.answers)
        if row.sum() > 0:
            kept.append(n)
            rows.append(row / row.sum())
    return kept, (torch.stack(rows) if rows else torch.empty(0, len(vocab)))
