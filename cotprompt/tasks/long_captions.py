"""Captions longer than the text encoder's context: one rule, tuned and zero-shot alike, in training
and in evaluation (``long_captions``). Every text of every caption is counted before the first
training step or score; ``error`` refuses the long ones (counted, the first three named),
``truncate`` lets the tokenizer cut them as CLIP's own evaluation does and logs how many."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from cotprompt.data.retrieval import RetrievalDataset
from cotprompt.errors import ConfigError, DataError
from cotprompt.tasks import loops
from cotprompt.tasks._tokens import binding_backbone
from cotprompt.tasks.generators import RETRIEVAL
from cotprompt.tuners.prompt_tokens import long_texts_truncated
from cotprompt.types import Task

if TYPE_CHECKING:
    from cotprompt.pipeline import CoTPipeline

logger = logging.getLogger("cotprompt.tasks.retrieval")  # the logger name it has always had

LongCaptions = Literal["error", "truncate"]


def chunk_ranges(count: int, size: int) -> list[range]:
    """``range(count)`` cut into consecutive ranges of at most ``size``."""
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def long_captions_policy(pipeline: CoTPipeline, override: str | None = None) -> LongCaptions:
    """``override``, else the generator's ``long_captions`` option, else ``"error"``."""
    value = override or getattr(getattr(pipeline.generator, "config", None), "long_captions",
                                None)
    if value not in (None, "error", "truncate"):
        raise ConfigError(f"long_captions must be 'error' or 'truncate', got {value!r}")
    return "truncate" if value == "truncate" else "error"


def _context_use(pipeline: CoTPipeline) -> tuple[int, str]:
    """The learnable context vectors before every step text, and the words put before it
    (the ``vpt`` tuner's ``text_prefix``)."""
    tuner: Any = pipeline.tuner
    for part in (tuner, getattr(tuner, "text", None)):
        n_ctx = getattr(part, "n_ctx", None)
        if isinstance(n_ctx, int) and not isinstance(n_ctx, bool):
            return n_ctx, ""
    config = getattr(tuner, "config", None)
    if getattr(config, "text", None) == "steps":
        return 0, str(getattr(config, "text_prefix", "")).strip()
    return 0, ""


def check_caption_lengths(
    pipeline: CoTPipeline,
    captions: Sequence[str],
    *,
    long_captions: str | None = None,
    images: Mapping[str, str] | None = None,
    what: str = "captions",
) -> int:
    """Count, before any scoring or training step, the captions that do not fit the context.

    A caption fits when every text made from it fits the text encoder's context (77 tokens for
    CLIP, start and end-of-text tokens included): each step text behind the tuner's context
    vectors, and each zero-shot sentence. The same rule holds for tuned and zero-shot scoring.

    Args:
        pipeline: A pipeline prepared for retrieval (its tuner bound, so its context is known).
        captions: Distinct caption texts.
        long_captions: ``error`` or ``truncate``; default: :func:`long_captions_policy`.
        images: For the error message: the image (described) of a caption.
        what: What the captions are, for the messages (``"training captions"``...).

    Returns:
        The number of captions that will be truncated (0 when none is too long).

    Raises:
        DataError: ``error`` and some captions are too long; all are counted, the first three
            named.
    """
    policy = long_captions_policy(pipeline, long_captions)
    backbone = binding_backbone(pipeline)  # counts memoised for the binds that follow
    room = int(backbone.context_length) - 2
    n_ctx, prefix = _context_use(pipeline)
    chunk = 1024
    too_long: list[tuple[int, str]] = []
    for part in chunk_ranges(len(captions), chunk):
        labels = [captions[u] for u in part]
        chain = loops.generate(pipeline, Task(labels=tuple(labels), kind=RETRIEVAL))
        for c, caption in enumerate(labels):
            needs = [n_ctx + backbone.count_tokens(f"{prefix} {t}" if prefix else t)
                     for step in chain.steps for t in step.texts[c]]
            needs += [backbone.count_tokens(t) for t in chain.zero_shot[c]]
            if max(needs) > room:
                too_long.append((max(needs), caption))
    if not too_long:
        return 0
    context = f", {n_ctx} of them taken by the tuner's context vectors" if n_ctx else ""
    if policy == "truncate":
        logger.info(
            "%d of %d %s do not fit the text encoder's context of %d tokens (%d between the "
            "start and end-of-text tokens%s): the tokenizer cuts them, as CLIP's own evaluation "
            "does (long_captions='truncate')",
            len(too_long), len(captions), what, room + 2, room, context,
        )
        return len(too_long)
    images = images or {}
    shown = "; ".join(
        f"{need} tokens: {caption[:60] + ('...' if len(caption) > 60 else '')!r}"
        + (f" (image {images[caption]})" if caption in images else "")
        for need, caption in too_long[:3]
    )
    raise DataError(
        f"{len(too_long)} of {len(captions)} {what} do not fit the text encoder's context of "
        f"{room + 2} tokens ({room} between the start and end-of-text tokens{context}): "
        f"{shown}. Shorten or drop them, or cut them as CLIP's own evaluation does with "
        "long_captions='truncate' (an option of the caption generator, of RetrievalEvalConfig "
        "and of fit_retrieval)"
    )


def caption_images(dataset: RetrievalDataset) -> dict[str, str]:
    """Each caption text's first image, described (for messages)."""
    found: dict[str, str] = {}
    for record, group in zip(dataset.images, dataset.captions, strict=True):
        for caption in group:
            found.setdefault(caption, record.describe())
    return found


def truncating(policy: str) -> contextlib.AbstractContextManager[None]:
    """Binds that let the tokenizer cut long prompts (``truncate``), or refuse them."""
    return long_texts_truncated() if policy == "truncate" else contextlib.nullcontext()
