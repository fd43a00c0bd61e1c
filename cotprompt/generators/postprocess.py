"""Text clean-up and length budgets shared by the ``lm`` and ``descriptions`` generators.

Every step text of a chain follows the step's learnable context inside the backbone's text
encoder: ``[start] [n_ctx context vectors] [text tokens] [end]`` must fit ``context_length``
positions, so a step text may use at most ``context_length - 2 - n_ctx`` tokens of the
backbone's tokenizer. :class:`TokenBudget` measures texts with the backbone's own tokenizer
when one is given, and otherwise with a conservative estimate (:func:`estimate_clip_tokens`),
so that a text is never silently cut at the context length later on.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from cotprompt.errors import ConfigError
from cotprompt.generators.rule_based import ZeroShotPreset, fill_template
from cotprompt.generators.templates import (
    IMAGENET_TEMPLATES,
    IMAGENET_TEMPLATES_SELECT,
    dataset_template,
)
from cotprompt.types import Task

logger = logging.getLogger(__name__)

#: Context length assumed when no backbone is given (CLIP's).
DEFAULT_CONTEXT_LENGTH = 77

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_WORD_PIECES = re.compile(r"[A-Za-z]+|\s+|.", re.DOTALL)
_TRAILING = " \t\n\r.,;:!?-–—\"'"
_LEADING = " \t\n\r,;:-–—\"'"
_VOWEL_SOUND = re.compile(
    r"^(?:a|e(?!u)|i|o(?!ne)|u(?!s[aeiou]|n[iy]|r[aeiou]|ku|ti)|hour|honest|heir)", re.IGNORECASE
)


def estimate_clip_tokens(text: str) -> int:
    """A conservative estimate of the CLIP BPE token count of ``text`` (no start/end tokens).

    Each run of ASCII letters counts ``ceil(len / 2)`` tokens, every other non-space character
    as many tokens as its UTF-8 bytes (byte-level BPE never needs more). On the 43k texts of the
    CuPL and classification-by-description files it never under-counts CLIP's tokenizer and
    over-counts by about 2.2x on average, so texts measured with it fit with room to spare.
    """
    count = 0
    for piece in _WORD_PIECES.findall(text):
        if piece.isspace():
            continue
        if piece.isascii() and piece.isalpha():
            count += max(1, math.ceil(len(piece) / 2))
        else:
            count += len(piece.encode("utf-8"))
    return count


class TokenBudget:
    """How many backbone tokens a step text may use, and a counter for them.

    Args:
        backbone: The backbone the prompts are for; its ``count_tokens`` (or ``tokenize`` and
            ``end_of_text_index``) and ``context_length`` are used when present. ``None`` uses
            :func:`estimate_clip_tokens` and a context length of 77.
        n_ctx: Learnable context vectors the text follows (0 for full zero-shot sentences).
    """

    def __init__(self, backbone: Any | None, n_ctx: int) -> None:
        self.context_length = int(
            getattr(backbone, "context_length", DEFAULT_CONTEXT_LENGTH)
            if backbone is not None
            else DEFAULT_CONTEXT_LENGTH
        )
        self.limit = self.context_length - 2 - n_ctx
        if self.limit < 1:
            raise ConfigError(
                f"no room for any text: context length {self.context_length} - 2 - "
                f"n_ctx {n_ctx} = {self.limit} tokens; lower n_ctx_budget"
            )
        self.exact = backbone is not None
        self._count = lru_cache(maxsize=65536)(self._make_counter(backbone))

    @staticmethod
    def _make_counter(backbone: Any | None) -> Callable[[str], int]:
        if backbone is None:
            return estimate_clip_tokens
        count_tokens = getattr(backbone, "count_tokens", None)

        full = int(backbone.context_length)

        def count(text: str) -> int:
            try:
                if count_tokens is not None:
                    n = int(count_tokens(text))
                else:
                    tokens = backbone.tokenize([text])
                    n = int(backbone.end_of_text_index(tokens)[0]) - 1
            except ConfigError:  # no end-of-text token: longer than the whole context
                return full
            # Tokenizers that truncate (open_clip's) end a cut text at the last position: a
            # count that reaches it may have been cut, so it counts as too long.
            return full if n >= full - 2 else n

        return count

    def count(self, text: str) -> int:
        """Tokens of ``text`` (exact with a backbone, an over-estimate without)."""
        return self._count(text)

    def fits(self, text: str) -> bool:
        """Whether ``text`` fits the budget."""
        return self.count(text) <= self.limit


def article(word: str) -> str:
    """``"an"`` before a vowel sound, else ``"a"`` (a spelling heuristic)."""
    return "an" if _VOWEL_SOUND.match(word.strip()) else "a"


def fill(template: str, label: str, **fields: str) -> str:
    """Fill ``template`` with ``{class}``, ``{article}`` and ``fields``.

    Raises:
        ConfigError: The template uses a field that is not available.
    """
    values = {"class": label, "article": article(label), **fields}
    try:
        return template.replace("{}", "{class}").format_map(values)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"template {template!r} cannot be filled: {exc!r}; available fields: "
            f"{sorted('{' + k + '}' for k in values)}"
        ) from exc


def template_fields(template: str) -> set[str]:
    """Field names used by ``template`` (``{}`` counts as ``class``).

    Raises:
        ConfigError: The template is malformed.
    """
    import string

    try:
        parsed = list(string.Formatter().parse(template.replace("{}", "{class}")))
    except ValueError as exc:
        raise ConfigError(f"malformed template {template!r}: {exc}") from exc
    return {field for _, field, _, _ in parsed if field is not None}


def normalise_space(text: str) -> str:
    """Collapse runs of whitespace into one space and strip the ends."""
    return " ".join(text.split())


def first_sentence(text: str) -> str:
    """The text up to and including the first ``.``, ``!`` or ``?`` followed by a space or the
    end (the whole text when there is none)."""
    match = _SENTENCE_END.search(text)
    return text[: match.end()] if match else text


def ends_sentence(text: str) -> bool:
    """Whether ``text`` contains a line break or a finished sentence (used to stop decoding)."""
    return "\n" in text or _SENTENCE_END.search(text.rstrip(" ")) is not None


def clean_generation(text: str, *, one_sentence: bool = True) -> str:
    """Tidy a language model's continuation so that it can be placed in a step template.

    Keeps the first line (and, with ``one_sentence``, the first sentence), removes control
    characters and replacement characters (``U+FFFD``), collapses whitespace and strips
    leading/trailing punctuation and quotes (the template supplies the final full stop).
    """
    text = unicodedata.normalize("NFKC", text)
    text = text.strip().split("\n", 1)[0]
    # control characters, and U+FFFD left by a byte-level BPE cut inside a UTF-8 character
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C" and ch != "\ufffd")
    if one_sentence:
        text = first_sentence(text)
    return normalise_space(text).strip(_TRAILING).lstrip(_LEADING).strip()


def count_words(text: str) -> int:
    """Words (runs of letters or digits) in ``text``."""
    return len(re.findall(r"\w+", text))


def dedupe_key(text: str) -> str:
    """Key under which two texts count as duplicates (case, spacing, final punctuation)."""
    return normalise_space(text).casefold().rstrip(_TRAILING)


def dedupe(texts: Iterable[str]) -> list[str]:
    """``texts`` without duplicates (by :func:`dedupe_key`), first occurrence kept."""
    seen: set[str] = set()
    out = []
    for text in texts:
        key = dedupe_key(text)
        if key not in seen:
            seen.add(key)
            out.append(text)
    return out


def normalise_name(name: str) -> str:
    """A class name for matching: case-folded, with ``_``, ``-`` and whitespace runs as one
    space."""
    name = unicodedata.normalize("NFKC", name).casefold()
    return " ".join(re.sub(r"[_\-\s]+", " ", name).split())


def contains_name(text: str, name: str) -> bool:
    """Whether ``name`` occurs in ``text`` (case-, underscore- and hyphen-insensitive)."""
    return normalise_name(name) in normalise_name(text)


def zero_shot_texts(
    task: Task, templates: Sequence[str] | ZeroShotPreset, dataset: str | None = None
) -> tuple[tuple[str, ...], ...]:
    """Zero-shot sentences per label, with the presets of the ``rule-based`` generator.

    Args:
        task: The labels.
        templates: Templates with ``{class}``, or ``"dataset"`` (CoOp's template for the
            dataset, else ``"a photo of a {class}."``), ``"imagenet"`` or ``"imagenet-select"``.
        dataset: Dataset name for ``"dataset"`` (default: the task's).
    """
    if templates == "imagenet":
        chosen: Sequence[str] = IMAGENET_TEMPLATES
    elif templates == "imagenet-select":
        chosen = IMAGENET_TEMPLATES_SELECT
    elif templates == "dataset":
        chosen = [dataset_template(dataset or task.dataset) or "a photo of a {class}."]
    else:
        chosen = list(templates)
    attributes: Mapping[str, Mapping[str, Sequence[str]]] = task.attributes
    out = []
    for label in task.labels:
        texts: list[str] = []
        for template in chosen:
            texts.extend(fill_template(template, label, attributes))
        out.append(tuple(dict.fromkeys(texts)))
    return tuple(out)
