"""cotprompt: chain-of-thought prompt tuning (CoT-PT, CoOp, CoCoOp) for CLIP-style models.

The public names below are imported on first use (PEP 562 module ``__getattr__``), so that
``import cotprompt`` and the command line's ``--help`` / ``--version`` do not import torch;
``from cotprompt import CoTPipeline`` works as usual. The task heads that
``CoTPipeline.fit`` / ``evaluate`` look up are loaded by their registry on first lookup
(see :mod:`cotprompt.pipeline.heads`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cotprompt._version import __version__

if TYPE_CHECKING:
    from cotprompt.pipeline import CoTPipeline, PipelineConfig, Prediction
    from cotprompt.plugins.hookspecs import hookimpl
    from cotprompt.protocols import Aggregator, PromptGenerator, PromptTuner
    from cotprompt.training.config import TrainingConfig
    from cotprompt.types import PromptChain, PromptStep, Task

__all__ = [
    "Aggregator",
    "CoTPipeline",
    "PipelineConfig",
    "Prediction",
    "PromptChain",
    "PromptGenerator",
    "PromptStep",
    "PromptTuner",
    "Task",
    "TrainingConfig",
    "__version__",
    "hookimpl",
]

# Public name -> the module it is imported from on first access.
_LAZY_NAMES: dict[str, str] = {
    "Aggregator": "cotprompt.protocols",
    "CoTPipeline": "cotprompt.pipeline",
    "PipelineConfig": "cotprompt.pipeline",
    "Prediction": "cotprompt.pipeline",
    "PromptChain": "cotprompt.types",
    "PromptGenerator": "cotprompt.protocols",
    "PromptStep": "cotprompt.types",
    "PromptTuner": "cotprompt.protocols",
    "Task": "cotprompt.types",
    "TrainingConfig": "cotprompt.training.config",
    "hookimpl": "cotprompt.plugins.hookspecs",
}


# Subpackages and modules reachable as attributes after a plain ``import cotprompt``
# (``cotprompt.data.few_shot``), imported on first access as well.
_SUBMODULES = frozenset({
    "aggregators", "artifact", "backbones", "builtins", "cli", "config", "data", "errors",
    "evaluation", "experiments", "generators", "hookspecs", "hub", "io", "kernels", "model",
    "pipeline", "plugins", "protocols", "tasks", "training", "tuners", "types",
})


def __getattr__(name: str) -> Any:
    """Import a public name or a subpackage on first access and keep it in the module's
    namespace."""
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")  # the import sets the attribute
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)
