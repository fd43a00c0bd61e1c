"""Pipeline configuration: component kinds, the classic method presets (``METHODS``),
:class:`PipelineConfig`, and resolving configs and presets into components /
``CoTPipeline.create`` arguments (:class:`Prediction` is re-exported from
:mod:`cotprompt.pipeline.predictions`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cotprompt.config import ComponentSpec
from cotprompt.errors import ConfigError
from cotprompt.plugins.records import Kind
from cotprompt.plugins.registry import get_registry
from cotprompt.protocols import Backbone
from cotprompt.training.config import TrainingConfig

KINDS = ("backbone", "generator", "tuner", "aggregator")

#: Component choices of the three classic methods (used by :meth:`CoTPipeline.for_method`).
METHODS: dict[str, dict[str, ComponentSpec]] = {
    "coop": {
        "generator": ComponentSpec(name="rule-based"),
        "tuner": ComponentSpec(name="coop"),
        "aggregator": ComponentSpec(name="mean"),
    },
    "cocoop": {
        "generator": ComponentSpec(name="rule-based"),
        "tuner": ComponentSpec(name="cocoop"),
        "aggregator": ComponentSpec(name="mean"),
    },
    "cotpt": {
        "generator": ComponentSpec(name="rule-based", config={"preset": "cot"}),
        "tuner": ComponentSpec(name="cotpt"),
        "aggregator": ComponentSpec(name="adaptive"),
    },
}


class PipelineConfig(BaseModel):
    """A whole pipeline by registered names (what a YAML/JSON config file holds).

    Args:
        backbone: Default ``open_clip`` with ViT-B-16 / openai.
        generator: Default ``rule-based``.
        tuner: Default ``coop``.
        aggregator: Default ``mean``.
        training: Training options.
    """

    model_config = ConfigDict(extra="forbid")

    backbone: ComponentSpec = Field(default_factory=lambda: ComponentSpec(name="open_clip"))
    generator: ComponentSpec = Field(default_factory=lambda: ComponentSpec(name="rule-based"))
    tuner: ComponentSpec = Field(default_factory=lambda: ComponentSpec(name="coop"))
    aggregator: ComponentSpec = Field(default_factory=lambda: ComponentSpec(name="mean"))
    training: TrainingConfig = Field(default_factory=TrainingConfig)


def build_components(given: Mapping[Kind, tuple[Any, Any]]) -> dict[str, Any]:
    """Components by kind from ``{kind: (name or object, options)}`` (names via the registry).

    Raises:
        UnknownComponentError: A name is not registered (the message lists close matches).
        ConfigError: Options do not validate, or options were given with an object.
    """
    registry = get_registry()
    built: dict[str, Any] = {}
    for kind, (value, options) in given.items():
        if isinstance(value, str):
            built[kind] = registry.create(kind, value, options)
        elif options is not None:
            raise ConfigError(f"{kind}_config is only used with a {kind} name, not an object")
        else:
            built[kind] = value
    return built


#: The generator of each task kind other than classification, by registered name.
TASK_GENERATORS = {"retrieval": "caption", "vqa": "question-answer"}


def choose_preset(what: str, value: str, choices: Mapping[str, Any] | list[str]) -> None:
    """Refuse an unknown preset name, suggesting the closest one.

    Raises:
        ConfigError: ``value`` is not among ``choices``.
    """
    if isinstance(value, str) and value in choices:
        return
    import difflib

    given = value.strip().lower() if isinstance(value, str) else ""
    close = difflib.get_close_matches(given, list(choices), n=1) if given else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown {what} {value!r}; choose one of {sorted(choices)}{hint}")


def method_create_kwargs(
    method: str,
    *,
    model_name: str,
    pretrained: str | None,
    backbone: Backbone | None,
    tuner_config: Mapping[str, Any] | None,
    task: str = "classification",
    generator_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``CoTPipeline.create`` component arguments of a preset of :data:`METHODS` for ``task``.

    The tuner and aggregator are the method's; the generator is the method's for
    classification, else the task's (:data:`TASK_GENERATORS`), with its three-step ``cot``
    preset for ``cotpt``.

    Raises:
        ConfigError: Unknown method or task (with the closest name).
    """
    choose_preset("method", method, METHODS)
    if task != "classification":
        choose_preset("task", task, TASK_GENERATORS)
    specs = METHODS[method]
    if task == "classification":
        generator = specs["generator"].name
        generator_options = {**specs["generator"].config, **(generator_config or {})}
    else:
        generator = TASK_GENERATORS[task]
        generator_options = {**({"preset": "cot"} if method == "cotpt" else {}),
                             **(generator_config or {})}
    return {
        "backbone": backbone if backbone is not None else "open_clip",
        "backbone_config": None if backbone is not None else {
            "model_name": model_name, "pretrained": pretrained},
        "generator": generator, "generator_config": generator_options,
        "tuner": specs["tuner"].name,
        "tuner_config": {**specs["tuner"].config, **(tuner_config or {})},
        "aggregator": specs["aggregator"].name, "aggregator_config": specs["aggregator"].config,
    }
