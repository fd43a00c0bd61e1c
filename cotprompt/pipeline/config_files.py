"""Reading pipeline configs from YAML or JSON files (untrusted), and turning a config into
``CoTPipeline.create`` arguments."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cotprompt.config import error_message, validate_untrusted
from cotprompt.errors import ConfigError, UnknownComponentError
from cotprompt.pipeline.config import PipelineConfig
from cotprompt.plugins.records import KINDS
from cotprompt.plugins.registry import get_registry

#: Sections of a ``cotprompt train`` config that describe no pipeline component.
_TRAIN_ONLY = ("data", "output")


def read_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML (``.yaml``/``.yml``) or JSON file as a dict.

    Raises:
        ConfigError: Missing file, not UTF-8, syntax error, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text ({exc.reason} at byte "
                          f"{exc.start})") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse {path}: {_parse_problem(exc)}") from exc
    except RecursionError as exc:  # deeper than Python's parsers go ('[' * 100000)
        raise ConfigError(f"cannot parse {path}: it is nested too deeply") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return data


def load_pipeline_config(
    source: Mapping[str, Any] | str | Path,
    *,
    file_source: str | None = None,
    caller_options: Mapping[str, Any] | None = None,
) -> PipelineConfig:
    """Validate a mapping or a file into a :class:`~cotprompt.PipelineConfig`.

    Relative paths of the components read from a file (the backbone's ``pretrained`` file,
    a ``local-dir:`` model folder, ``cache_dir``) are resolved against the file's folder, as
    the ``data`` and ``output`` paths of a training config are, so the config works from any
    working directory.

    Options read from a file are untrusted (:func:`cotprompt.config.validate_untrusted`): a
    file may not set caller-only opt-ins such as ``allow_pickle`` or ``trust_remote_code``,
    nor free-form loader arguments; the caller's own opt-ins are applied afterwards.

    A component section may be its name alone (``tuner: cotpt`` means ``tuner: {name: cotpt}``),
    as in code (``CoTPipeline.create(tuner="cotpt")``).

    Args:
        source: A mapping (trusted: the caller's code) or a YAML/JSON file path (untrusted).
        file_source: The file a mapping was read from, which makes it untrusted too (and,
            when it names an existing file, the folder its relative paths start from).
        caller_options: The caller's opt-ins (``{"allow_pickle": True}``), set on every
            component with such an option.

    Raises:
        ConfigError: Invalid options (one line per problem).
        UnsafeSettingError: The file sets what only the caller may set.
    """
    if not isinstance(source, Mapping):
        file_source = str(source)
    data = dict(source) if isinstance(source, Mapping) else read_mapping(source)
    if not isinstance(source, Mapping):
        for key in _TRAIN_ONLY:  # a training config file also describes a pipeline
            data.pop(key, None)
    for kind in KINDS:  # `tuner: cotpt`, as in code: a component by its name alone
        if isinstance(data.get(kind), str):
            data[kind] = {"name": data[kind]}
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_section_problem(e) for e in exc.errors())
        where = f"{file_source}: " if file_source else ""
        raise ConfigError(f"{where}invalid pipeline config: {problems}") from exc
    base_dir = _file_folder(file_source)
    if base_dir is not None:
        _resolve_relative_paths(config, base_dir)
    if file_source is not None:
        _check_untrusted(config, file_source)
    _apply_caller_options(config, caller_options or {})
    return config


def _parse_problem(exc: Exception) -> str:
    """A YAML or JSON syntax error as one line: what is wrong and where (line, column)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    if mark is None:
        return " ".join(str(exc).split())
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def _section_problem(error: Any) -> str:
    """One validation problem; an unknown top-level section names the closest known one."""
    loc = ".".join(str(p) for p in error["loc"])
    if error.get("type") == "extra_forbidden" and len(error["loc"]) == 1:
        import difflib

        known = [*PipelineConfig.model_fields, *_TRAIN_ONLY]
        close = difflib.get_close_matches(str(error["loc"][0]), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{loc}: unknown section{hint} (sections: {', '.join(known)})"
    return f"{loc}: {error_message(error)}"


def _component_classes(config: PipelineConfig) -> Iterator[tuple[str, Any, type[Any]]]:
    registry = get_registry()
    for kind in KINDS:
        spec = getattr(config, kind)
        try:
            yield kind, spec, registry.get(kind, spec.name)
        except UnknownComponentError:
            continue  # reported with close matches when the component is created


def _file_folder(file_source: str | None) -> Path | None:
    """The folder of the config file the options were read from (``None``: not from a file)."""
    if file_source is None:
        return None
    path = Path(file_source).expanduser()
    return path.resolve().parent if path.is_file() else None


def _resolve_relative_paths(config: PipelineConfig, base_dir: Path) -> None:
    """Resolve the components' relative paths against the config file's folder, as its
    ``data`` and ``output`` paths are (in place): each component config that has paths says
    which, with a ``resolve_relative_paths(options, base_dir)`` class method."""
    for _, spec, cls in _component_classes(config):
        resolve = getattr(cls.Config, "resolve_relative_paths", None)
        if callable(resolve):
            spec.config = dict(resolve(spec.config, base_dir))
    folders = {}
    for name in ("checkpoint_dir", "feature_cache_dir", "project_dir"):  # training's paths too
        value = getattr(config.training, name)
        if value is not None and not Path(value).expanduser().is_absolute():
            folders[name] = str(base_dir / Path(value).expanduser())
    if folders:
        config.training = config.training.model_copy(update=folders)


def _check_untrusted(config: PipelineConfig, source: str) -> None:
    """Validate each component's options as read from ``source``."""
    for kind, spec, cls in _component_classes(config):
        validate_untrusted(cls.Config, spec.config, source=source, label=f"{kind} {spec.name!r}")


def _apply_caller_options(config: PipelineConfig, caller_options: Mapping[str, Any]) -> None:
    """Set the caller's opt-ins on the components that have them (in place)."""
    if not caller_options:
        return
    for _, spec, cls in _component_classes(config):
        for name, value in caller_options.items():
            if name in cls.Config.model_fields:
                spec.config[name] = value


def config_create_kwargs(config: PipelineConfig | Mapping[str, Any] | str | Path,
                         *, caller_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``CoTPipeline.create`` arguments from a config, a mapping, or a YAML/JSON file path (an
    untrusted file: see :func:`cotprompt.pipeline.config_files.load_pipeline_config`)."""
    if not isinstance(config, PipelineConfig):
        config = load_pipeline_config(config, caller_options=caller_options)
    return {
        "backbone": config.backbone.name, "backbone_config": config.backbone.config,
        "generator": config.generator.name, "generator_config": config.generator.config,
        "tuner": config.tuner.name, "tuner_config": config.tuner.config,
        "aggregator": config.aggregator.name, "aggregator_config": config.aggregator.config,
        "training": config.training,
    }
