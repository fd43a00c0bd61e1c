"""The component registry: built-in and third-party components found through pluggy.

Components (backbones, generators, tuners, aggregators) are classes registered by pluggy hooks
(:mod:`cotprompt.hookspecs`). :class:`Registry` registers the built-ins first (the
``cotprompt.builtins`` module), then every entry point of group ``"cotprompt"``, one at a time, so
that one broken plugin is reported (:attr:`Registry.failures`, a logged warning) and skipped
while the others keep working. Set ``COTPROMPT_STRICT_PLUGINS=1`` to turn any such failure into
a :class:`~cotprompt.errors.PluginError`.

When two plugins register the same (kind, name), the first one wins (built-ins always come
first) and the clash is reported in :attr:`Registry.duplicates`.

Most code uses the cached :func:`get_registry` and :func:`create_component`.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import logging
import os
import re
import sys
import threading
import traceback as traceback_module
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import pluggy
from pydantic import BaseModel, ValidationError

from cotprompt import hookspecs
from cotprompt.errors import ConfigError, PluginError, UnknownComponentError

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

logger = logging.getLogger(__name__)

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

# Methods a class of each kind must have (backbones have no protocol here yet).
_REQUIRED_METHODS: dict[Kind, tuple[str, ...]] = {
    "backbone": (),
    "generator": ("generate",),
    "tuner": ("bind", "encode_images", "encode_text"),
    "aggregator": ("bind",),
}


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


def _distribution_of_module(module_name: str) -> tuple[str, str | None]:
    """The (normalised distribution name, version) that provides ``module_name``.

    Falls back to the top-level module name (and no version) for modules outside any
    distribution, such as test modules.
    """
    top = module_name.partition(".")[0]
    if top == BUILTIN_PACKAGE:
        return BUILTIN_PACKAGE, _builtin_version()
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


def _builtin_version() -> str:
    from cotprompt._version import __version__

    return __version__


def _describe_exception(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _format_traceback(exc: BaseException) -> str:
    return "".join(traceback_module.format_exception(type(exc), exc, exc.__traceback__))


def _validate_component(kind: Kind, obj: object) -> type:
    """Check that ``obj`` is a valid component class of ``kind``.

    Raises:
        InvalidComponentError: With a message saying what is wrong.
    """
    hook = HOOK_NAMES[kind]
    if not isinstance(obj, type):
        raise InvalidComponentError(f"{hook} registered {obj!r}, which is not a class")
    where = f"{obj.__module__}.{obj.__qualname__}"
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise InvalidComponentError(
            f"{kind} class {where} needs a class attribute `name: str` (non-empty), got {name!r}"
        )
    config = getattr(obj, "Config", None)
    if config is None:
        raise InvalidComponentError(
            f"{kind} class {where} ({name!r}) needs a class attribute `Config`, "
            "a pydantic BaseModel subclass describing its options"
        )
    if not (isinstance(config, type) and issubclass(config, BaseModel)):
        raise InvalidComponentError(
            f"{kind} class {where} ({name!r}): `Config` must be a pydantic BaseModel subclass, "
            f"got {config!r}"
        )
    missing = [m for m in _REQUIRED_METHODS[kind] if not callable(getattr(obj, m, None))]
    if missing:
        raise InvalidComponentError(
            f"{kind} class {where} ({name!r}) lacks method(s) {', '.join(missing)} "
            f"required of a {kind}; was it registered with the right hook ({hook})?"
        )
    return obj


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
            except Exception as exc:
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
        except Exception as exc:
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
        except Exception as exc:  # pluggy.PluginValidationError, ValueError
            self._fail(plugin_name, package, exc)
            return
        self._warn_unknown_hooks(obj, plugin_name, package)

        staged: dict[tuple[Kind, str], ComponentInfo] = {}
        others = [p for p in self._pm.get_plugins() if p is not obj]
        try:
            for kind in KINDS:
                caller = self._pm.subset_hook_caller(HOOK_NAMES[kind], remove_plugins=others)
                caller(register=self._make_register(kind, staged, plugin_name, package, version))
        except Exception as exc:
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
            error=_describe_exception(exc),
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
                raise ConfigError(_validation_message(label, config_cls, exc)) from exc
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
        available = self.names(kind)
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
                    f"It was a built-in of cotprompt; this is cotprompt {_builtin_version()}: "
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
            for f in self._failures
            if f.name == name
            or (wanted is not None and normalize_package_name(f.package) == wanted)
        ]
        for failure in related:
            lines.append(
                f"Plugin {failure.name!r} (package {failure.package}) failed to load: "
                f"{failure.error}"
            )
        others = [f for f in self._failures if f not in related]
        if others:
            names = ", ".join(f"{f.name!r} ({f.package})" for f in others)
            lines.append(
                f"Note: {len(others)} plugin(s) failed to load and were skipped: {names}; "
                "run `cotprompt plugins` for details."
            )
        return "\n".join(lines)

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


def _check_kind(kind: str) -> None:
    if kind not in HOOK_NAMES:
        raise UnknownComponentError(
            f"unknown component kind {kind!r}; expected one of {', '.join(KINDS)}"
        )


def _validation_message(label: str, config_cls: type[BaseModel], exc: ValidationError) -> str:
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
