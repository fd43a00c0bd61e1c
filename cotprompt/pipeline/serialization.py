"""Artifact (de)serialisation of a :class:`~cotprompt.pipeline.core.CoTPipeline`: component records,
the artifact config, saving to a folder and loading from a folder or Hub repository."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from pydantic import BaseModel

from cotprompt import artifact
from cotprompt.artifact.model_card import render_card
from cotprompt.artifact.records import ComponentChoice, validate_records
from cotprompt.backbones.weights_source import model_quick_gelu
from cotprompt.config import config_record
from cotprompt.errors import ArtifactError, ConfigError, UnknownComponentError, one_line
from cotprompt.generators.stored import StoredChainGenerator
from cotprompt.pipeline.config import KINDS
from cotprompt.plugins.registry import get_registry
from cotprompt.types import PromptChain

if TYPE_CHECKING:
    from cotprompt.pipeline.core import CoTPipeline

logger = logging.getLogger("cotprompt.pipeline.core")


def _load_generator(registry: Any, choice: ComponentChoice, config: Mapping[str, Any]) -> Any:
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


def _component_record(kind: str, component: Any) -> dict[str, Any]:
    stored = getattr(component, "artifact_record", None)
    if stored is not None:
        return dict(stored)
    info = get_registry().find_class(type(component))
    name = getattr(component, "name", None)
    if not isinstance(name, str):
        raise ConfigError(f"the {kind} {type(component).__name__} has no `name` class attribute")
    config = getattr(component, "config", None)
    record = {
        "name": name,
        "package": info.package if info else type(component).__module__.split(".")[0],
        "config": config_record(config) if isinstance(config, BaseModel) else {},
    }
    if kind == "backbone" and isinstance(getattr(component, "quick_gelu", None), bool):
        record["quick_gelu"] = component.quick_gelu  # what was built, not only what was asked
    return record


def component_records(pipeline: CoTPipeline) -> dict[str, dict[str, Any]]:
    """The saved record (name, package, config) of each of the pipeline's components."""
    records = {kind: _component_record(kind, getattr(pipeline, kind)) for kind in KINDS}
    return records


def pipeline_config(pipeline: CoTPipeline) -> dict[str, Any]:
    """The JSON config describing ``pipeline`` (without the weights entry)."""
    if pipeline.task is None or pipeline.chain is None:
        raise ConfigError("nothing to save: the pipeline has no classes yet")
    config: dict[str, Any] = {
        **pipeline._component_records(),
        "task": {"kind": pipeline.task.kind, "labels": list(pipeline.task.labels),
                 "dataset": pipeline.task.dataset},
        "chain": pipeline.chain.to_dict(),
        "training": config_record(pipeline.training),
    }
    if pipeline.training_data:
        config["training_data"] = pipeline.training_data
    if pipeline.metrics:
        config["metrics"] = pipeline.metrics
    return config


def save_pipeline(pipeline: CoTPipeline, directory: str | Path) -> Path:
    """Write config, weights (trainable tensors only) and model card to ``directory``.

    The custom text of an existing ``README.md`` is kept; a ``README.md`` that is a symbolic link
    is not followed (its target could be any file): it is treated as absent, with a warning, and
    the save replaces the link with a regular file.
    """
    directory = Path(directory)
    config = pipeline.artifact_config()
    card_path = directory / artifact.CARD_NAME
    existing: str | None = None
    if card_path.is_symlink():
        logger.warning("%s is a symbolic link; not reading it: the save replaces it with a new "
                       "model card", card_path)
    elif card_path.is_file():
        try:
            existing = card_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return _save_keeping_card(pipeline, directory, config, card_path, exc)
    try:
        card = render_card(config, existing)
    except (ValueError, yaml.YAMLError) as exc:  # a user's README whose header is not a card's
        return _save_keeping_card(pipeline, directory, config, card_path, exc)
    return artifact.write_artifact(directory, config, pipeline.model.trainable_state(), card)


def _save_keeping_card(pipeline: CoTPipeline, directory: Path, config: dict[str, Any],
                       card_path: Path, reason: Exception) -> Path:
    """Save config and weights, leaving a ``README.md`` that is not a readable card as it is."""
    logger.warning("%s cannot be read as a model card (%s); it is left as it is", card_path,
                   one_line(reason, 200))
    return artifact.write_artifact(directory, config, pipeline.model.trainable_state(), None)


def load_pipeline(
    cls: type[CoTPipeline],
    path_or_repo_id: str | Path,
    *,
    revision: str | None = None,
    token: str | None = None,
    backbone: Any = None,
    device: str | torch.device | None = None,
    allow_pickle: bool = False,
) -> CoTPipeline:
    """Load a saved pipeline (as ``cls``) from a folder or a Hugging Face Hub repository.

    See :meth:`cotprompt.pipeline.core.CoTPipeline.from_pretrained`.
    """
    from cotprompt.hub import resolve_artifact

    directory, origin = resolve_artifact(path_or_repo_id, revision=revision, token=token)
    # every check that needs no model comes before the (possibly large) backbone is built
    config, tensors = artifact.read_artifact(directory)
    source = _describe(origin, directory)
    records = validate_records(
        config, source=source, caller_options={"allow_pickle": True} if allow_pickle else None,
        skip=("backbone",) if backbone is not None else (),
    )
    if backbone is not None:
        record, spec = config["backbone"], backbone.spec()
        recorded = record.get("config") if isinstance(record.get("config"), Mapping) else {}
        # older records also carry machine-local options (cache_dir), which change no result
        comparable = {k: v for k, v in recorded.items() if k in spec["config"]}
        if spec != {"name": record["name"], "config": comparable}:
            raise ArtifactError(
                "the given backbone differs from the one the prompts were trained "
                f"for: {backbone.spec()} vs {record}"
            )
    registry = get_registry()
    built: dict[str, Any] = {"backbone": backbone} if backbone is not None else {}
    for kind, choice in records.components.items():
        if kind == "generator":
            built[kind] = _load_generator(registry, choice, config)
        else:
            built[kind] = registry.create(kind, choice.name, choice.config,
                                          package=choice.package)
    _warn_if_activation_changed(config["backbone"], built["backbone"], source)
    pipeline = cls(**built, training=records.training, device=device)
    pipeline.set_classes(records.task, records.chain)
    expected = pipeline.model.trainable_state()
    artifact.check_fits_model(directory, tensors, expected)
    with torch.no_grad():
        for name, value in expected.items():
            value.copy_(tensors[name].to(value.device))
    pipeline.metrics = records.metrics
    pipeline.training_data = records.training_data
    pipeline.source = origin
    return pipeline


def _warn_if_activation_changed(record: Mapping[str, Any], backbone: Any, source: str) -> None:
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
