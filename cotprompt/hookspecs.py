"""The plugin hooks, at the path plugin authors import them from (``from cotprompt.hookspecs
import hookimpl``); defined in :mod:`cotprompt.plugins.hookspecs`."""

from cotprompt.plugins.hookspecs import (
    PROJECT_NAME,
    DatasetRegister,
    Register,
    hookimpl,
    hookspec,
    register_aggregators,
    register_backbones,
    register_datasets,
    register_generators,
    register_tuners,
)

__all__ = [
    "PROJECT_NAME",
    "DatasetRegister",
    "Register",
    "hookimpl",
    "hookspec",
    "register_aggregators",
    "register_backbones",
    "register_datasets",
    "register_generators",
    "register_tuners",
]
