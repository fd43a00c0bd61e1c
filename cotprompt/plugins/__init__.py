"""The component registry: built-in and installed plugins (pluggy), their records and messages.

``get_registry()`` finds every component by kind and name; plugins register classes through the
hooks of :mod:`cotprompt.plugins.hookspecs` (``from cotprompt import hookimpl``). See
``docs/plugins.md``.
"""

from cotprompt.plugins.registry import (
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
    Registry,
    create_component,
    get_registry,
    reset_registry,
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
