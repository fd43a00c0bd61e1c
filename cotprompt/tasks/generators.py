"""Generators for the non-classification tasks: ``caption`` (retrieval) and ``question-answer``
(VQA).

Both write one text per label and chain step from templates, like ``rule-based``, but their
labels are captions or candidate answers rather than class names:

* ``caption``: templates use ``{caption}`` (``{class}`` and ``{}`` are accepted as aliases); the
  default chain is one step ``"{caption}"`` and the untuned (zero-shot) text is the caption itself,
  as in CLIP's zero-shot retrieval.
* ``question-answer``: templates use ``{question}`` (from ``task.extra["question"]``) and
  ``{answer}`` (the label; ``{class}`` is an alias); the default chain is one step
  ``"question: {question} answer: {answer}"``.

The ``cot`` presets are three-step chains, coarse to fine; their wording is a reconstruction (the
CoT-PT paper's retrieval and VQA prompts are not published).
"""

from __future__ import annotations

import abc
import string
from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from cotprompt.backbones.base import Backbone
from cotprompt.config import ComponentConfig
from cotprompt.errors import ConfigError
from cotprompt.generators.rule_based import StepTemplates
from cotprompt.types import PromptChain, PromptStep, Task

RETRIEVAL = "retrieval"
VQA = "vqa"

#: Three-step caption chain of the ``cot`` preset (a reconstruction).
COT_CAPTION_STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("caption", ("{caption}",)),
    ("photo", ("a photo: {caption}",)),
    ("description", ("an image described as: {caption}",)),
)

DEFAULT_QA_TEMPLATE = "question: {question} answer: {answer}"

#: Three-step question-answer chain of the ``cot`` preset (a reconstruction).
COT_QA_STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("answer", (DEFAULT_QA_TEMPLATE,)),
    ("short", ("{question} {answer}",)),
    ("statement", ('the answer to "{question}" is {answer}',)),
)


def _fields(template: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"malformed template {template!r}: {exc}") from exc


def _check_templates(templates: Sequence[str], allowed: set[str], needed: set[str]) -> None:
    for template in templates:
        fields = _fields(template)
        unknown = sorted(fields - allowed)
        if unknown:
            raise ValueError(
                f"template {template!r} uses unknown field(s) {unknown}; allowed: {sorted(allowed)}"
            )
        missing = sorted(needed - fields)
        if missing:
            raise ValueError(f"template {template!r} must contain {{{missing[0]}}}")


def _fill(template: str, values: Mapping[str, str]) -> str:
    return template.replace("{}", "{class}").format_map(values)


class _TaskGeneratorConfig(ComponentConfig):
    steps: list[StepTemplates]
    preset: Literal["cot"] | None = None
    zero_shot_templates: list[str] = Field(min_length=1)


class CaptionGeneratorConfig(_TaskGeneratorConfig):
    """Options of the ``caption`` generator.

    Args:
        steps: The chain, coarse to fine; templates with ``{caption}``. Default: one step
            ``"{caption}"``.
        preset: ``"cot"`` replaces ``steps`` with :data:`COT_CAPTION_STEPS`.
        zero_shot_templates: Full sentences of the untuned model (default: the caption).
        long_captions: Captions whose texts do not fit the text encoder's context (77 tokens
            for CLIP, less the tuner's context vectors): ``error`` (default) refuses them,
            all of them named, before anything is scored or trained; ``truncate`` lets the
            tokenizer cut them as CLIP's own evaluation does, tuned and zero-shot alike, and
            logs how many were cut. Checked by :mod:`cotprompt.tasks.retrieval`.
    """

    steps: list[StepTemplates] = Field(
        default_factory=lambda: [StepTemplates(name="caption", templates=["{caption}"])],
        min_length=1,
    )
    zero_shot_templates: list[str] = Field(default_factory=lambda: ["{caption}"], min_length=1)
    long_captions: Literal["error", "truncate"] = "error"

    @model_validator(mode="after")
    def _check(self) -> CaptionGeneratorConfig:
        allowed = {"caption", "class", ""}
        for step in self.steps:
            _check_templates(step.templates, allowed, set())
        _check_templates(self.zero_shot_templates, allowed, set())
        return self


