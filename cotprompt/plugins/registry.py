"""The component registry: built-in and third-party components found through pluggy.

Components (backbones, generators, tuners, aggregators) are classes registered by pluggy hooks
(:mod:`cotprompt.plugins.hookspecs`). :class:`Registry` registers the built-ins first (the
``cotprompt.builtins`` module), then every entry point of group ``"cotprompt"``, one at a time, so
that one broken plugin is reported (:attr:`Registry.failures`, a logged warning) and skipped
while the others keep working; this holds for any exception a plugin raises at import, at
registration or in a hook, ``SystemExit`` (a plugin calling ``sys.exit()``) included; only
``KeyboardInterrupt`` goes through. Set ``COTPROMPT_STRICT_PLUGINS=1`` to turn any such failure into
a :class:`~cotprompt.errors.PluginError`.

When two plugins register the same (kind, name), the first one wins (built-ins always come
first) and the clash is reported in :attr:`Registry.duplicates`.

Most code uses the cached :func:`get_registry` and :func:`create_component`.

This module holds the lookup and creation of components; loading the plugins and checking what
they register lives in :mod:`cotprompt.plugins.loading`, the records it collects and the kind
and hook constants in :mod:`cotprompt.plugins.records`, its error messages in
:mod:`cotprompt.plugins.messages`. The records and constants are re-exported here.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from cotprompt.errors import ConfigError, UnknownComponentError
from cotprompt.plugins.loading import PluginLoader, entry_point_sort_key
from cotprompt.plugins.messages import unknown_component_message, validation_message
from cotprompt.plugins.records import (
    BUILTIN_PACKAGE,  # noqa: F401 - re-exported: imported from here (tests/test_docs.py)
    BUILTINS_MODULE,
    ENTRY_POINT_GROUP,
    HOOK_NAMES,
    KINDS,
    STRICT_ENV_VAR,
    ComponentInfo,
    DuplicateComponent,
    InvalidComponentError,
    Kind,
    PluginFailure,
    clear_distribution_cache,
    normalize_package_name,
    strict_from_env,
)

__all__ = [
    "BUILTINS_MODULE",
    "ENTRY_POINT_GROUP",
    "HOOK_NAMES",
    "KINDS",
    "STRICT_ENV_VAR",
    "ComponentInfo",
    "DuplicateComponent",
    "InvalidComponentError",
    "Kind",
    "PluginFailure",
    "Registry",
    "create_component",
    "get_registry",
    "reset_registry",
]

logger = logging.getLogger("cotprompt.plugins")  # the documented logger name


def _check_kind(kind: str) -> None:
    if kind not in HOOK_NAMES:
        raise UnknownComponentError(
            f"unknown component kind {kind!r}; expected one of {', '.join(KINDS)}"
        )


class Registry:
    """All registered components, with the plugin failures and name clashes met loading them.

    Plugins are loaded in this order: the built-ins, then the entry points of group
    ``"cotprompt"`` (sorted by distribution and entry-point name, for a reproducible order),
    then ``extra_plugins``. For a clashing (kind, name) the first one wins.

    Args:
        extra_plugins: Additional plugin objects (modules, classes or instances with
            ``@hookimpl`` functions), registered after the entry points; mostly for tests and
            for applications that embed their own components.
        builtins: The built-in plugin: a module name to import (default
            ``"cotprompt.builtins"``; a missing module means no built-ins), a plugin object, or
            ``None`` for no built-ins.
        entry_points: The entry points to load; ``None`` (default) discovers those of group
            ``"cotprompt"`` with :func:`importlib.metadata.entry_points`.
        strict: Raise :class:`~cotprompt.errors.PluginError` on the first plugin failure
            instead of reporting it; ``None`` (default) reads ``COTPROMPT_STRICT_PLUGINS``.

    Raises:
        PluginError: In strict mode, when a plugin fails to load or registers something
            invalid.
    """

    def __init__(
        self,
        *,
        extra_plugins: Sequence[object] = (),
        builtins: str | object | None = BUILTINS_MODULE,
        entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
        strict: bool | None = None,
    ) -> None:
        self._strict = strict_from_env() if strict is None else strict
        loader = PluginLoader(strict=self._strict)
        self._pm: pluggy.PluginManager = loader.plugin_manager
        self._components: dict[tuple[Kind, str], ComponentInfo] = loader.components
        self._failures: list[PluginFailure] = loader.failures
        self._duplicates: list[DuplicateComponent] = loader.duplicates

        loader.load_builtins(builtins)
        if entry_points is None:
            entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        for ep in sorted(entry_points, key=entry_point_sort_key):
            loader.load_entry_point(ep)
        for obj in extra_plugins:
            loader.load_object(obj)

    # -- queries ----------------------------------------------------------------------------

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """The underlying pluggy plugin manager (plugins that failed are unregistered)."""
        return self._pm

    @property
    def strict(self) -> bool:
        """Whether plugin failures raise instead of being reported."""
        return self._strict

    @property
    def failures(self) -> list[PluginFailure]:
        """The plugins that failed and were skipped, in load order."""
        return list(self._failures)

    @property
    def duplicates(self) -> list[DuplicateComponent]:
        """The (kind, name) clashes met, in load order."""
        return list(self._duplicates)

    def names(self, kind: Kind) -> list[str]:
        """The registered names of ``kind``, sorted."""
        return [c.name for c in self.list(kind)]

    def __contains__(self, key: object) -> bool:
        """``(kind, name) in registry``."""
        return key in self._components

    def info(self, kind: Kind, name: str, *, package: str | None = None) -> ComponentInfo:
        """The :class:`ComponentInfo` of a registered component.

        Args:
            kind: The component kind.
            name: The registered name.
            package: The distribution expected to provide it (as recorded in a saved
                artifact); used only to say what to install when the name is unknown.

        Returns:
            The component's info.

        Raises:
            UnknownComponentError: When no component of that kind has that name.
        """
        _check_kind(kind)
        found = self._components.get((kind, name))
        if found is None:
            raise UnknownComponentError(self._unknown_message(kind, name, package))
        if package is not None and normalize_package_name(package) != found.package:
            logger.info(
                "%s %r was expected from package %s but is provided by %s",
                kind,
                name,
                package,
                found.package,
            )
        return found

    def get(self, kind: Kind, name: str, *, package: str | None = None) -> type[Any]:
        """The class registered as ``name`` for ``kind``.

        Args:
            kind: The component kind.
            name: The registered name.
            package: The distribution expected to provide it, to say what to install when
                it is missing.

        Returns:
            The component class.

        Raises:
            UnknownComponentError: When the name is unknown; the message lists close matches,
                all available names, how to install the component and any related plugin
                failure.
        """
        return self.info(kind, name, package=package).cls

    def find_class(self, cls: type) -> ComponentInfo | None:
        """The registration of ``cls`` (for recording which package provides an object).

        Args:
            cls: A component class.

        Returns:
            Its :class:`ComponentInfo`, or ``None`` when the class is not registered.
        """
        for info in self._components.values():
            if info.cls is cls:
                return info
        return None

    def create(
        self,
        kind: Kind,
        name: str,
        config: Mapping[str, Any] | BaseModel | None = None,
        *,
        package: str | None = None,
    ) -> Any:
        """Build a component: validate ``config`` with its ``Config`` model and instantiate it.

        Args:
            kind: The component kind.
            name: The registered name.
            config: Options as a mapping, an instance of the component's ``Config``, or
                ``None`` for the defaults.
            package: The distribution expected to provide it (see :meth:`get`).

        Returns:
            ``cls(cls.Config(...))``.

        Raises:
            UnknownComponentError: When the name is unknown.
            ConfigError: When the options do not validate.
        """
        cls = self.get(kind, name, package=package)
        config_cls: type[BaseModel] = cls.Config
        label = f"{kind} {name!r}"
        if isinstance(config, config_cls):
            instance = config
        elif isinstance(config, BaseModel):
            raise ConfigError(
                f"invalid config for {label}: expected a {config_cls.__qualname__} or a mapping, "
                f"got a {type(config).__qualname__}"
            )
        elif config is None or isinstance(config, Mapping):
            try:
                instance = config_cls.model_validate(dict(config or {}))
            except ValidationError as exc:
                raise ConfigError(validation_message(label, config_cls, exc)) from exc
        else:
            raise ConfigError(
                f"invalid config for {label}: expected a mapping of options, "
                f"got {type(config).__qualname__}"
            )
        return cls(instance)

    def to_json_list(self) -> list[dict[str, Any]]:
        """The components as JSON-serialisable dicts (``cotprompt plugins --json``).

        Returns:
            One dict per component, sorted by kind then name, with keys ``kind``, ``name``,
            ``package``, ``version``, ``plugin`` and ``class`` (``"module:qualname"``).
        """
        return [c.to_dict() for c in self.list()]

    # -- messages ---------------------------------------------------------------------------

    def _unknown_message(self, kind: Kind, name: str, package: str | None) -> str:
        return unknown_component_message(kind, name, package, self.names(kind), self._failures)

    def list(self, kind: Kind | None = None) -> list[ComponentInfo]:
        """The registered components, sorted by kind then name.

        Args:
            kind: Only this kind; ``None`` for all.

        Returns:
            One :class:`ComponentInfo` per component.
        """
        if kind is not None:
            _check_kind(kind)
        items = [c for c in self._components.values() if kind is None or c.kind == kind]
        return sorted(items, key=lambda c: (c.kind, c.name))


_registry: Registry | None = None
_registry_lock = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, built on first use and then cached.

    Returns:
        The cached :class:`Registry` (built-ins plus installed plugins).

    Raises:
        PluginError: When ``COTPROMPT_STRICT_PLUGINS`` is set and a plugin fails.
    """
    global _registry
    with _registry_lock:
        if _registry is None:
            _registry = Registry()
        return _registry


def reset_registry() -> None:
    """Forget the cached registry, so the next :func:`get_registry` rescans the plugins.

    Call it in tests, or after installing a plugin package at run time.
    """
    global _registry
    with _registry_lock:
        _registry = None
        clear_distribution_cache()
        importlib.invalidate_caches()


def create_component(
    kind: Kind,
    name: str,
    config: Mapping[str, Any] | BaseModel | None = None,
    *,
    package: str | None = None,
) -> Any:
    """Build a registered component from the process-wide registry.

    Args:
        kind: ``"backbone"``, ``"generator"``, ``"tuner"`` or ``"aggregator"``.
        name: The registered name.
        config: Options as a mapping, an instance of the component's ``Config`` or ``None``
            for the defaults.
        package: The distribution expected to provide it (recorded in saved artifacts), to
            say what to install when it is missing.

    Returns:
        The component, ``cls(cls.Config(...))``.

    Raises:
        UnknownComponentError: When the name is unknown.
        ConfigError: When the options do not validate.
    """
    return get_registry().create(kind, name, config, package=package)
