"""Configuration models shared by all components, and how settings read from files are trusted.

Every component's options are a pydantic model deriving from :class:`ComponentConfig`, which
rejects unknown keys so that a typo in a YAML file is an error, not a silently ignored option.

Settings read from a file (a saved artifact, a Hub repository, a training config) are untrusted.
Two kinds of fields are marked for that:

* :func:`caller_only` fields are trust decisions (``allow_pickle``, ``trust_remote_code``): only
  the caller sets them, in code or on the command line. A file that sets one is refused, and
  they are never written into a saved record.
* :func:`machine_local` fields name places on the machine that wrote them (cache and checkpoint
  folders): a loaded artifact's values are ignored.

:func:`validate_untrusted` applies both, then validates with the context
``{"untrusted": <source>}``, which a component's own validators read to refuse settings that
would make a loader run code (see :class:`~cotprompt.backbones.OpenCLIPBackboneConfig`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo

from cotprompt.errors import ConfigError, UnsafeSettingError

logger = logging.getLogger(__name__)

_CALLER_ONLY = "cotprompt_caller_only"
_MACHINE_LOCAL = "cotprompt_machine_local"
#: The key of the pydantic validation context naming an untrusted source.
UNTRUSTED = "untrusted"

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class ComponentConfig(BaseModel):
    """Base class of component options: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=False)


class ComponentSpec(BaseModel):
    """A component chosen by registered name, with its options as a plain mapping.

    Args:
        name: The registered name (see ``cotprompt plugins``).
        config: Options validated by the component's own ``Config`` model.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    config: dict[str, Any] = Field(default_factory=dict)


class UnsafeValue(ValueError):
    """Raised by a component validator for a setting it refuses from an untrusted file."""


def caller_only(default: Any, *, description: str) -> Any:
    """A field only the caller may set (in code or on the command line), never a loaded file.

    Use it for opt-ins that lower a safety barrier, as ``trust_remote_code`` in transformers.
    """
    return Field(default, description=description, json_schema_extra={_CALLER_ONLY: True})


def machine_local(default: Any, *, description: str) -> Any:
    """A field naming a place on the writing machine; ignored when an artifact is loaded."""
    return Field(default, description=description, json_schema_extra={_MACHINE_LOCAL: True})


def _marked(config_cls: type[BaseModel], marker: str) -> list[str]:
    return [
        name
        for name, field in config_cls.model_fields.items()
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get(marker)
    ]


def caller_only_fields(config_cls: type[BaseModel]) -> list[str]:
    """The names of ``config_cls``'s :func:`caller_only` fields."""
    return _marked(config_cls, _CALLER_ONLY)


def config_record(config: BaseModel) -> dict[str, Any]:
    """The JSON-ready options to save in a record: everything but :func:`caller_only` fields
    (the caller's trust decisions belong to the caller, not to the artifact) and
    :func:`machine_local` ones (places on this machine: they change no result, would be
    ignored on load and may name a user's home folder)."""
    cls = type(config)
    return config.model_dump(mode="json", exclude={*caller_only_fields(cls),
                                                   *_marked(cls, _MACHINE_LOCAL)})


def is_untrusted(info: ValidationInfo) -> str | None:
    """The untrusted source being validated (for use in validators), or ``None``."""
    context = info.context
    return context.get(UNTRUSTED) if isinstance(context, Mapping) else None


def validate_untrusted(
    config_cls: type[ConfigT],
    data: Any,
    *,
    source: str,
    label: str,
    artifact: bool = False,
    caller_options: Mapping[str, Any] | None = None,
) -> ConfigT:
    """Validate options read from a file, before anything is built from them.

    Args:
        config_cls: The component's ``Config`` model.
        data: The options as read from the file.
        source: The file or repository they come from (named in errors).
        label: The component, e.g. ``"backbone 'open_clip'"``.
        artifact: The file is a saved artifact: :func:`machine_local` values are ignored.
        caller_options: The caller's own opt-ins (``{"allow_pickle": True}``), applied to the
            components that have such a field.

    Returns:
        The validated options.

    Raises:
        UnsafeSettingError: The file sets a :func:`caller_only` field, or a component validator
            refuses a setting as unsafe from a file (it raises :class:`UnsafeValue`).
        ConfigError: The options do not validate; one line.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the options of the {label} must be a mapping")
    data = dict(data)
    fields = config_cls.model_fields
    for name in caller_only_fields(config_cls):
        if name in data and data[name] != fields[name].get_default(call_default_factory=True):
            raise UnsafeSettingError(
                f"{source} sets `{name}` of the {label}, which only the caller may set (in code, "
                f"or with --{name.replace('_', '-')} on the command line), never a loaded file"
            )
        data.pop(name, None)
    if artifact:
        for name in _marked(config_cls, _MACHINE_LOCAL):
            if data.pop(name, None) is not None:
                logger.info("%s: ignoring %s's %s (a place on the machine that saved it)",
                            source, label, name)
    for name, value in (caller_options or {}).items():
        if name in fields:
            data[name] = value
    try:
        return config_cls.model_validate(data, context={UNTRUSTED: source})
    except ValidationError as exc:
        unsafe = any(isinstance((e.get("ctx") or {}).get("error"), UnsafeValue)
                     for e in exc.errors())
        problems = "; ".join(_problem(e) for e in exc.errors())
        if any(e.get("type") == "extra_forbidden" for e in exc.errors()):
            problems += f" (valid options: {', '.join(sorted(fields))})"
        error = UnsafeSettingError if unsafe else ConfigError
        raise error(f"{source}: invalid options for the {label}: {problems}") from exc


def validate_options(config_cls: type[ConfigT], options: Mapping[str, Any], *,
                     label: str) -> ConfigT:
    """Options given in code as a mapping, validated into ``config_cls``.

    Raises:
        ConfigError: One line naming every unknown option and invalid value (and the valid
            options when one is unknown).
    """
    if not isinstance(options, Mapping):
        raise ConfigError(f"the {label} options must be a mapping, got {type(options).__name__}")
    try:
        return config_cls.model_validate(dict(options))
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        if any(e.get("type") == "extra_forbidden" for e in exc.errors()):
            problems += f" (valid options: {', '.join(sorted(config_cls.model_fields))})"
        raise ConfigError(f"invalid {label} options: {problems}") from exc


def error_message(error: Mapping[str, Any]) -> str:
    """The message of one pydantic validation error (an entry of ``ValidationError.errors()``)
    without pydantic's ``"Value error, "`` prefix, which a validator's own message gets."""
    return str(error.get("msg", "")).removeprefix("Value error, ")


def _problem(error: Any) -> str:
    loc = ".".join(str(part) for part in error.get("loc", ())) or "options"
    kind = error.get("type")
    if kind == "extra_forbidden":
        return f"{loc}: unknown option"
    if kind == "missing":
        return f"{loc}: required option is missing"
    return f"{loc}: {error_message(error)}"
