"""Configuration models shared by all components.

Every component's options are a pydantic model deriving from :class:`ComponentConfig`, which
rejects unknown keys so that a typo in a YAML file is an error, not a silently ignored option.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ComponentConfig(BaseModel):
    """Base class of component options: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=False)


class ComponentSpec(BaseModel):
    """A component chosen by registered name, with its options as a plain mapping.

    Args:
        name: The registered name (see ``cotprompt plugins``).
        config: Options validated by the component's own ``Config`` model.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    config: dict[str, Any] = Field(default_factory=dict)
