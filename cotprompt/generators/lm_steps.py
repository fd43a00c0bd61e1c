"""The chain steps of the ``lm`` generator: what each step asks the language model
(:class:`LMStep`, the default chain :func:`default_lm_steps`), and how the step's texts of one
class are composed from the model's raw continuations (:func:`compose_texts`: cleaned, filtered,
fitted to the token budget, de-duplicated)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cotprompt.generators.postprocess import (
    TokenBudget,
    clean_generation,
    contains_name,
    count_words,
    dedupe,
    fill,
    template_fields,
)

__all__ = ["ComposedTexts", "LMStep", "compose_texts", "default_lm_steps", "trim_to_budget"]


class LMStep(BaseModel):
    """One chain step of the ``lm`` generator.

    Args:
        name: Step name.
        instruction: What the language model continues, with ``{class}`` and ``{article}``
            (``a``/``an``). ``None`` makes a plain template step that runs no model.
        template: The step text, with ``{class}``, ``{article}`` and (for steps with an
            instruction) ``{generated}``, the cleaned continuation. Default: ``"{generated}."``
            with an instruction, else ``"{class}."``.
        num_texts: Texts per class for this step (default: the generator's ``num_texts``).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    instruction: str | None = None
    template: str = ""
    num_texts: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check_fields(self) -> LMStep:
        if not self.template:
            self.template = "{class}." if self.instruction is None else "{generated}."
        fields = template_fields(self.template)
        allowed = {"class", "article", "generated"}
        if self.instruction is None:
            allowed.discard("generated")
        else:
            unknown = template_fields(self.instruction) - {"class", "article"}
            if unknown:
                raise ValueError(f"instruction of step {self.name!r} uses unknown field(s) "
                                 f"{sorted(unknown)}; use {{class}} and {{article}}")
            if "generated" not in fields:
                raise ValueError(f"template of step {self.name!r} must contain {{generated}}")
        if fields - allowed:
            raise ValueError(f"template of step {self.name!r} uses unknown field(s) "
                             f"{sorted(fields - allowed)}; allowed: {sorted(allowed)}")
        return self


def default_lm_steps() -> list[LMStep]:
    """The default chain, coarse to fine (a reconstruction: CoT-PT's prompts are unpublished):
    the class name, what kind of thing it is, and what it looks like."""
    return [
        LMStep(name="class", template="{class}."),
        LMStep(name="kind",
               instruction="Q: What kind of thing is {article} {class}?\nA: It is a kind of",
               template="{class}, a kind of {generated}."),
        LMStep(name="appearance",
               instruction="Q: What does {article} {class} look like?\nA: It has",
               template="{class}, which has {generated}."),
    ]


@dataclass
class ComposedTexts:
    """The texts of one class and step, and what composing them dropped.

    Attributes:
        texts: The kept texts, de-duplicated, in continuation order (empty when none was kept).
        dropped: Dropped texts by reason (``too_short``, ``too_long``, ``no_class_name``,
            ``duplicate``).
        trimmed: Texts shortened to fit the length budget.
    """

    texts: tuple[str, ...]
    dropped: Counter[str] = field(default_factory=Counter)
    trimmed: int = 0


def compose_texts(
    label: str,
    step: LMStep,
    raws: list[str],
    budget: TokenBudget,
    *,
    one_sentence: bool,
    min_words: int,
    trim: bool,
    require_class_name: bool,
) -> ComposedTexts:
    """Clean, filter, compose and de-duplicate the continuations of one class and step.

    Args:
        label: The class name.
        step: The step (one with an ``instruction``).
        raws: The model's raw continuations of the step's filled instruction.
        budget: The length budget, in the backbone's tokens.
        one_sentence: Keep only the first sentence of a continuation.
        min_words: Drop continuations with fewer words.
        trim: Shorten a text over the budget (:func:`trim_to_budget`) rather than drop it.
        require_class_name: Drop texts in which the class name does not occur.

    Returns:
        The texts and what was dropped or trimmed.
    """
    assert step.instruction is not None
    dropped: Counter[str] = Counter()
    trimmed = 0
    texts = []
    for raw in raws:
        generated = clean_generation(raw, one_sentence=one_sentence)
        if count_words(generated) < min_words:
            dropped["too_short"] += 1
            continue
        text = fill(step.template, label, generated=generated)
        if not budget.fits(text):
            text = trim_to_budget(label, step, generated, budget, min_words) if trim else ""
            if not text:
                dropped["too_long"] += 1
                continue
            trimmed += 1
        if require_class_name and not contains_name(text, label):
            dropped["no_class_name"] += 1
            continue
        texts.append(text)
    unique = dedupe(texts)
    dropped["duplicate"] += len(texts) - len(unique)
    return ComposedTexts(tuple(unique), dropped, trimmed)


def trim_to_budget(
    label: str, step: LMStep, generated: str, budget: TokenBudget, min_words: int
) -> str:
    """The step's text with the longest word prefix of ``generated`` that fits ``budget`` and
    keeps at least ``min_words`` words, or ``""``."""
    words = generated.split()
    lo, hi, best = 1, len(words) - 1, ""
    while lo <= hi:  # binary search: more words never take fewer tokens
        mid = (lo + hi) // 2
        candidate = " ".join(words[:mid]).rstrip(" ,;:-")
        text = fill(step.template, label, generated=candidate)
        if count_words(candidate) >= min_words and budget.fits(text):
            best, lo = text, mid + 1
        else:
            hi = mid - 1
    return best
