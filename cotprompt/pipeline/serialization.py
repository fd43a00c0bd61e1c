"""Artifact (de)serialisation for :class:`~cotprompt.pipeline.CoTPipeline`: component records, the
artifact config, saving a folder, and opening one (checked, components built) to load from."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import BaseModel, ValidationError

from cotprompt import artifact
from cotprompt.artifact.checked import CheckedArtifact, read_checked
from cotprompt.artifact.model_card import CardOptions, render_card
from cotprompt.artifact.records import ComponentChoice
from cotprompt.backbones.weights_source import model_quick_gelu
from cotprompt.config import UNTRUSTED, config_record, error_message
from cotprompt.errors import ArtifactError, ConfigError, UnknownComponentError, one_line
from cotprompt.generators.stored import StoredChainGenerator
from cotprompt.pipeline.config import KINDS
from cotprompt.plugins.registry import Registry, get_registry
from cotprompt.protocols import Backbone, PromptGenerator
from cotprompt.training.config import TrainingConfig
from cotprompt.types import PromptChain, Task

logger = logging.getLogger("cotprompt.pipeline")

#: The backbone option setting the precision of its frozen weights (a given backbone may
#: differ in it: the prompts then run at another precision).
PRECISION = "precision"


def _load_generator(registry: Registry, choice: ComponentChoice, config: Mapping[str, Any]
                    ) -> PromptGenerator | StoredChainGenerator:
    """The saved generator, or a stand-in replaying the stored chain when it cannot be built
    (its plugin or optional dependencies are missing): loading never needs the generator."""
    record = config["generator"]
    reason = choice.unavailable
    if choice.config is not None:
        try:
            return registry.create("generator", choice.name, choice.config,
                                   package=choice.package)
        except (UnknownComponentError, ConfigError, ImportError) as exc:
            reason = str(exc)
    logger.warning("generator %r unavailable (%s); using the prompt chain stored in the "
                   "artifact", choice.name, reason)
    return StoredChainGenerator(record, PromptChain.from_dict(config["chain"]), str(reason))


def _component_record(kind: str, component: object) -> dict[str, Any]:
    stored = getattr(component, "artifact_record", None)
    if stored is not None:
        return dict(stored)
    info = get_registry().find_class(type(component))
    name = getattr(component, "name", None)
    if not isinstance(name, str):
        raise ConfigError(f"the {kind} {type(component).__name__} has no `name` class attribute")
    config = getattr(component, "config", None)
    record: dict[str, Any] = {
        "name": name,
        "package": info.package if info else type(component).__module__.split(".")[0],
        "config": config_record(config) if isinstance(config, BaseModel) else {},
    }
    quick_gelu = getattr(component, "quick_gelu", None) if kind == "backbone" else None
    if isinstance(quick_gelu, bool):
        record["quick_gelu"] = quick_gelu  # what was built, not only what was asked
    return record


def component_records(components: Mapping[str, object]) -> dict[str, dict[str, Any]]:
    """The saved record (name, package, config) of each component, by kind."""
    return {kind: _component_record(kind, components[kind]) for kind in KINDS}


def artifact_config(
    *,
    components: dict[str, dict[str, Any]],
    task: Task,
    chain: PromptChain,
    training: TrainingConfig,
    training_data: Mapping[str, Any] | None,
    metrics: Mapping[str, Any],
) -> dict[str, Any]:
    """The JSON config of an artifact (without the weights entry), in its key order."""
    config: dict[str, Any] = {
        **components,
        "task": {"kind": task.kind, "labels": list(task.labels), "dataset": task.dataset},
        "chain": chain.to_dict(),
        "training": training_record(training),
    }
    if training_data:
        config["training_data"] = dict(training_data)
    if metrics:
        config["metrics"] = dict(metrics)
    return config


#: Training options added after artifacts were first written: recorded only when set (not
#: ``None``), so that the artifacts written before re-save to the same bytes.
_RECORDED_WHEN_SET = ("gradient_accumulation_steps",)


def training_record(training: TrainingConfig) -> dict[str, Any]:
    """The training options an artifact records (:func:`~cotprompt.config.config_record`; the
    newer options only when set)."""
    record = config_record(training)
    for name in _RECORDED_WHEN_SET:
        if record.get(name) is None:
            record.pop(name, None)
    return record


def save_artifact(directory: str | Path, config: dict[str, Any],
                  tensors: dict[str, torch.Tensor], card_options: CardOptions | None = None
                  ) -> Path:
    """Write config, weights, model card and the training history (``card_options.history``,
    when known) to ``directory`` (all or nothing).

    The custom text of an existing ``README.md`` is kept; a ``README.md`` that is a symbolic link
    is not followed (its target could be any file): it is treated as absent, with a warning, and
    the save replaces the link with a regular file. ``card_options``: ``model_card_kwargs``,
    training history and versions for the card (see :func:`~cotprompt.artifact.model_card.
    render_card`).
    """
    directory = Path(directory)
    card_path = directory / artifact.CARD_NAME
    history = card_options.history if card_options is not None else None
    existing: str | None = None
    if card_path.is_symlink():
        logger.warning("%s is a symbolic link; not reading it: the save replaces it with a new "
                       "model card", card_path)
    elif card_path.is_file():
        try:
            existing = card_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return _save_keeping_card(directory, config, tensors, card_path, exc, history)
    try:
        card = render_card(config, existing, options=card_options)
    except (ValueError, yaml.YAMLError) as exc:  # a user's README whose header is not a card's
        return _save_keeping_card(directory, config, tensors, card_path, exc, history)
    return artifact.write_artifact(directory, config, tensors, card, history)


def _save_keeping_card(directory: Path, config: dict[str, Any], tensors: dict[str, torch.Tensor],
                       card_path: Path, reason: Exception,
                       history: Sequence[Mapping[str, Any]] | None) -> Path:
    """Save config, weights and history, leaving a ``README.md`` that is not a readable card as
    it is."""
    logger.warning("%s cannot be read as a model card (%s); it is left as it is", card_path,
                   one_line(reason, 200))
    return artifact.write_artifact(directory, config, tensors, None, history)


@dataclass(frozen=True)
class OpenedArtifact:
    """An artifact checked and its components built (see :func:`open_artifact`).

    Attributes:
        checked: Config, weights and validated records.
        components: The built components by kind (``backbone``, ``generator``, ...).
    """

    checked: CheckedArtifact
    components: dict[str, object]


def check_load_options(backbone: object, precision: object) -> None:
    """The caller's ``backbone`` and ``precision`` loading options, checked before anything is
    fetched or built.

    Raises:
        ConfigError: ``backbone`` is not a built backbone; ``precision`` is not a string, or
            differs from the given backbone's own precision.
    """
    if backbone is not None and not isinstance(backbone, Backbone):
        raise ConfigError(f"backbone must be a built backbone (such as an OpenCLIPBackbone), not "
                          f"{type(backbone).__name__}")
    if precision is not None and not isinstance(precision, str):
        raise ConfigError(f"precision must be a string such as 'bf16', not "
                          f"{type(precision).__name__}")
    if backbone is not None and precision is not None:
        built_at = (backbone.spec().get("config") or {}).get(PRECISION)
        if built_at != precision:
            raise ConfigError(
                f"precision={precision!r} applies to the backbone built from the artifact, but "
                f"the given backbone is built at {built_at!r}: build it with "
                f"precision={precision!r} or leave precision out"
            )


def open_artifact(
    directory: Path,
    origin: Mapping[str, Any],
    *,
    backbone: Backbone | None = None,
    allow_pickle: bool = False,
    precision: str | None = None,
) -> OpenedArtifact:
    """Check an artifact folder and build its components (see
    :meth:`cotprompt.pipeline.CoTPipeline.from_pretrained`): every check that needs no model
    comes before the (possibly large) backbone is built.

    A given ``backbone`` must match the recorded one in everything that changes the model
    (``model_name``, ``pretrained``, ``init_seed``...); machine-local options (``cache_dir``)
    are not compared, and another ``precision`` is accepted (logged at INFO).

    Args:
        directory: The artifact folder.
        origin: Where it came from (see :class:`~cotprompt.hub.HubMixin`).
        backbone: A built backbone to use instead of building the recorded one.
        allow_pickle: The caller's opt-in to pickle-based backbone weights.
        precision: The backbone's precision option (open_clip's ``fp32``, ``bf16``...) to build
            the recorded backbone with, instead of the saved one. With ``backbone``, it must be
            that backbone's precision.

    Raises:
        ArtifactError: Failed checks, or a given backbone other than the recorded one.
        ConfigError: A ``precision`` the backbone does not accept, or one other than the given
            backbone's.
    """
    check_load_options(backbone, precision)
    source = _describe(origin, directory)
    checked = read_checked(
        directory, source=source,
        caller_options={"allow_pickle": True} if allow_pickle else None,
        skip=("backbone",) if backbone is not None else (),
    )
    config = checked.config
    choices = dict(checked.records.components)
    if backbone is not None:
        _check_given_backbone(config["backbone"], backbone, source)
    elif precision is not None:
        choices["backbone"] = _with_precision(choices["backbone"], precision, source)
    registry = get_registry()
    built: dict[str, object] = {"backbone": backbone} if backbone is not None else {}
    for kind, choice in choices.items():
        if kind == "generator":
            built[kind] = _load_generator(registry, choice, config)
        else:
            built[kind] = registry.create(kind, choice.name, choice.config,
                                          package=choice.package)
    _warn_if_activation_changed(config["backbone"], built["backbone"], source)
    return OpenedArtifact(checked, built)


def _check_given_backbone(record: Mapping[str, Any], backbone: Backbone, source: str) -> None:
    """Refuse a given backbone that differs from the recorded one in what changes the model.

    Machine-local options are in neither side (:func:`~cotprompt.config.config_record` drops
    them from the spec; older records that carry them are compared on the spec's keys only);
    the precision may differ: the prompts then run at another precision (logged at INFO).
    """
    spec = backbone.spec()
    given_config = dict(spec.get("config") or {})
    raw = record.get("config")
    recorded = raw if isinstance(raw, Mapping) else {}
    # older records also carry machine-local options (cache_dir), which change no result
    comparable = {k: v for k, v in recorded.items() if k in given_config}
    given_precision = given_config.pop(PRECISION, None)
    saved_precision = comparable.pop(PRECISION, None)
    given = {"name": spec.get("name"), **given_config}
    saved = {"name": record["name"], **comparable}
    if given != saved:
        differ = [f"{k} {given.get(k)!r} vs {saved.get(k)!r}"
                  for k in sorted(set(given) | set(saved), key=str)
                  if given.get(k) != saved.get(k)]
        raise ArtifactError(
            "the given backbone differs from the one the prompts were trained for "
            f"(given vs saved: {'; '.join(differ)})"
        )
    if saved_precision is not None and given_precision != saved_precision:
        logger.info("%s: the prompts were tuned on a %s backbone and now run on a %s one",
                    source, saved_precision, given_precision)


def _with_precision(choice: ComponentChoice, precision: str, source: str) -> ComponentChoice:
    """The backbone record ``choice`` with the caller's ``precision`` (validated)."""
    options = choice.config
    if options is None or PRECISION not in type(options).model_fields:
        raise ConfigError(f"the backbone {choice.name!r} has no precision option")
    saved = getattr(options, PRECISION)
    try:
        updated = type(options).model_validate({**options.model_dump(), PRECISION: precision},
                                               context={UNTRUSTED: source})
    except ValidationError as exc:
        problems = "; ".join(error_message(e) for e in exc.errors())
        raise ConfigError(f"precision={precision!r} is not valid for the backbone "
                          f"{choice.name!r}: {problems}") from exc
    if saved != precision:
        logger.info("%s: the prompts were tuned on a %s backbone and now run on a %s one",
                    source, saved, precision)
    return dataclasses.replace(choice, config=updated)


def restore_weights(directory: Path, tensors: Mapping[str, torch.Tensor],
                    expected: Mapping[str, torch.Tensor]) -> None:
    """Copy the saved tensors into the model's (``expected``), after checking that they fit it.

    Raises:
        ArtifactError: Names, shapes or dtypes that do not fit the built model.
    """
    artifact.check_fits_model(directory, dict(tensors), dict(expected))
    with torch.no_grad():
        for name, value in expected.items():
            value.copy_(tensors[name].to(value.device))


def _warn_if_activation_changed(record: Mapping[str, Any], backbone: object, source: str
                                ) -> None:
    """Prompts tuned on a backbone built with another activation than today's still load, with
    a warning (artifacts saved before the activation was recorded built OpenAI weights under
    ``ViT-B-16`` with GELU)."""
    now = getattr(backbone, "quick_gelu", None)
    then = record.get("quick_gelu")
    if now is None:
        return
    if then is None:
        config = record.get("config") or {}
        name = str(config.get("model_name", ""))
        if not now or model_quick_gelu(name):
            return
        then = False  # recorded before the activation was: a GELU build
    if bool(then) != bool(now):
        logger.warning(
            "%s: these prompts were tuned on a %s build of the backbone, which is now built "
            "with %s (OpenAI's CLIP weights need QuickGELU); predictions may differ slightly "
            "from the ones at training time: re-tune for exact results",
            source, "GELU" if not then else "QuickGELU", "QuickGELU" if now else "GELU",
        )


def _describe(origin: Mapping[str, Any], directory: Path) -> str:
    if origin.get("type") == "hub":
        return f"{origin['repo_id']}@{origin.get('commit') or origin.get('revision') or 'main'}"
    return str(directory / artifact.CONFIG_NAME)
