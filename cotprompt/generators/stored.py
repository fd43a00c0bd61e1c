"""Stands in for a generator that cannot be built when a saved pipeline is loaded.

Saved artifacts store the generated prompt chain, so loading never needs the generator itself (a
language model, say). When the generator's plugin or its optional dependencies are missing, this
stand-in serves the stored chain for the saved labels and explains what to install for new ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cotprompt.backbones.base import Backbone
from cotprompt.errors import ConfigError
from cotprompt.types import PromptChain, Task


class StoredChainGenerator:
    """Replays the chain saved in an artifact.

    Args:
        record: The artifact's generator entry (``name``, ``package``, ``config``), written back
            unchanged when the pipeline is saved again.
        chain: The stored chain.
        reason: Why the real generator could not be built.
    """

    def __init__(self, record: Mapping[str, Any], chain: PromptChain, reason: str) -> None:
        self.name = str(record.get("name", "unknown"))
        self.artifact_record = dict(record)
        self.chain = chain
        self.reason = reason

    def generate(self, task: Task, backbone: Backbone | None = None) -> PromptChain:
        """The stored chain when ``task`` has the saved labels.

        Raises:
            ConfigError: Other labels need the real generator.
        """
        if tuple(task.labels) == self.chain.labels:
            return self.chain
        package = self.artifact_record.get("package")
        hint = f" (package {package!r})" if package else ""
        raise ConfigError(
            f"writing prompts for new labels needs the generator {self.name!r}{hint}, which could "
            f"not be built: {self.reason}"
        )
