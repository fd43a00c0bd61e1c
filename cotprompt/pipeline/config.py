"""Pipeline configuration: component kinds, the classic method presets (``METHODS``),
:class:`PipelineConfig`, the :class:`Prediction` result type, and resolving configs and presets
into components / ``CoTPipeline.create`` arguments."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cotprompt.config import ComponentSpec
from cotprompt.errors import ConfigError
from cotprompt.plugins.registry import get_registry
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


@dataclass(frozen=True)
class Prediction:
    """One image's prediction.

    Attributes:
        label: The most likely label.
        index: Its index in the pipeline's labels.
        score: Its softmax probability.
        top_k: ``(label, probability)`` pairs, most likely first.
    """

    label: str
    index: int
    score: float
    top_k: tuple[tuple[str, float], ...]


def build_components(given: Mapping[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Components by kind from ``{kind: (name or object, options)}`` (names via the registry).

    Raises:
        UnknownComponentError: A name is not registered (the message lists close matches).
        ConfigError: Options do not validate, or options were given with an object.
    """
    registry = get_registry()
    built = {}
    for kind, (value, options) in given.items():
        if isinstance(value, str):
            built[kind] = registry.create(kind, value, options)
        elif options is not None:
            raise ConfigError(f"{kind}_config is only used with a {kind} name, not an object")
        else:
            built[kind] = value
    return built


def config_create_kwargs(config: PipelineConfig | Mapping[str, Any] | str | Path,
                         *, caller_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``CoTPipeline.create`` arguments from a config, a mapping, or a YAML/JSON file path (an
    untrusted file: see :func:`cotprompt.pipeline.config_files.load_pipeline_config`)."""
    from cotprompt.pipeline.config_files import load_pipeline_config

    if not isinstance(config, PipelineConfig):
        config = load_pipeline_config(config, caller_options=caller_options)
    return {
        "backbone": config.backbone.name, "backbone_config": config.backbone.config,
        "generator": config.generator.name, "generator_config": config.generator.config,
        "tuner": config.tuner.name, "tuner_config": config.tuner.config,
        "aggregator": config.aggregator.name, "aggregator_config": config.aggregator.config,
        "training": config.training,
    }


def method_create_kwargs(
    method: str,
    *,
    model_name: str,
    pretrained: str | None,
    backbone: Any,
    tuner_config: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """``CoTPipeline.create`` component arguments of a preset of :data:`METHODS`."""
    if method not in METHODS:
        import difflib

        close = difflib.get_close_matches(method, list(METHODS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown method {method!r}; choose one of {sorted(METHODS)}{hint}")
    specs = METHODS[method]
    return {
        "backbone": backbone if backbone is not None else "open_clip",
        "backbone_config": None if backbone is not None else {
            "model_name": model_name, "pretrained": pretrained},
        "generator": specs["generator"].name, "generator_config": specs["generator"].config,
        "tuner": specs["tuner"].name,
        "tuner_config": {**specs["tuner"].config, **(tuner_config or {})},
        "aggregator": specs["aggregator"].name, "aggregator_config": specs["aggregator"].config,
    }
