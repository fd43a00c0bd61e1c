"""Prompt generators: turn a task's labels into a chain of prompt texts.

``rule-based`` (templates), ``lm`` / ``gpt2`` (a ``transformers`` causal language model) and
``descriptions`` (CuPL / classification-by-description JSON files). The language-model and
description generators are imported lazily, on first attribute access, so that
``import cotprompt`` never imports ``transformers``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cotprompt.generators.rule_based import RuleBasedConfig, RuleBasedGenerator, StepTemplates

if TYPE_CHECKING:
    from cotprompt.generators.descriptions import (
        DescriptionsConfig,
        DescriptionsGenerator,
        DescriptionStep,
    )
    from cotprompt.generators.lm import (
        GPT2Generator,
        GPT2GeneratorConfig,
        LMGenerator,
        LMGeneratorConfig,
        LMStep,
    )

_LAZY = {
    "DescriptionStep": "cotprompt.generators.descriptions",
    "DescriptionsConfig": "cotprompt.generators.descriptions",
    "DescriptionsGenerator": "cotprompt.generators.descriptions",
    "GPT2Generator": "cotprompt.generators.lm",
    "GPT2GeneratorConfig": "cotprompt.generators.lm",
    "LMGenerator": "cotprompt.generators.lm",
    "LMGeneratorConfig": "cotprompt.generators.lm",
    "LMStep": "cotprompt.generators.lm",
}

__all__ = [
    "DescriptionStep",
    "DescriptionsConfig",
    "DescriptionsGenerator",
    "GPT2Generator",
    "GPT2GeneratorConfig",
    "LMGenerator",
    "LMGeneratorConfig",
    "LMStep",
    "RuleBasedConfig",
    "RuleBasedGenerator",
    "StepTemplates",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
