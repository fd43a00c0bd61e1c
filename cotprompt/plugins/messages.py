"""The registry's error messages: an unknown component name, and invalid component options.

:func:`unknown_component_message` says what is available, what is close, what to install and
which plugin failures may explain a missing component; :func:`validation_message` turns a
pydantic :class:`~pydantic.ValidationError` of a component's ``Config`` into one line per bad
option. :class:`~cotprompt.plugins.registry.Registry` raises them as
:class:`~cotprompt.errors.UnknownComponentError` and :class:`~cotprompt.errors.ConfigError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from pydantic import BaseModel, ValidationError

from cotprompt.plugins.records import (
    BUILTIN_PACKAGE,
    ENTRY_POINT_GROUP,
    Kind,
    PluginFailure,
    builtin_version,
    normalize_package_name,
)

__all__ = ["unknown_component_message", "validation_message"]


def unknown_component_message(
    kind: Kind,
    name: str,
    package: str | None,
    available: Sequence[str],
    failures: Sequence[PluginFailure],
) -> str:
    """The message of an :class:`~cotprompt.errors.UnknownComponentError`.

    Args:
        kind: The component kind asked for.
        name: The unknown name.
        package: The distribution expected to provide it (recorded in a saved artifact), if
            known.
        available: The registered names of ``kind``, sorted.
        failures: The plugins that failed to load, in load order.

    Returns:
        Several lines: close matches, the available names, how to install the component, and
        the plugin failures (those related to ``name`` or ``package`` in detail).
    """
    lines = [f"unknown {kind} {name!r}."]
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
    if close:
        lines.append("Did you mean: " + ", ".join(repr(c) for c in close) + "?")
    if available:
        lines.append(f"Available {kind}s: " + ", ".join(repr(a) for a in available) + ".")
    else:
        lines.append(f"No {kind}s are registered.")
    if package is not None:
        if normalize_package_name(package) == BUILTIN_PACKAGE:
            lines.append(
                f"It was a built-in of cotprompt; this is cotprompt {builtin_version()}: "
                "install the cotprompt version that provides it "
                "(`pip install -U cotprompt`)."
            )
        else:
            lines.append(
                f"It is provided by package {package!r}: install it with "
                f"`pip install {package}`."
            )
    else:
        lines.append(
            "If it comes from a plugin package, install that package; it must declare an "
            f"entry point in group {ENTRY_POINT_GROUP!r}."
        )
    wanted = normalize_package_name(package) if package is not None else None
    related = [
        f
        for f in failures
        if f.name == name
        or (wanted is not None and normalize_package_name(f.package) == wanted)
    ]
    for failure in related:
        lines.append(
            f"Plugin {failure.name!r} (package {failure.package}) failed to load: "
            f"{failure.error}"
        )
    others = [f for f in failures if f not in related]
    if others:
        names = ", ".join(f"{f.name!r} ({f.package})" for f in others)
        lines.append(
            f"Note: {len(others)} plugin(s) failed to load and were skipped: {names}; "
            "run `cotprompt plugins` for details."
        )
    return "\n".join(lines)


def validation_message(label: str, config_cls: type[BaseModel], exc: ValidationError) -> str:
    """The message of a :class:`~cotprompt.errors.ConfigError` for invalid component options.

    Args:
        label: The component, as ``"<kind> '<name>'"``.
        config_cls: The component's ``Config`` model.
        exc: The error raised validating the options.

    Returns:
        A heading, one line per invalid option, and the list of valid options.
    """
    lines = [f"invalid config for {label} ({config_cls.__qualname__}):"]
    for error in exc.errors():
        loc = ".".join(str(part) for part in error.get("loc", ())) or "<config>"
        kind = error.get("type")
        if kind == "extra_forbidden":
            lines.append(f"  - {loc}: unknown option")
        elif kind == "missing":
            lines.append(f"  - {loc}: required option is missing")
        else:
            got = repr(error.get("input"))
            if len(got) > 80:
                got = got[:77] + "..."
            lines.append(f"  - {loc}: {error.get('msg')} (got {got})")
    fields = sorted(config_cls.model_fields)
    lines.append("Valid options: " + (", ".join(fields) if fields else "(none)") + ".")
    return "\n".join(lines)
