"""Loading plugins: registering each plugin object with pluggy and collecting its components.

A :class:`PluginLoader` registers one plugin at a time (the built-ins, an entry point, or any
plugin object), calls its hooks, checks every class it registers (:func:`validate_component`)
and keeps what it registered only when all of it is valid, so that one broken plugin is reported
(a :class:`~cotprompt.plugins.records.PluginFailure`, a logged warning) and skipped while the
others keep working. :class:`~cotprompt.plugins.registry.Registry` drives it; it logs on the
``cotprompt.plugins`` logger.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import traceback as traceback_module
import types
from collections.abc import Callable

import pluggy
from pydantic import BaseModel

from cotprompt.errors import PluginError
from cotprompt.plugins import hookspecs
from cotprompt.plugins.records import (
    BUILTIN_PACKAGE,
    BUILTINS_MODULE,
    HOOK_NAMES,
    KINDS,
    STRICT_ENV_VAR,
    ComponentInfo,
    DuplicateComponent,
    InvalidComponentError,
    Kind,
    PluginFailure,
    builtin_version,
    distribution_of_module,
    normalize_package_name,
)

__all__ = ["DATASETS_HOOK", "PluginLoader", "entry_point_sort_key", "validate_component"]

DATASETS_HOOK = "register_datasets"
"""The hook that registers dataset readers; not a component kind: its registrations are
collected by :mod:`cotprompt.data.research.registry`, not here."""

logger = logging.getLogger("cotprompt.plugins")  # the documented logger name

# Methods a class of each kind must have (backbones have no protocol here yet).
_REQUIRED_METHODS: dict[Kind, tuple[str, ...]] = {
    "backbone": (),
    "generator": ("generate",),
    "tuner": ("bind", "encode_images", "encode_text"),
    "aggregator": ("bind",),
}


def validate_component(kind: Kind, obj: object) -> type:
    """Check that ``obj`` is a valid component class of ``kind``.

    Args:
        kind: The kind it was registered as.
        obj: What the plugin passed to ``register``.

    Returns:
        ``obj``, a class with a non-empty ``name``, a pydantic ``Config`` and the methods of
        its kind.

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


