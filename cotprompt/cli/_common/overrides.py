"""``--set KEY=VALUE``: overriding any key of a config file on the command line.

An override sets a dotted path of the config file's mapping (``training.epochs``,
``tuner.config.n_ctx``, ``data.shots``) to a value read as YAML (``5``, ``true``, ``[a, b]``),
before the mapping is validated: overrides go through the same checks as the file (a
caller-only option such as ``backbone.config.allow_pickle`` still needs ``--allow-pickle``).
:func:`validate_with_overrides` names the override that a validation error comes from.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from cotprompt.errors import ConfigError, CotpromptError

__all__ = ["Override", "apply_overrides", "parse_overrides", "validate_with_overrides"]

T = TypeVar("T")

#: Top-level sections that may be a bare component name (``tuner: cotpt``).
_COMPONENT_SECTIONS = ("backbone", "generator", "tuner", "aggregator")


class Override:
    """One ``--set KEY=VALUE``: the dotted key, its parsed value and the text as given."""

    def __init__(self, text: str, *, label: str | None = None) -> None:
        self.text = text
        #: How errors name it: ``--set KEY=VALUE``, or the option that stands for it.
        self.label = label or f"--set {text}"
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {text}: expected KEY=VALUE (e.g. --set training.epochs=5)")
        self.path = key.split(".")
        if any(not part.strip() for part in self.path):
            raise ConfigError(f"--set {text}: the key {key!r} has an empty part")
        self.path = [part.strip() for part in self.path]
        self.key = ".".join(self.path)
        import yaml

        try:
            self.value = yaml.safe_load(raw) if raw.strip() else None
        except RecursionError as exc:
            raise ConfigError(f"--set {key}=...: the value is nested too deeply") from exc
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
            raise ConfigError(f"--set {text}: cannot read the value as YAML: {problem}") from exc

    def __repr__(self) -> str:
        return f"Override({self.text!r})"


def parse_overrides(items: Sequence[str] | None) -> list[Override]:
    """The ``--set`` options, in order (a later one wins over an earlier one)."""
    return [Override(item) for item in items or ()]


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[Override]) -> dict[str, Any]:
    """A deep copy of ``data`` with the overrides set (missing sections are created; a bare
    component name such as ``tuner: cotpt`` becomes ``{name: cotpt}`` when a key below it is set).

    Raises:
        ConfigError: A key goes through a value that is not a section (naming the ``--set``).
    """
    result = copy.deepcopy(dict(data))
    for override in overrides:
        node = result
        for depth, part in enumerate(override.path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif isinstance(child, str) and depth == 0 and part in _COMPONENT_SECTIONS:
                child = node[part] = {"name": child}
            elif not isinstance(child, dict):
                where = ".".join(override.path[: depth + 1])
                raise ConfigError(
                    f"{override.label}: `{where}` is {child!r}, not a section with keys"
                )
            node = child
        node[override.path[-1]] = override.value
    return result


def validate_with_overrides(
    data: Mapping[str, Any],
    overrides: Sequence[Override],
    validate: Callable[[dict[str, Any]], T],
    *,
    source: str | None = None,
) -> T:
    """``validate(data with the overrides)``; when that fails because of an override (the file
    alone validates), the error names the first override that makes it fail:
    ``--set KEY=VALUE: <the error>`` (of the same class).

    Args:
        data: The config file's mapping.
        overrides: The ``--set`` options.
        validate: Validates a mapping (raises a cotprompt error).
        source: The config file, whose name is dropped from the start of a blamed message.
    """
    merged = apply_overrides(data, overrides)
    try:
        return validate(merged)
    except CotpromptError as error:
        if not overrides:
            raise
        try:  # the file alone fails too: the file's error
            validate(apply_overrides(data, ()))
        except CotpromptError:
            raise error from None
        for count, override in enumerate(overrides, start=1):
            try:
                validate(apply_overrides(data, overrides[:count]))
            except CotpromptError as blamed:
                message = str(blamed)
                if source and message.startswith(f"{source}: "):
                    message = message[len(source) + 2:]
                raise _same_class(blamed, f"{override.label}: {message}") from blamed
        raise


def _same_class(error: CotpromptError, message: str) -> CotpromptError:
    """``error``'s class with another message (a plain :class:`ConfigError` if it cannot)."""
    try:
        return type(error)(message)
    except Exception:
        return ConfigError(message)
