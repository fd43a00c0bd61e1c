"""Checking the component records of a saved artifact before anything is built from them.

An artifact's ``cotprompt_config.json`` is untrusted input. :func:`validate_records` is the one
check that loading (:meth:`CoTPipeline.from_pretrained`, ``cotprompt predict`` / ``eval``) and
the Hub commands (``pull``, ``push``) apply to it: each component must be installed and its
options must validate as options read from a file (see :func:`cotprompt.config.validate_untrusted`:
no caller-only opt-ins, machine-local folders ignored, component validators refusing settings
that would make a loader run code). Nothing is fetched or built here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from cotprompt.config import validate_untrusted
from cotprompt.errors import (
    ArtifactError,
    ConfigError,
    CotpromptError,
    UnknownComponentError,
    UnsafeSettingError,
)
from cotprompt.plugins.records import KINDS, Kind
from cotprompt.plugins.registry import get_registry
from cotprompt.training.config import TrainingConfig
from cotprompt.types import CLASSIFICATION, PromptChain, Task


@dataclass(frozen=True)
class ComponentChoice:
    """A validated component record.

    Attributes:
        kind: ``backbone``, ``generator``, ``tuner`` or ``aggregator``.
        name: Its registered name.
        package: The distribution the artifact says provides it.
        config: The validated options, or ``None`` for a generator that is not installed (loading
            then replays the stored prompt chain).
        unavailable: Why the generator could not be validated, when ``config`` is ``None``.
    """

    kind: Kind
    name: str
    package: str | None
    config: BaseModel | None
    unavailable: str | None = None


@dataclass(frozen=True)
class ValidatedRecords:
    """The components, training options, prompt chain and task of an artifact, validated."""

    components: dict[Kind, ComponentChoice]
    training: TrainingConfig
    chain: PromptChain
    task: Task
    metrics: dict[str, Any]
    training_data: dict[str, Any] | None


def validate_records(
    config: Mapping[str, Any],
    *,
    source: str,
    caller_options: Mapping[str, Any] | None = None,
    skip: tuple[Kind, ...] = (),
) -> ValidatedRecords:
    """Validate every component record and the training options of an artifact config.

    Args:
        config: The parsed ``cotprompt_config.json``.
        source: Where it comes from (a folder, ``repo_id@commit``), named in errors.
        caller_options: The caller's opt-ins (``{"allow_pickle": True}``).
        skip: Kinds whose record the caller replaces with a built component (``backbone=``).

    Returns:
        The validated records.

    Raises:
        ArtifactError: A malformed record.
        ConfigError: Options that do not validate (one line naming the file and option).
        UnsafeSettingError: Options the file may not carry (caller-only opt-ins, free-form
            loader arguments).
        UnknownComponentError: A component (other than the generator) is not installed.
    """
    registry = get_registry()
    components: dict[Kind, ComponentChoice] = {}
    for kind in KINDS:
        record = config.get(kind)
        if not isinstance(record, Mapping) or not isinstance(record.get("name"), str):
            raise ArtifactError(f"{source}: malformed {kind} entry (needs a `name` string)")
        package = record.get("package")
        if package is not None and not isinstance(package, str):
            raise ArtifactError(f"{source}: the {kind} entry's `package` must be a string")
        name = record["name"]
        if kind in skip:
            continue
        try:
            cls = registry.get(kind, name, package=package)
        except UnknownComponentError as exc:
            if kind != "generator":
                raise
            components[kind] = ComponentChoice(kind, name, package, None, str(exc))
            continue
        try:
            options = validate_untrusted(
                cls.Config, record.get("config"), source=source, label=f"{kind} {name!r}",
                artifact=True, caller_options=caller_options,
            )
        except UnsafeSettingError:
            raise
        except ConfigError as exc:
            if kind != "generator":  # loading never needs the generator: see StoredChain
                raise
            components[kind] = ComponentChoice(kind, name, package, None, str(exc))
            continue
        components[kind] = ComponentChoice(kind, name, package, options)
    training = validate_untrusted(
        TrainingConfig, config.get("training"), source=source, label="training options",
        artifact=True,
    )
    chain, task = _chain_and_task(config, source)
    metrics = config.get("metrics") or {}
    training_data = config.get("training_data")
    if not isinstance(metrics, Mapping) or not all(
        isinstance(v, Mapping) for v in metrics.values()
    ):
        raise ArtifactError(f"{source}: `metrics` must map split names to mappings")
    if training_data is not None and not isinstance(training_data, Mapping):
        raise ArtifactError(f"{source}: `training_data` must be a mapping")
    return ValidatedRecords(components, training, chain, task, dict(metrics),
                            dict(training_data) if training_data is not None else None)


def _chain_and_task(config: Mapping[str, Any], source: str) -> tuple[PromptChain, Task]:
    """The stored prompt chain and the task it was generated for, checked against each other."""
    raw_chain, raw_task = config.get("chain"), config.get("task") or {}
    if not isinstance(raw_chain, Mapping) or not isinstance(raw_task, Mapping):
        raise ArtifactError(f"{source}: `chain` and `task` must be mappings")
    kind, dataset = raw_task.get("kind", CLASSIFICATION), raw_task.get("dataset")
    if not isinstance(kind, str) or not (dataset is None or isinstance(dataset, str)):
        raise ArtifactError(f"{source}: `task.kind` and `task.dataset` must be strings")
    try:
        chain = PromptChain.from_dict(raw_chain)
        task = Task(labels=chain.labels, kind=kind, dataset=dataset)
    except (CotpromptError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{source}: malformed prompt chain or task: {exc}") from exc
    labels = raw_task.get("labels")
    if labels is not None and (not isinstance(labels, list) or labels != list(chain.labels)):
        raise ArtifactError(
            f"{source}: `task.labels` and `chain.labels` differ; the file was edited or is corrupt"
        )
    return chain, task
