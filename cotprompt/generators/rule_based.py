"""Generator ``rule-based``: chains from templates with ``{class}`` and other fields."""

from __future__ import annotations

import itertools
import logging
import string
from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cotprompt.backbones.base import Backbone
from cotprompt.config import ComponentConfig
from cotprompt.errors import ConfigError
from cotprompt.generators.templates import (
    COT_DEFAULT_STEPS,
    IMAGENET_TEMPLATES,
    IMAGENET_TEMPLATES_SELECT,
    dataset_template,
)
from cotprompt.types import PromptChain, PromptStep, Task

logger = logging.getLogger(__name__)

ZeroShotPreset = Literal["dataset", "imagenet", "imagenet-select"]


class StepTemplates(BaseModel):
    """One chain step: a name and one or more templates (ensembled).

    Templates use ``{class}`` (or CoOp's ``{}``) for the label and ``{field}`` for any task
    attribute, for example ``"{class}, a type of {group}."``.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    templates: list[str] = Field(min_length=1)


def _default_steps() -> list[StepTemplates]:
    return [StepTemplates(name="class", templates=["{class}."])]


class RuleBasedConfig(ComponentConfig):
    """Options of the rule-based generator.

    Args:
        steps: The chain, coarse to fine. Default: one step ``"{class}."`` (CoOp / CoCoOp).
        preset: ``"cot"`` replaces ``steps`` with the built-in three-step chain
            (:data:`~cotprompt.generators.templates.COT_DEFAULT_STEPS`).
        zero_shot_templates: Sentences for the untuned classifier: a list of templates, or
            ``"dataset"`` (CoOp's template for the task's dataset, else
            ``"a photo of a {class}."``),
            ``"imagenet"`` (CLIP's 80 templates) or ``"imagenet-select"`` (CoOp's 7).
        dataset: Dataset name for ``"dataset"`` templates; defaults to the task's.
        attributes: Extra fields per label, ``{field: {label: [value, ...]}}``, merged over the
            task's attributes. A field with several values gives one text per value (ensembled).
        missing_field: ``"error"``: a template whose field is unknown for a label is an error;
            ``"skip"``: that template is skipped for that label (an error if none is left).
    """

    steps: list[StepTemplates] = Field(default_factory=_default_steps, min_length=1)
    preset: Literal["cot"] | None = None
    zero_shot_templates: list[str] | ZeroShotPreset = "dataset"
    dataset: str | None = None
    attributes: dict[str, dict[str, list[str]]] = Field(default_factory=dict)
    missing_field: Literal["error", "skip"] = "error"

    @field_validator("zero_shot_templates")
    @classmethod
    def _non_empty(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list) and not value:
            raise ValueError("zero_shot_templates must not be empty")
        return value


class _MissingField(Exception):
    pass


def _fields_of(template: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]


def _normalise(template: str) -> str:
    return template.replace("{}", "{class}")


def fill_template(
    template: str, label: str, attributes: Mapping[str, Mapping[str, Sequence[str]]]
) -> list[str]:
    """All texts of ``template`` for ``label`` (one per combination of field values).

    Raises:
        ConfigError: the template is malformed.
        _MissingField: a field has no value for this label.
    """
    template = _normalise(template)
    try:
        fields = _fields_of(template)
    except ValueError as exc:
        raise ConfigError(f"malformed template {template!r}: {exc}") from exc
    names = sorted({f for f in fields if f != "class"})
    choices = []
    for name in names:
        values = attributes.get(name, {}).get(label)
        if not values:
            raise _MissingField(name)
        choices.append(list(values))
    texts = []
    for combo in itertools.product(*choices):
        fill = dict(zip(names, combo, strict=True), **{"class": label})
        texts.append(template.format_map(fill))
    return texts


class RuleBasedGenerator:
    """Builds a prompt chain from templates; ships CoOp's templates and the ImageNet ensemble."""

    name: ClassVar[str] = "rule-based"
    Config: ClassVar[type[RuleBasedConfig]] = RuleBasedConfig

    def __init__(self, config: RuleBasedConfig | None = None) -> None:
        self.config = config or RuleBasedConfig()

    def _steps(self) -> list[StepTemplates]:
        if self.config.preset == "cot":
            return [StepTemplates(name=n, templates=list(t)) for n, t in COT_DEFAULT_STEPS]
        return self.config.steps

    def _zero_shot_templates(self, task: Task) -> list[str]:
        preset = self.config.zero_shot_templates
        if isinstance(preset, list):
            return preset
        if preset == "imagenet":
            return list(IMAGENET_TEMPLATES)
        if preset == "imagenet-select":
            return list(IMAGENET_TEMPLATES_SELECT)
        template = dataset_template(self.config.dataset or task.dataset)
        return [template or "a photo of a {class}."]

    def generate(self, task: Task, backbone: Backbone | None = None) -> PromptChain:
        """Fill every step's templates for every label of ``task``.

        Returns:
            K = ``len(steps)`` steps; ``zero_shot`` from ``zero_shot_templates``.
        """
        attributes: dict[str, dict[str, Sequence[str]]] = {
            k: dict(v) for k, v in task.attributes.items()
        }
        for field, per_label in self.config.attributes.items():
            attributes.setdefault(field, {}).update(per_label)
        steps = tuple(
            PromptStep(
                name=step.name, texts=self._fill(step.name, step.templates, task, attributes)
            )
            for step in self._steps()
        )
        zero_shot = self._fill("zero-shot", self._zero_shot_templates(task), task, attributes)
        return PromptChain(labels=task.labels, steps=steps, zero_shot=zero_shot)

    def _fill(
        self,
        step_name: str,
        templates: Sequence[str],
        task: Task,
        attributes: Mapping[str, Mapping[str, Sequence[str]]],
    ) -> tuple[tuple[str, ...], ...]:
        per_label = []
        for label in task.labels:
            texts: list[str] = []
            for template in templates:
                try:
                    texts.extend(fill_template(template, label, attributes))
                except _MissingField as missing:
                    if self.config.missing_field == "error":
                        raise ConfigError(
                            f"template {template!r} of step {step_name!r} uses field "
                            f"{{{missing}}}, which has no value for label {label!r}; give it in "
                            "the generator's `attributes` or set missing_field='skip'"
                        ) from None
            if not texts:
                raise ConfigError(
                    f"no template of step {step_name!r} could be filled for label {label!r}"
                )
            per_label.append(tuple(dict.fromkeys(texts)))  # de-duplicate, keep order
        return tuple(per_label)
