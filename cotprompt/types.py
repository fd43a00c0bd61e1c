"""Value types that pass between the components of a pipeline.

A :class:`Task` says what prompts are wanted for (class names for classification; captions or
answers for other task kinds), a generator turns it into a :class:`PromptChain` of K steps, and a
tuner turns the chain into step text features, a tensor of shape ``[B or 1, K, C, E]`` (batch,
steps, labels, embedding dimension) that an aggregator combines into logits ``[B, C]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cotprompt.errors import DataError

CLASSIFICATION = "classification"


@dataclass(frozen=True)
class Task:
    """What the prompts are generated for.

    Args:
        labels: One entry per output column of the logits: class names for classification,
            captions for retrieval, candidate answers for VQA.
        kind: The task family (``"classification"``; other kinds are added by plugins).
        dataset: Optional dataset name (for example ``"oxford_pets"``) used by generators that
            ship dataset-specific templates.
        attributes: Optional per-label fields that templates may use, as
            ``{field: {label: [value, ...]}}`` (for example ``{"group": {"beagle": ["dog"]}}``).
        extra: Free-form, task-kind specific information (for example the questions of a VQA
            batch); the core never reads it.
    """

    labels: tuple[str, ...]
    kind: str = CLASSIFICATION
    dataset: str | None = None
    attributes: Mapping[str, Mapping[str, Sequence[str]]] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels = tuple(self.labels)
        object.__setattr__(self, "labels", labels)
        if not labels:
            raise DataError("a task needs at least one label (class name); got an empty list")
        blank = [i for i, label in enumerate(labels) if not str(label).strip()]
        if blank:
            raise DataError(
                f"labels must be non-empty strings; blank label(s) at index {blank[:5]}"
            )
        seen: dict[str, int] = {}
        for i, label in enumerate(labels):
            if label in seen:
                raise DataError(
                    f"duplicate label {label!r} at index {seen[label]} and {i}; "
                    "labels must be unique"
                )
            seen[label] = i

    @classmethod
    def classification(cls, class_names: Sequence[str], dataset: str | None = None) -> Task:
        """A classification task over ``class_names`` (underscores are read as spaces)."""
        return cls(labels=tuple(name.replace("_", " ") for name in class_names), dataset=dataset)

    @property
    def num_labels(self) -> int:
        """C, the number of labels (columns of the logits)."""
        return len(self.labels)


@dataclass(frozen=True)
class PromptStep:
    """One step of a prompt chain.

    Args:
        name: A short name for the step (``"class"``, ``"group"``, ``"descriptor"``...).
        texts: For each label, one or more texts that follow the learnable context, for example
            ``("airplane.",)``; several texts of one label are ensembled (mean of normalised
            features). Shape ``[C][T_c]``.
    """

    name: str
    texts: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class PromptChain:
    """K prompt steps for C labels, from coarse to fine, plus full zero-shot sentences.

    Args:
        labels: The C labels, in logit order.
        steps: The K steps; every step has exactly C entries, each with at least one text.
        zero_shot: For each label, complete sentences (no learnable context) used by the untuned
            (zero-shot) classifier, for example ``("a photo of a airplane.",)``. Shape ``[C][T_c]``.
    """

    labels: tuple[str, ...]
    steps: tuple[PromptStep, ...]
    zero_shot: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if not self.steps:
            raise DataError("a prompt chain needs at least one step")
        c = len(self.labels)
        for step in self.steps:
            if len(step.texts) != c:
                raise DataError(
                    f"step {step.name!r} has texts for {len(step.texts)} labels, expected {c}"
                )
            empty = [self.labels[i] for i, t in enumerate(step.texts) if not t]
            if empty:
                raise DataError(f"step {step.name!r} has no text for label(s) {empty[:5]}")
        if len(self.zero_shot) != c or any(not t for t in self.zero_shot):
            raise DataError("zero_shot must hold at least one sentence for each label")

    @property
    def num_steps(self) -> int:
        """K, the number of steps."""
        return len(self.steps)

    @property
    def num_labels(self) -> int:
        """C, the number of labels."""
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form, stored in saved artifacts."""
        return {
            "labels": list(self.labels),
            "steps": [{"name": s.name, "texts": [list(t) for t in s.texts]} for s in self.steps],
            "zero_shot": [list(t) for t in self.zero_shot],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptChain:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                labels=tuple(data["labels"]),
                steps=tuple(
                    PromptStep(name=s["name"], texts=tuple(tuple(t) for t in s["texts"]))
                    for s in data["steps"]
                ),
                zero_shot=tuple(tuple(t) for t in data["zero_shot"]),
            )
        except (KeyError, TypeError) as exc:
            raise DataError(f"malformed prompt chain: {exc!r}") from exc
