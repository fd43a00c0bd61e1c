"""Plugin records: what the registry knows about components, plugins and packages.

The data the :class:`~cotprompt.plugins.registry.Registry` collects (:class:`ComponentInfo`,
:class:`PluginFailure`, :class:`DuplicateComponent`), the constants that name component kinds,
hooks, the entry-point group and the strict-mode variable, the error raised for an invalid
component class (:class:`InvalidComponentError`), and the helpers that find the distribution
(package name and version) providing a module.

The records and constants are re-exported by :mod:`cotprompt.plugins.registry`; import them from
there.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from cotprompt.errors import PluginError
from cotprompt.plugins import hookspecs

__all__ = [
    "BUILTINS_MODULE",
    "BUILTIN_PACKAGE",
    "ENTRY_POINT_GROUP",
    "HOOK_NAMES",
    "KINDS",
    "STRICT_ENV_VAR",
    "ComponentInfo",
    "DuplicateComponent",
    "InvalidComponentError",
    "Kind",
    "PluginFailure",
    "builtin_version",
    "clear_distribution_cache",
    "distribution_of_module",
    "normalize_package_name",
    "strict_from_env",
]

Kind = Literal["backbone", "generator", "tuner", "aggregator"]

KINDS: tuple[Kind, ...] = ("backbone", "generator", "tuner", "aggregator")
"""The component kinds, in the order their hooks are called."""

HOOK_NAMES: dict[Kind, str] = {
    "backbone": "register_backbones",
    "generator": "register_generators",
    "tuner": "register_tuners",
    "aggregator": "register_aggregators",
}
"""The hook that registers each kind."""

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME
"""The entry-point group a plugin distribution declares its plugin module in."""

BUILTINS_MODULE = "cotprompt.builtins"
"""The module holding the hook implementations of the built-in components."""

BUILTIN_PACKAGE = "cotprompt"

STRICT_ENV_VAR = "COTPROMPT_STRICT_PLUGINS"
"""Environment variable: when true (``1``, ``true``, ``yes``, ``on``), plugin failures raise."""


@dataclass(frozen=True)
class ComponentInfo:
    """One registered component.

    Args:
        kind: ``"backbone"``, ``"generator"``, ``"tuner"`` or ``"aggregator"``.
        name: The registered name (the class's ``name`` attribute).
        package: The distribution providing it (``"cotprompt"`` for built-ins), normalised as
            pip spells it (lower case, ``-`` separators).
        version: That distribution's version, when known.
        cls: The component class.
        plugin: The plugin that registered it: the entry-point name, or
            ``"cotprompt.builtins"`` for built-ins.
    """

    kind: Kind
    name: str
    package: str
    version: str | None
    cls: type
    plugin: str

    @property
    def class_path(self) -> str:
        """The class as ``"module:qualname"``."""
        return f"{self.cls.__module__}:{self.cls.__qualname__}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (the ``cotprompt plugins --json`` row).

        Returns:
            A dict with keys ``kind``, ``name``, ``package``, ``version``, ``plugin``, ``class``.
        """
        return {
            "kind": self.kind,
            "name": self.name,
            "package": self.package,
            "version": self.version,
            "plugin": self.plugin,
            "class": self.class_path,
        }


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that failed to load or registered something invalid, and was skipped.

    Args:
        name: The plugin (entry-point) name.
        package: The distribution that declares it.
        error: The error as ``"ExceptionType: message"``.
        traceback: The formatted traceback, when there was an exception.
    """

    name: str
    package: str
    error: str
    traceback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (``name``, ``package``, ``error``, ``traceback``)."""
        return {
            "name": self.name,
            "package": self.package,
            "error": self.error,
            "traceback": self.traceback,
        }


@dataclass(frozen=True)
class DuplicateComponent:
    """Two plugins registered the same (kind, name); the first one was kept.

    Args:
        kind: The component kind.
        name: The clashing name.
        kept: The component in use (registered first; built-ins are always first).
        ignored: The component that was ignored.
    """

    kind: Kind
    name: str
    kept: ComponentInfo
    ignored: ComponentInfo

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form, with the packages of both components."""
        return {
            "kind": self.kind,
            "name": self.name,
            "kept_package": self.kept.package,
            "kept_plugin": self.kept.plugin,
            "ignored_package": self.ignored.package,
            "ignored_plugin": self.ignored.plugin,
        }


class InvalidComponentError(PluginError):
    """A plugin passed ``register`` something that is not a valid component class."""


def normalize_package_name(name: str) -> str:
    """Normalise a distribution name the way pip compares them (PEP 503).

    Args:
        name: A distribution name such as ``"Cotprompt_Throwaway"``.

    Returns:
        The name in lower case with runs of ``-``, ``_`` and ``.`` replaced by ``-``.
    """
    return re.sub(r"[-_.]+", "-", name).lower()


def strict_from_env() -> bool:
    """Whether ``COTPROMPT_STRICT_PLUGINS`` asks for plugin failures to raise."""
    value = os.environ.get(STRICT_ENV_VAR, "").strip().lower()
    return value in {"1", "true", "yes", "on"}


@lru_cache(maxsize=1)
def _packages_distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def clear_distribution_cache() -> None:
    """Forget the cached map of top-level modules to distributions that
    :func:`distribution_of_module` reads (after installing a package at run time)."""
    _packages_distributions.cache_clear()


def distribution_of_module(module_name: str) -> tuple[str, str | None]:
    """The (normalised distribution name, version) that provides ``module_name``.

    Falls back to the top-level module name (and no version) for modules outside any
    distribution, such as test modules.
    """
    top = module_name.partition(".")[0]
    if top == BUILTIN_PACKAGE:
        return BUILTIN_PACKAGE, builtin_version()
    loaded = sys.modules.get(top)
    if loaded is not None and getattr(loaded, "__file__", None) is None:
        # built in memory (not from any file, so not from any distribution): skip the scan
        return normalize_package_name(top), None
    dists = _packages_distributions().get(top) or []
    if dists:
        name = dists[0]
        try:
            version: str | None = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = None
        return normalize_package_name(name), version
    return normalize_package_name(top), None


def builtin_version() -> str:
    """The version of cotprompt itself (the version of its built-in components)."""
    from cotprompt._version import __version__

    return __version__