def entry_point_sort_key(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    """(normalised distribution name, entry-point name): the order entry points load in."""
    dist = getattr(ep, "dist", None)
    return (normalize_package_name(dist.name) if dist is not None else "", ep.name)


def _describe_exception(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _describe_plugin_exception(exc: BaseException) -> str:
    """One line for a plugin failure; a ``SystemExit`` says which ``sys.exit`` call it was."""
    if isinstance(exc, SystemExit):
        code = "" if exc.code is None else repr(exc.code)
        return f"SystemExit: the plugin called sys.exit({code})"
    return _describe_exception(exc)


def _format_traceback(exc: BaseException) -> str:
    return "".join(traceback_module.format_exception(type(exc), exc, exc.__traceback__))


class PluginLoader:
    """Registers plugins one at a time and collects their components, failures and clashes.

    For a clashing (kind, name) the component loaded first is kept. Any exception a plugin
    raises at import, at registration or in a hook (``SystemExit`` included, not
    ``KeyboardInterrupt``) makes it a failure: reported and skipped, or raised in strict mode.

    Args:
        strict: Raise :class:`~cotprompt.errors.PluginError` on the first plugin failure
            instead of reporting it.
    """

    def __init__(self, *, strict: bool) -> None:
        self.strict = strict
        self.plugin_manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.plugin_manager.add_hookspecs(hookspecs)
        self.components: dict[tuple[Kind, str], ComponentInfo] = {}
        """The components kept, by (kind, name), in load order."""
        self.failures: list[PluginFailure] = []
        """The plugins that failed and were skipped, in load order."""
        self.duplicates: list[DuplicateComponent] = []
        """The (kind, name) clashes met, in load order."""

    def load_builtins(self, builtins: str | object | None) -> None:
        """Load the built-in plugin: a module name to import (a missing module means no
        built-ins), a plugin object, or ``None`` for none."""
        if builtins is None:
            return
        obj: object
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
        self.add_plugin(obj, plugin_name, BUILTIN_PACKAGE, builtin_version())

    def load_entry_point(self, ep: importlib.metadata.EntryPoint) -> None:
        """Load the plugin an entry point names, as provided by its distribution."""
        dist = getattr(ep, "dist", None)
        if dist is not None:
            package = normalize_package_name(dist.name)
            version: str | None = dist.version
        else:
            package, version = distribution_of_module(ep.value.partition(":")[0])
        try:
            obj = ep.load()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a plugin must not end the program
            self._fail(ep.name, package, exc)
            return
        self.add_plugin(obj, ep.name, package, version)

    def load_object(self, obj: object) -> None:
        """Load a plugin object (a module, class or instance), named after itself and credited
        to the distribution of its module."""
        plugin_name = getattr(obj, "__name__", None) or type(obj).__name__
        if not isinstance(obj, types.ModuleType):
            package, version = distribution_of_module(obj.__module__)
        elif getattr(obj, "__file__", None) is None:
            # a module built in memory (in a test): it belongs to no distribution
            package, version = normalize_package_name(obj.__name__.partition(".")[0]), None
        else:
            package, version = distribution_of_module(obj.__name__)
        self.add_plugin(obj, plugin_name, package, version)

    def add_plugin(self, obj: object, plugin_name: str, package: str, version: str | None) -> None:
        """Register one plugin object and collect what its hooks register, atomically."""
        pm = self.plugin_manager
        if pm.is_registered(obj):
            logger.warning(
                "plugin %r (package %s) is the same object as plugin %r; skipped",
                plugin_name,
                package,
                pm.get_name(obj),
            )
            return
        pm_name = plugin_name
        if pm.has_plugin(pm_name):  # two distributions using the same entry-point name
            pm_name = f"{package}:{plugin_name}"
        try:
            pm.register(obj, name=pm_name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # pluggy.PluginValidationError, ValueError, SystemExit...
            if pm.is_registered(obj):
                pm.unregister(obj)
            self._fail(plugin_name, package, exc)
            return
        self._warn_unknown_hooks(obj, plugin_name, package)

        staged: dict[tuple[Kind, str], ComponentInfo] = {}
        others = [p for p in pm.get_plugins() if p is not obj]
        try:
            for kind in KINDS:
                caller = pm.subset_hook_caller(HOOK_NAMES[kind], remove_plugins=others)
                caller(register=self._make_register(kind, staged, plugin_name, package, version))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a plugin must not end the program
            pm.unregister(obj)
            self._fail(plugin_name, package, exc)
            return

        if not staged and not self._implements(obj, DATASETS_HOOK):
            logger.warning("plugin %r (package %s) registered no components", plugin_name, package)
        for key, info in staged.items():
            existing = self.components.get(key)
            if existing is None:
                self.components[key] = info
            elif existing.cls is not info.cls:
                self.duplicates.append(
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
            component = validate_component(kind, cls)
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

    def _implements(self, obj: object, hook: str) -> bool:
        """Whether the registered plugin ``obj`` implements ``hook``."""
        callers = self.plugin_manager.get_hookcallers(obj) or []
        return any(caller.name == hook for caller in callers)

    def _warn_unknown_hooks(self, obj: object, plugin_name: str, package: str) -> None:
        for caller in self.plugin_manager.get_hookcallers(obj) or []:
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
        if self.strict:
            raise PluginError(
                f"plugin {plugin_name!r} (package {package}) failed: {failure.error} "
                f"({STRICT_ENV_VAR} is set, so plugin failures are errors)"
            ) from exc
        self.failures.append(failure)
        logger.warning(
            "plugin %r (package %s) failed and was skipped: %s",
            plugin_name,
            package,
            failure.error,
        )
