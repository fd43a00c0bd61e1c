"""Reading pipeline configs from YAML or JSON files."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from cotprompt.errors import ConfigError

if TYPE_CHECKING:
    from cotprompt.pipeline import PipelineConfig


def read_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML (``.yaml``/``.yml``) or JSON file as a dict.

    Raises:
        ConfigError: Missing file, syntax error, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return data


def load_pipeline_config(source: Mapping[str, Any] | str | Path) -> PipelineConfig:
    """Validate a mapping or a file into a :class:`~cotprompt.pipeline.PipelineConfig`."""
    from cotprompt.pipeline import PipelineConfig

    data = dict(source) if isinstance(source, Mapping) else read_mapping(source)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid pipeline config: {problems}") from exc
