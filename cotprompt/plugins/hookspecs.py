"""The pluggy hook specifications of cotprompt.

A plugin is a module (or any object) with functions marked ``@hookimpl`` whose names are those of
the hooks below; each hook receives a ``register`` callable and calls it once per class it
provides. Built-in components are registered through the same hooks (``cotprompt.builtins``).

Example::

    from cotprompt.plugins.hookspecs import hookimpl

    @hookimpl
    def register_generators(register):
        register(MyGenerator)

Every registered class needs two class attributes: ``name`` (a non-empty ``str``, the name users
select it by) and ``Config`` (a :class:`pydantic.BaseModel` subclass describing its options); it
is built as ``cls(cls.Config(**options))``. See ``docs/plugins.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pluggy

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

PROJECT_NAME = "cotprompt"
"""The pluggy project name, also the entry-point group plugins declare."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Register = Callable[[type], None]
"""The type of the ``register`` callable passed to every component hook: it takes one class."""

DatasetRegister = Callable[[str, Callable[[Path], Any]], None]
"""The type of the ``register`` callable of :func:`register_datasets`: ``register(name,
reader)``, where ``reader($DATA folder)`` returns a
:class:`cotprompt.data.research.ResearchDataset`."""


@hookspec
def register_backbones(register: Register) -> None:
    """Register backbone classes (frozen vision-language models such as CLIP variants).

    Args:
        register: Call ``register(cls)`` once for each backbone class the plugin provides. The
            class needs ``name: str`` and ``Config`` (a pydantic model) class attributes.
    """


@hookspec
def register_generators(register: Register) -> None:
    """Register prompt generator classes (:class:`cotprompt.protocols.PromptGenerator`).

    Args:
        register: Call ``register(cls)`` once for each generator class; the class needs
            ``name: str`` and ``Config`` class attributes and a ``generate(task, backbone=None)``
            method returning a :class:`cotprompt.types.PromptChain`.
    """


@hookspec
def register_tuners(register: Register) -> None:
    """Register prompt tuner classes (:class:`cotprompt.protocols.PromptTuner`).

    Args:
        register: Call ``register(cls)`` once for each tuner class (a ``torch.nn.Module`` with
            ``name: str`` and ``Config`` class attributes and ``bind``, ``encode_images`` and
            ``encode_text`` methods).
    """


@hookspec
def register_aggregators(register: Register) -> None:
    """Register aggregator classes (:class:`cotprompt.protocols.Aggregator`).

    Args:
        register: Call ``register(cls)`` once for each aggregator class (a ``torch.nn.Module``
            with ``name: str`` and ``Config`` class attributes, a ``bind(num_steps, embed_dim)``
            method and a ``forward(image_features, text_features, logit_scale)`` returning
            logits ``[B, C]``).
    """


@hookspec
def register_datasets(register: DatasetRegister) -> None:
    """Register dataset readers by name (not components: ``cotprompt plugins`` does not list
    them; :func:`cotprompt.data.research.load_dataset` and the sweeps find them).

    Args:
        register: Call ``register(name, reader)`` once for each dataset: ``name`` a non-empty
            ``str`` of letters, digits, ``_``, ``-`` and ``.``; ``reader`` a callable taking the
            ``$DATA`` folder (a ``pathlib.Path``) and returning a
            :class:`cotprompt.data.research.ResearchDataset`, raising
            :class:`cotprompt.errors.DataError` naming a missing file. A built-in name cannot be
            replaced.
    """