class QuestionAnswerGeneratorConfig(_TaskGeneratorConfig):
    """Options of the ``question-answer`` generator.

    Args:
        steps: The chain, coarse to fine; templates with ``{question}`` and ``{answer}``.
            Default: one step ``"question: {question} answer: {answer}"``.
        template: Shortcut for a one-step chain with this template (overrides ``steps``).
        preset: ``"cot"`` replaces ``steps`` with :data:`COT_QA_STEPS`.
        zero_shot_templates: Full sentences of the untuned model.
    """

    steps: list[StepTemplates] = Field(
        default_factory=lambda: [StepTemplates(name="answer", templates=[DEFAULT_QA_TEMPLATE])],
        min_length=1,
    )
    template: str | None = None
    zero_shot_templates: list[str] = Field(
        default_factory=lambda: [DEFAULT_QA_TEMPLATE], min_length=1
    )

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            _check_templates([value], {"question", "answer", "class", ""}, {"question"})
        return value

    @model_validator(mode="after")
    def _check(self) -> QuestionAnswerGeneratorConfig:
        allowed = {"question", "answer", "class", ""}
        for step in self.steps:
            _check_templates(step.templates, allowed, {"question"})
        _check_templates(self.zero_shot_templates, allowed, {"question"})
        return self


class _TemplateGenerator(abc.ABC):
    """Shared machinery: fill every step's templates for every label."""

    name: ClassVar[str]
    task_kinds: ClassVar[tuple[str, ...]]
    preset_steps: ClassVar[tuple[tuple[str, tuple[str, ...]], ...]]
    config: _TaskGeneratorConfig

    def _steps(self) -> list[tuple[str, list[str]]]:
        if self.config.preset == "cot":
            return [(name, list(templates)) for name, templates in self.preset_steps]
        return [(step.name, list(step.templates)) for step in self.config.steps]

    @abc.abstractmethod
    def _values(self, task: Task, label: str) -> dict[str, str]:
        """The template fields of ``label`` (``caption``, or ``question`` and ``answer``)."""

    def generate(self, task: Task, backbone: Backbone | None = None) -> PromptChain:
        """One text per (step, label, template).

        Returns:
            ``K = len(steps)`` steps over ``task.labels``; ``zero_shot`` from
            ``zero_shot_templates``.
        """
        values = [self._values(task, label) for label in task.labels]

        def texts(templates: Sequence[str]) -> tuple[tuple[str, ...], ...]:
            return tuple(
                tuple(dict.fromkeys(_fill(t, v) for t in templates)) for v in values
            )

        steps = tuple(PromptStep(name=name, texts=texts(ts)) for name, ts in self._steps())
        return PromptChain(
            labels=task.labels, steps=steps, zero_shot=texts(self.config.zero_shot_templates)
        )


class CaptionGenerator(_TemplateGenerator):
    """Retrieval prompts: learnable context around each caption (the captions are the labels)."""

    name: ClassVar[str] = "caption"
    Config: ClassVar[type[CaptionGeneratorConfig]] = CaptionGeneratorConfig
    task_kinds: ClassVar[tuple[str, ...]] = (RETRIEVAL,)
    preset_steps = COT_CAPTION_STEPS

    def __init__(self, config: CaptionGeneratorConfig | None = None) -> None:
        self.config = config or CaptionGeneratorConfig()

    def _values(self, task: Task, label: str) -> dict[str, str]:
        return {"caption": label, "class": label}


class QuestionAnswerGenerator(_TemplateGenerator):
    """VQA prompts: one text per candidate answer (the labels), including the question."""

    name: ClassVar[str] = "question-answer"
    Config: ClassVar[type[QuestionAnswerGeneratorConfig]] = QuestionAnswerGeneratorConfig
    task_kinds: ClassVar[tuple[str, ...]] = (VQA,)
    preset_steps = COT_QA_STEPS
    config: QuestionAnswerGeneratorConfig

    def __init__(self, config: QuestionAnswerGeneratorConfig | None = None) -> None:
        self.config = config or QuestionAnswerGeneratorConfig()

    def _steps(self) -> list[tuple[str, list[str]]]:
        if self.config.template is not None:
            return [("answer", [self.config.template])]
        return super()._steps()

    def _values(self, task: Task, label: str) -> dict[str, str]:
        question = task.extra.get("question")
        if not isinstance(question, str) or not question.strip():
            raise ConfigError(
                "the question-answer generator needs the question in task.extra['question'] "
                f"(task kind {task.kind!r})"
            )
        return {"question": question.strip(), "answer": label, "class": label}
