"""Generator ``descriptions``: chain steps from published LLM-written description files.

Reads JSON files that map class names to texts, ``{"class name": ["text", ...], ...}``, the
format of CuPL (Pratt et al., 2023: whole sentences such as ``"A tench is a freshwater fish
..."``) and of "classification by description" (Menon & Vondrick, 2023: short visual
descriptors such as ``"olive green or brown in color"``), and maps them onto chain steps:

* a sentence file gives a step whose texts are the sentences themselves (``"{text}"``);
* a descriptor file gives a step ``"{class}, which {clause}."``, where ``{clause}`` turns the
  descriptor into a relative clause the way Menon & Vondrick build their sentences
  (``"is a freshwater fish"``, ``"has olive green or brown in color"``...);

all texts of a class are ensembled by the tuner. Class names are matched case-, underscore- and
hyphen-insensitively (or by position with ``match="order"``); a class without an entry is an
error that lists close matches (:mod:`difflib`), or, with ``on_missing="fallback"``, a warning
and ``fallback_template``: never silently dropped.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cotprompt.config import ComponentConfig
from cotprompt.errors import ConfigError
from cotprompt.generators.postprocess import (
    TokenBudget,
    dedupe,
    fill,
    normalise_name,
    normalise_space,
    template_fields,
    zero_shot_texts,
)
from cotprompt.generators.rule_based import ZeroShotPreset
from cotprompt.types import PromptChain, PromptStep, Task

if TYPE_CHECKING:
    from cotprompt.backbones.base import Backbone

logger = logging.getLogger(__name__)

Descriptions = dict[str, list[str]]

#: First words after which a descriptor already reads as a verb phrase ("which has ...").
_VERB_STARTS = frozenset({
    "has", "have", "is", "are", "can", "may", "might", "often", "usually", "typically",
    "sometimes", "generally", "commonly", "lives", "grows", "looks", "contains", "appears",
    "consists", "tends", "shows", "features", "resembles", "comes", "includes", "will",
})
#: First words after which a descriptor needs "is" ("which is used to ...").
_IS_STARTS = frozenset({"a", "an", "the", "one", "used", "made", "found", "shaped", "covered",
                        "similar", "located", "known", "worn", "kept", "seen"})
_ADVERBS = frozenset({"often", "usually", "typically", "sometimes", "generally", "commonly"})


def descriptor_clause(descriptor: str) -> str:
    """A relative clause from a visual descriptor, to follow ``"{class}, which "``.

    ``"a seabird"`` -> ``"is a seabird"``; ``"used for cutting"`` -> ``"is used for cutting"``;
    ``"has a long neck"`` -> ``"has a long neck"``; ``"black and white"`` ->
    ``"has black and white"`` (the rule of Menon & Vondrick's sentence construction).
    """
    text = normalise_space(descriptor).rstrip(".")
    words = text.casefold().split(" ", 2)
    first = words[0] if text else ""
    if first in _ADVERBS and len(words) > 1 and words[1] in _IS_STARTS - {"a", "an", "the"}:
        return f"is {text}"  # "typically made of wool" -> "is typically made of wool"
    if first in _VERB_STARTS:
        return text
    if first in _IS_STARTS:
        return f"is {text}"
    return f"has {text}"


class DescriptionStep(BaseModel):
    """One chain step of the ``descriptions`` generator.

    Args:
        name: Step name.
        template: The step text, with ``{class}``, ``{article}`` and, for steps with a
            ``source``, ``{text}`` (the description as written) and ``{clause}``
            (:func:`descriptor_clause` of it).
        source: A JSON file ``{class: [text, ...]}``; ``None`` for a plain template step.
        max_texts: Keep at most this many texts per class (in file order; default: the
            generator's ``max_texts``).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    template: str = "{class}."
    source: str | None = None
    max_texts: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check_fields(self) -> DescriptionStep:
        allowed = {"class", "article"} | ({"text", "clause"} if self.source else set())
        unknown = template_fields(self.template) - allowed
        if unknown:
            raise ValueError(f"template of step {self.name!r} uses unknown field(s) "
                             f"{sorted(unknown)}; allowed: {sorted(allowed)}")
        if self.source and not template_fields(self.template) & {"text", "clause"}:
            raise ValueError(f"template of step {self.name!r} has a source but uses neither "
                             "{text} nor {clause}")
        return self


class DescriptionsConfig(ComponentConfig):
    """Options of the ``descriptions`` generator.

    Args:
        files: Description files; the chain is ``"{class}."`` followed by one step per file:
            ``"{text}"`` for sentence files (CuPL), ``"{class}, which {clause}."`` for
            descriptor files (classification by description), recognised by whether most
            texts end with a full stop. Use ``steps`` for full control instead.
        steps: The chain, coarse to fine (exclusive with ``files``).
        match: ``"name"``: class names are matched case-, underscore- and
            hyphen-insensitively; ``"order"``: the i-th entry of each file belongs to the
            i-th class (the file must have exactly one entry per class; a name that matches
            another position is an error).
        aliases: ``{class name: name in the files}`` for names that differ.
        on_missing: ``"error"``: a class without texts is a :class:`ConfigError` listing
            close matches; ``"fallback"``: it gets ``fallback_template`` (with a warning).
        fallback_template: Text for a class without usable texts.
        max_texts: Keep at most this many texts per class and step (default: all).
        n_ctx_budget: Learnable context vectors texts must leave room for: a text may use
            ``context_length - 2 - n_ctx_budget`` backbone tokens; longer ones are dropped
            (and counted in the log).
        zero_shot_templates: Sentences of the untuned classifier, as for ``rule-based``.
        zero_shot_from: ``"templates"``: ``zero_shot_templates``; ``"descriptions"``: the
            texts of the last step with a source (the CuPL / description classifiers).
        dataset: Dataset name for ``zero_shot_templates="dataset"``.
    """

    files: list[str] = Field(default_factory=list)
    steps: list[DescriptionStep] | None = None
    match: Literal["name", "order"] = "name"
    aliases: dict[str, str] = Field(default_factory=dict)
    on_missing: Literal["error", "fallback"] = "error"
    fallback_template: str = "{class}."
    max_texts: int | None = Field(default=None, ge=1)
    n_ctx_budget: int = Field(default=16, ge=0)
    zero_shot_templates: list[str] | ZeroShotPreset = "dataset"
    zero_shot_from: Literal["templates", "descriptions"] = "templates"
    dataset: str | None = None

    @model_validator(mode="after")
    def _check(self) -> DescriptionsConfig:
        if self.steps is not None and self.files:
            raise ValueError("give either `files` or `steps`, not both")
        if self.steps is None and not self.files:
            raise ValueError("give description `files` (or `steps` with sources)")
        if self.steps is not None:
            names = [s.name for s in self.steps]
            if not names or len(set(names)) != len(names):
                raise ValueError(f"steps must be a non-empty list with unique names, got {names}")
        if template_fields(self.fallback_template) - {"class", "article"}:
            raise ValueError("fallback_template may only use {class} and {article}")
        return self


@dataclass
class DescriptionStats:
    """What the last :meth:`DescriptionsGenerator.generate` call did.

    Attributes:
        matched_by_position: ``(label, file key)`` pairs matched by position whose names differ.
        missing: ``(label, step)`` cells that had no entry (or an empty one) in the file.
        too_long: Texts dropped for exceeding the length budget.
        fallbacks: ``(label, step)`` cells that got ``fallback_template``.
    """

    matched_by_position: list[tuple[str, str]] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    too_long: int = 0
    fallbacks: list[tuple[str, str]] = field(default_factory=list)


def load_descriptions(path: str | Path) -> Descriptions:
    """Read a ``{class: [text, ...]}`` JSON file (a single string counts as one text).

    Raises:
        ConfigError: Missing file, invalid JSON, or another shape.
    """
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"description file not found: {path}") from None
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise ConfigError(f"cannot read description file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object {{class: [text, ...]}}, "
                          f"got {type(data).__name__}")
    out: Descriptions = {}
    for key, value in data.items():
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ConfigError(f"{path}: the entry of {key!r} must be a list of strings")
        out[str(key)] = [normalise_space(t) for t in texts if t.strip()]
    if not out:
        raise ConfigError(f"{path}: no entries")
    return out


def looks_like_sentences(descriptions: Mapping[str, Sequence[str]]) -> bool:
    """Whether most texts are full sentences (CuPL) rather than short descriptors."""
    texts = [t for values in descriptions.values() for t in values]
    ended = sum(t.rstrip().endswith((".", "!", "?")) for t in texts)
    return bool(texts) and ended >= len(texts) / 2


def _close_matches(label: str, keys: Sequence[str]) -> list[str]:
    by_norm: dict[str, str] = {}
    for key in keys:
        by_norm.setdefault(normalise_name(key), key)
    close = difflib.get_close_matches(normalise_name(label), list(by_norm), n=3, cutoff=0.6)
    return [by_norm[c] for c in close]


class DescriptionsGenerator:
    """Prompt chains from CuPL-style and classification-by-description-style JSON files."""

    name: ClassVar[str] = "descriptions"
    Config: ClassVar[type[DescriptionsConfig]] = DescriptionsConfig

    def __init__(self, config: DescriptionsConfig | None = None) -> None:
        if config is None:
            raise ConfigError("the descriptions generator needs `files` or `steps`")
        self.config = config
        self.stats = DescriptionStats()
        self._ambiguous: set[str] = set()

    def _steps(self) -> list[DescriptionStep]:
        cfg = self.config
        if cfg.steps is not None:
            return cfg.steps
        steps = [DescriptionStep(name="class", template="{class}.")]
        used = {"class"}
        for path in cfg.files:
            sentences = looks_like_sentences(load_descriptions(path))
            name = base = "description" if sentences else "descriptor"
            i = 2
            while name in used:
                name, i = f"{base}_{i}", i + 1
            used.add(name)
            template = "{text}" if sentences else "{class}, which {clause}."
            steps.append(DescriptionStep(name=name, template=template, source=path))
        return steps

    def _match(self, task: Task, data: Descriptions, source: str) -> list[str | None]:
        """The entry of ``data`` for every label (``None`` where there is none)."""
        cfg = self.config
        keys = list(data)
        by_norm: dict[str, str] = {}
        for key in keys:
            norm = normalise_name(key)
            if norm in by_norm:
                logger.warning("%s: entries %r and %r have the same normalised name; using %r",
                               source, by_norm[norm], key, by_norm[norm])
                continue
            by_norm[norm] = key
        aliases = {normalise_name(k): v for k, v in cfg.aliases.items()}
        # Labels that differ only in case/separators (ImageNet's "Cardigan" and "cardigan")
        # match exact names only: a normalised match would be a guess.
        label_norms = Counter(normalise_name(label) for label in task.labels)
        self._ambiguous.update(label for label in task.labels
                               if label_norms[normalise_name(label)] > 1)

        def by_name(label: str) -> str | None:
            alias = cfg.aliases.get(label, aliases.get(normalise_name(label)))
            if alias is not None:
                key = alias if alias in data else by_norm.get(normalise_name(alias))
                if key is None:
                    raise ConfigError(f"alias {label!r} -> {alias!r}: {source} has no entry "
                                      f"{alias!r}; close: {_close_matches(alias, keys)}")
                return key
            if label in data:
                return label
            if label_norms[normalise_name(label)] > 1:
                return None
            return by_norm.get(normalise_name(label))

        if cfg.match == "order":
            if len(keys) != task.num_labels:
                raise ConfigError(
                    f"match='order' needs one entry per class: {source} has {len(keys)} "
                    f"entries for {task.num_labels} classes"
                )
            chosen = []
            for i, label in enumerate(task.labels):
                named = by_name(label)
                if named is not None and named != keys[i] and normalise_name(label) in aliases:
                    chosen.append(named)  # an explicit alias wins over the position
                    continue
                if named is not None and named != keys[i]:
                    raise ConfigError(
                        f"match='order': class {i} {label!r} is entry {keys.index(named)} "
                        f"({named!r}) of {source}, not entry {i} ({keys[i]!r}); the file is in "
                        "another order, use match='name'"
                    )
                if named is None:
                    self.stats.matched_by_position.append((label, keys[i]))
                chosen.append(keys[i])
            if self.stats.matched_by_position:
                shown = ", ".join(f"{a!r} -> {b!r}" for a, b in
                                  self.stats.matched_by_position[:5])
                logger.info("%s: %d classes matched by position under other names (%s%s)",
                            source, len(self.stats.matched_by_position), shown,
                            ", ..." if len(self.stats.matched_by_position) > 5 else "")
            return list(chosen)

        found = [by_name(label) for label in task.labels]
        unused = len(keys) - len(set(found) - {None})
        if unused:
            logger.debug("%s: %d entries are not among the task's classes", source, unused)
        return found

    def _missing_error(self, problems: list[tuple[str, str, list[str], bool]]) -> ConfigError:
        lines = []
        for label, source, keys, empty in problems[:20]:
            if empty:
                lines.append(f"  {label!r}: its entry in {source} is empty")
                continue
            close = _close_matches(label, keys)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            if label in self._ambiguous:
                hint += (" [another class differs from it only in case or separators, so only "
                         "its exact name matches]")
            lines.append(f"  {label!r}: not in {source}{hint}")
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        return ConfigError(
            f"{len(problems)} class(es) have no descriptions:\n" + "\n".join(lines) + more
            + "\nFix the class names, map them with `aliases`, use match='order' if the file "
            "lists the same classes in the same order, or on_missing='fallback'."
        )

    def generate(self, task: Task, backbone: Backbone | None = None) -> PromptChain:
        """Build the chain for ``task`` from the description files.

        Raises:
            ConfigError: A file is unreadable, or classes have no entry (with
                ``on_missing="error"``).
        """
        cfg = self.config
        self.stats = DescriptionStats()
        self._ambiguous = set()
        budget = TokenBudget(backbone, cfg.n_ctx_budget)
        steps = self._steps()
        matched: dict[str, list[list[str] | None]] = {}
        problems: list[tuple[str, str, list[str], bool]] = []
        for step in steps:
            if step.source is None:
                continue
            data = load_descriptions(step.source)
            found = self._match(task, data, step.source)
            matched[step.name] = [(data[key] or None) if key else None for key in found]
            for label, key in zip(task.labels, found, strict=True):
                if key is None or not data[key]:
                    self.stats.missing.append((label, step.name))
                    problems.append((label, step.source, list(data), key is not None))
        if problems and cfg.on_missing == "error":
            raise self._missing_error(problems)
        chain_steps = []
        for step in steps:
            per_label = []
            for c, label in enumerate(task.labels):
                texts = matched[step.name][c] if step.source is not None else None
                per_label.append(self._texts(step, label, texts, budget))
            chain_steps.append(PromptStep(name=step.name, texts=tuple(per_label)))
        self._report(budget)
        if cfg.zero_shot_from == "descriptions" and any(s.source for s in steps):
            last = max(k for k, s in enumerate(steps) if s.source)
            zero_shot = chain_steps[last].texts
        else:
            zero_shot = zero_shot_texts(task, cfg.zero_shot_templates, cfg.dataset)
        return PromptChain(labels=task.labels, steps=tuple(chain_steps), zero_shot=zero_shot)

    def _texts(self, step: DescriptionStep, label: str, texts: list[str] | None,
               budget: TokenBudget) -> tuple[str, ...]:
        cfg = self.config
        if step.source is None:
            return (fill(step.template, label),)
        out = []
        for text in texts or []:
            filled = fill(step.template, label, text=text, clause=descriptor_clause(text))
            if budget.fits(filled):
                out.append(filled)
            else:
                self.stats.too_long += 1
        out = dedupe(out)[: step.max_texts or cfg.max_texts or None]
        if not out:
            self.stats.fallbacks.append((label, step.name))
            out = [fill(cfg.fallback_template, label)]
        return tuple(out)

    def _report(self, budget: TokenBudget) -> None:
        stats = self.stats
        if stats.too_long:
            logger.warning("descriptions: dropped %d text(s) longer than %d tokens (the budget "
                           "after n_ctx_budget=%d context vectors)", stats.too_long,
                           budget.limit, self.config.n_ctx_budget)
        if stats.fallbacks:
            shown = ", ".join(f"{label!r}/{step}" for label, step in stats.fallbacks[:5])
            logger.warning("descriptions: %d class/step cell(s) have no usable text and use %r "
                           "(%s%s)", len(stats.fallbacks), self.config.fallback_template, shown,
                           ", ..." if len(stats.fallbacks) > 5 else "")
