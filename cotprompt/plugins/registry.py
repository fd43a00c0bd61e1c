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

This module holds the loading and lookup of components; the records it collects, the kind and
hook constants and the component checks live in :mod:`cotprompt.plugins.records`, its error
messages in :mod:`cotprompt.plugins.messages`. Every public name of those is re-exported here.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import threading
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from cotprompt import hookspecs
from cotprompt.errors import ConfigError, PluginError, UnknownComponentError
from cotprompt.plugins.messages import unknown_component_message, validation_message
from cotprompt.plugins.records import (
    BUILTIN_PACKAGE,
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
    _builtin_version,
    _check_kind,
    _describe_exception,
    _distribution_of_module,
    _format_traceback,
    _packages_distributions,
    _validate_component,
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
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._components: dict[tuple[Kind, str], ComponentInfo] = {}
        self._failures: list[PluginFailure] = []
        self._duplicates: list[DuplicateComponent] = []

        self._load_builtins(builtins)
        if entry_points is None:
            entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        for ep in sorted(entry_points, key=self._entry_point_sort_key):
            self._load_entry_point(ep)
        for obj in extra_plugins:
            plugin_name = getattr(obj, "__name__", None) or type(obj).__name__
            if not isinstance(obj, types.ModuleType):
                package, version = _distribution_of_module(obj.__module__)
            elif getattr(obj, "__file__", None) is None:
                # a module built in memory (in a test): it belongs to no distribution
                package, version = normalize_package_name(obj.__name__.partition(".")[0]), None
            else:
                package, version = _distribution_of_module(obj.__name__)
            self._add_plugin(obj, plugin_name, package, version)

    # -- loading ----------------------------------------------------------------------------

    @staticmethod
    def _entry_point_sort_key(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
        dist = getattr(ep, "dist", None)
        return (normalize_package_name(dist.name) if dist is not None else "", ep.name)

    def _load_builtins(self, builtins: str | object | None) -> None:
        if builtins is None:
            return
        if isinstance(builtins, str):
            try:
                obj = importlib.import_module(builtins)
            except ModuleNotFoundError as exc:
                if exc.name == builtins:
                    logger.debug("no built-in components: module %s not found", builtins)
                    return
                self._fail(builtins, BUILTIN_PACKAGE, exc)
                return
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # SystemExit too: a plugin must not end the program
                self._fail(builtins, BUILTIN_PACKAGE, exc)
                return
            plugin_name = builtins
        else:
            obj = builtins
            plugin_name = BUILTINS_MODULE
        self._add_plugin(obj, plugin_name, BUILTIN_PACKAGE, _builtin_version())

    def _load_entry_point(self, ep: importlib.metadata.EntryPoint) -> None:
        dist = getattr(ep, "dist", None)
        if dist is not None:
            package = normalize_package_name(dist.name)
            version: str | None = dist.version
        else:
            package, version = _distribution_of_module(ep.value.partition(":")[0])
        try:
            obj = ep.load()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a plugin must not end the program
            self._fail(ep.name, package, exc)
            return
        self._add_plugin(obj, ep.name, package, version)

    def _add_plugin(self, obj: object, plugin_name: str, package: str, version: str | None) -> None:
        """Register one plugin object and collect what its hooks register, atomically."""
        if self._pm.is_registered(obj):
            logger.warning(
                "plugin %r (package %s) is the same object as plugin %r; skipped",
                plugin_name,
                package,
                self._pm.get_name(obj),
            )
            return
        pm_name = plugin_name
        if self._pm.has_plugin(pm_name):  # two distributions using the same entry-point name
            pm_name = f"{package}:{plugin_name}"
        try:
            self._pm.register(obj, name=pm_name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # pluggy.PluginValidationError, ValueError, SystemExit...
            if self._pm.is_registered(obj):
                self._pm.unregister(obj)
            self._fail(plugin_name, package, exc)
            return
        self._warn_unknown_hooks(obj, plugin_name, package)

        staged: dict[tuple[Kind, str], ComponentInfo] = {}
        others = [p for p in self._pm.get_plugins() if p is not obj]
        try:
            for kind in KINDS:
                caller = self._pm.subset_hook_caller(HOOK_NAMES[kind], remove_plugins=others)
                caller(register=self._make_register(kind, staged, plugin_name, package, version))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a plugin must not end the program
            self._pm.unregister(obj)
            self._fail(plugin_name, package, exc)
            return

        if not staged:
            logger.warning("plugin %r (package %s) registered no components", plugin_name, package)
        for key, info in staged.items():
            existing = self._components.get(key)
            if existing is None:
                self._components[key] = info
            elif existing.cls is not info.cls:
                self._duplicates.append(
                    DuplicateComponent(kind=key[0], name=key[1], kept=existing, ignored=info)
                )
                logger.warning(
                    "%s %r is registered by both %s (plugin %r) and %s (plugin %r); "
                    "using the one from %s",
                    key[0],
                    key[1],
                    existing.package,
                    existing.plugin,
                    info.package,
                    info.plugin,
                    existing.package,
                )

    def _make_register(
        self,
        kind: Kind,
        staged: dict[tuple[Kind, str], ComponentInfo],
        plugin_name: str,
        package: str,
        version: str | None,
    ) -> Callable[[type], None]:
        def register(cls: type) -> None:
            component = _validate_component(kind, cls)
            name: str = component.name  # type: ignore[attr-defined]
            previous = staged.get((kind, name))
            if previous is not None and previous.cls is not component:
                raise InvalidComponentError(
                    f"{kind} name {name!r} registered twice with different classes "
                    f"({previous.class_path} and {component.__module__}:"
                    f"{component.__qualname__})"
                )
            staged[(kind, name)] = ComponentInfo(
                kind=kind,
                name=name,
                package=package,
                version=version,
                cls=component,
                plugin=plugin_name,
            )

        return register

    def _warn_unknown_hooks(self, obj: object, plugin_name: str, package: str) -> None:
        for caller in self._pm.get_hookcallers(obj) or []:
            if caller.spec is not None:
                continue
            if all(impl.optionalhook for impl in caller.get_hookimpls() if impl.plugin is obj):
                continue
            logger.warning(
                "plugin %r (package %s) implements unknown hook %r (ignored); known hooks: %s",
                plugin_name,
                package,
                caller.name,
                ", ".join(HOOK_NAMES.values()),
            )

    def _fail(self, plugin_name: str, package: str, exc: BaseException) -> None:
        failure = PluginFailure(
            name=plugin_name,
            package=package,
            error=_describe_plugin_exception(exc),
            traceback=None if isinstance(exc, InvalidComponentError) else _format_traceback(exc),
        )
        if self._strict:
            raise PluginError(
                f"plugin {plugin_name!r} (package {package}) failed: {failure.error} "
                f"({STRICT_ENV_VAR} is set, so plugin failures are errors)"
            ) from exc
        self._failures.append(failure)
        logger.warning(
            "plugin %r (package %s) failed and was skipped: %s",
            plugin_name,
            package,
            failure.error,
        )

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

    def get(self, kind: Kind, name: str, *, package: str | None = None) -> type:
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
        config_cls: type[BaseModel] = cls.Config  # type: ignore[attr-defined]
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


def _describe_plugin_exception(exc: BaseException) -> str:
    """One line for a plugin failure; a ``SystemExit`` says which ``sys.exit`` call it was."""
    if isinstance(exc, SystemExit):
        code = "" if exc.code is None else repr(exc.code)
        return f"SystemExit: the plugin called sys.exit({code})"
    return _describe_exception(exc)


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
        _packages_distributions.cache_clear()
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
