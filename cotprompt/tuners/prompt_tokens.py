"""Token buffers of a prompt chain: frozen embeddings around the learnable context.

Every text of every step and label becomes one sequence
``[start token][n_ctx context slots][text tokens][end-of-text]...``. The frozen parts are embedded
once per label set, as CoOp does: tokenise ``"X X ... X " + text`` and keep the embeddings before
(``prefix``) and after (``suffix``) the placeholder slots.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from cotprompt.backbones.base import Backbone
from cotprompt.errors import ConfigError, DataError
from cotprompt.types import PromptChain

ClassTokenPosition = Literal["end", "middle", "front"]

_LABELS_MAY_COINCIDE: ContextVar[bool] = ContextVar("cotprompt_labels_may_coincide", default=False)


@contextlib.contextmanager
def labels_may_coincide() -> Iterator[None]:
    """Bind label sets whose prompts may coincide without :func:`check_distinct_labels`.

    For task heads whose labels are free text scored side by side (retrieval captions, the
    answers of several questions): two captions that differ only in case are two entries of a
    gallery, not two classes to tell apart. A backbone view with a true ``labels_may_coincide``
    attribute (the memoising view of :mod:`cotprompt.tasks._tokens`) has the same effect.
    """
    token = _LABELS_MAY_COINCIDE.set(True)
    try:
        yield
    finally:
        _LABELS_MAY_COINCIDE.reset(token)


_TRUNCATE_LONG_TEXTS: ContextVar[bool] = ContextVar("cotprompt_truncate_long", default=False)


@contextlib.contextmanager
def long_texts_truncated() -> Iterator[None]:
    """Let the tokenizer cut prompts longer than the context (keeping the start, ending with the
    end-of-text token, as CLIP's own evaluation does) instead of refusing them.

    Only for callers that checked and counted the long texts first, as retrieval does with
    ``long_captions="truncate"``; prompts with the class token elsewhere than at the end are
    still refused.
    """
    token = _TRUNCATE_LONG_TEXTS.set(True)
    try:
        yield
    finally:
        _TRUNCATE_LONG_TEXTS.reset(token)


def labels_must_differ(backbone: Any) -> bool:
    """Whether a bind with ``backbone`` must refuse labels it cannot tell apart."""
    return not (_LABELS_MAY_COINCIDE.get() or getattr(backbone, "labels_may_coincide", False))


def check_distinct_labels(
    backbone: Backbone,
    chain: PromptChain,
    *,
    step_tokens: Tensor | None = None,
    steps: bool = True,
) -> None:
    """Refuse labels whose prompts the backbone's tokenizer reads as the same tokens.

    ``Cardigan`` (the dog) and ``cardigan`` (the sweater) are two ImageNet classes, but CLIP's
    tokenizer lower-cases: every text of one is the other's, the text encoder gives them the
    same features, and one is never predicted. Two labels collide when the token ids of all
    their step texts are equal (the tuned classifier; skipped with ``steps=False``, for
    class-specific context, which differs per label), or when those of all their zero-shot
    sentences are (the untuned classifier).

    Args:
        backbone: Provides the tokenizer.
        chain: The chain being bound.
        step_tokens: The token ids of the step texts in chain order (steps, labels, texts), as
            :func:`build_prompt_tokens` made them; tokenised here when ``None``.
        steps: Check the step texts.

    Raises:
        DataError: Naming the colliding labels, why, and how to tell them apart.
    """
    if chain.num_labels < 2:
        return
    if steps:
        if step_tokens is None:
            step_tokens = backbone.tokenize([t for s in chain.steps for ts in s.texts for t in ts])
        rows = _row_keys(step_tokens)
        signatures: list[list[tuple[bytes, ...]]] = [[] for _ in chain.labels]
        position = 0
        for step in chain.steps:
            for c, label_texts in enumerate(step.texts):
                signatures[c].append(tuple(sorted(rows[position : position + len(label_texts)])))
                position += len(label_texts)
        _refuse_collisions(chain.labels, [tuple(s) for s in signatures], "prompt step texts")
    unique = list(dict.fromkeys(t for texts in chain.zero_shot for t in texts))
    keys = dict(zip(unique, _row_keys(backbone.tokenize(unique)), strict=True))
    _refuse_collisions(
        chain.labels,
        [tuple(sorted(keys[t] for t in texts)) for texts in chain.zero_shot],
        "zero-shot sentences",
    )


def _row_keys(tokens: Tensor) -> list[bytes]:
    return [bytes(row) for row in tokens.to(torch.int64).cpu().numpy()]


def _refuse_collisions(labels: Sequence[str], signatures: Sequence[Any], what: str) -> None:
    groups: dict[Any, list[str]] = {}
    for label, signature in zip(labels, signatures, strict=True):
        groups.setdefault(signature, []).append(label)
    clashes = [names for names in groups.values() if len(names) > 1]
    if not clashes:
        return
    shown = "; ".join(" and ".join(repr(n) for n in names) for names in clashes[:5])
    more = f" (and {len(clashes) - 5} more groups)" if len(clashes) > 5 else ""
    raise DataError(
        f"{len(clashes)} group(s) of classes the text encoder cannot tell apart: {shown}{more}. "
        f"Their {what} are the same tokens to the backbone's tokenizer (CLIP's lower-cases and "
        "collapses white space), so they get identical prompts and identical "
        "scores, and one is never predicted. Rename them so that they differ in words, as "
        "CLIP's ImageNet class list does ('Cardigan Welsh Corgi' for the dog 'Cardigan', "
        "'cardigan' for the sweater)"
    )


@dataclass
class PromptTokens:
    """Frozen token embeddings of all N texts of a chain (all steps, labels and ensembles).

    Attributes:
        prefix: ``[N, 1, W]`` start-token embeddings.
        suffix: ``[N, S, W]`` embeddings after the context slots (label, text, end, padding),
            truncated after the longest end-of-text position when ``truncated``.
        eot_index: ``[N]`` end-of-text position in the assembled sequence.
        step_index: ``[N]`` chain step k of each text.
        label_index: ``[N]`` label c of each text.
        group_index: ``[N]`` ``k * C + c``, the (step, label) cell a text is ensembled into.
        group_count: ``[K * C]`` number of texts per cell.
        order: ``[N, L]`` gather index from the ``end`` layout to the requested class-token
            position, or ``None`` for ``end``.
        num_steps: K.
        num_labels: C.
        n_ctx: Number of context slots between ``prefix`` and ``suffix``.
    """

    prefix: Tensor
    suffix: Tensor
    eot_index: Tensor
    step_index: Tensor
    label_index: Tensor
    group_index: Tensor
    group_count: Tensor
    order: Tensor | None
    num_steps: int
    num_labels: int
    n_ctx: int = 0

    @property
    def num_texts(self) -> int:
        """N, the number of sequences."""
        return int(self.prefix.shape[0])

    @property
    def one_text_per_cell(self) -> bool:
        """True when no ensembling is needed (texts are exactly the K x C cells, in order)."""
        return self.num_texts == self.num_steps * self.num_labels and bool(
            torch.equal(
                self.group_index, torch.arange(self.num_texts, device=self.group_index.device)
            )
        )

    def shared_text_prefix(self, step: int) -> int:
        """Number of leading suffix tokens that all texts of ``step`` share (for example
        ``"a close-up of the details of the"`` in ``"a close-up of the details of the {class}."``),
        leaving at least each text's end-of-text token; 0 with a class-token position other than
        ``end``. With unified context these tokens' hidden states are the same for every label,
        like the context's."""
        if self.order is not None:
            return 0
        rows = self.suffix[self.step_index == step]
        if rows.shape[0] == 0:
            return 0
        limit = int((self.eot_index[self.step_index == step] - 1 - self.n_ctx).min())
        same = (rows == rows[:1]).all(dim=-1).all(dim=0)[:limit]  # [positions]
        differing = torch.nonzero(~same)
        return int(differing[0]) if len(differing) else int(same.shape[0])

    def to(self, device: torch.device | str) -> PromptTokens:
        """A copy on ``device``."""
        moved: dict[str, Any] = {
            name: (value.to(device) if isinstance(value, Tensor) else value)
            for name, value in self.__dict__.items()
        }
        return PromptTokens(**moved)


def build_prompt_tokens(
    backbone: Backbone,
    chain: PromptChain,
    n_ctx: int,
    position: ClassTokenPosition = "end",
    truncate: bool = True,
    *,
    distinct_steps: bool = True,
) -> PromptTokens:
    """Tokenise and embed every text of ``chain`` once, refusing labels that the tokenizer
    cannot tell apart (:func:`check_distinct_labels`, unless :func:`labels_may_coincide`).

    Args:
        backbone: Provides the tokenizer and the frozen token embedding.
        chain: K steps x C labels x T texts.
        n_ctx: Number of learnable context slots before the text.
        position: Where the label's tokens go relative to the context (CoOp's
            ``CLASS_TOKEN_POSITION``); ``middle`` and ``front`` need texts that start with the
            label.
        truncate: Drop positions after the longest end-of-text token (exact: the text encoder is
            causal and pools at the end-of-text token).
        distinct_steps: Labels must differ in their step texts (``False`` for class-specific
            context, which tells labels apart by itself); zero-shot sentences must differ
            either way.

    Returns:
        The buffers, on the backbone's device.

    Raises:
        ConfigError: A text too long for the context, or empty after the context.
        DataError: Labels with token-identical prompts.
    """
    texts: list[str] = []
    steps: list[int] = []
    labels: list[int] = []
    name_lengths: list[int] = []
    placeholder = " ".join(["X"] * n_ctx)
    for k, step in enumerate(chain.steps):
        for c, label_texts in enumerate(step.texts):
            for text in label_texts:
                texts.append(f"{placeholder} {text}" if n_ctx else text)
                steps.append(k)
                labels.append(c)
                if position != "end":
                    label = chain.labels[c]
                    if not text.startswith(label):
                        raise ConfigError(
                            f"class_token_position={position!r} needs step texts that start with "
                            f"the label; step {step.name!r} has {text!r} for {label!r}"
                        )
                    name_lengths.append(backbone.count_tokens(label))
    if not (_TRUNCATE_LONG_TEXTS.get() and position == "end"):
        _check_lengths(backbone, texts, n_ctx)
    tokens = backbone.tokenize(texts)
    if labels_must_differ(backbone):
        # the placeholders are the same for every text: equal rows are equal texts
        check_distinct_labels(backbone, chain, step_tokens=tokens, steps=distinct_steps)
    eot_index = backbone.end_of_text_index(tokens)
    if int(eot_index.min()) < n_ctx + 1:
        raise ConfigError("a prompt text is empty: nothing follows the learnable context")
    length = int(eot_index.max()) + 1 if truncate else tokens.shape[1]
    tokens = tokens[:, :length].to(backbone.device)
    with torch.no_grad():
        embeddings = backbone.embed_tokens(tokens)
    num_steps, num_labels = chain.num_steps, chain.num_labels
    step_index = torch.tensor(steps, dtype=torch.long)
    label_index = torch.tensor(labels, dtype=torch.long)
    group_index = step_index * num_labels + label_index
    group_count = torch.bincount(group_index, minlength=num_steps * num_labels)
    order = None
    if position != "end":
        order = _class_token_order(torch.tensor(name_lengths), n_ctx, length, position)
    device = backbone.device
    return PromptTokens(
        prefix=embeddings[:, :1].clone(),
        suffix=embeddings[:, 1 + n_ctx :].clone(),
        eot_index=eot_index.to(device),
        step_index=step_index.to(device),
        label_index=label_index.to(device),
        group_index=group_index.to(device),
        group_count=group_count.to(device),
        order=None if order is None else order.to(device),
        num_steps=num_steps,
        num_labels=num_labels,
        n_ctx=n_ctx,
    )


def _check_lengths(backbone: Backbone, texts: list[str], n_ctx: int) -> None:
    """Refuse texts that the tokenizer would silently cut at the context length."""
    room = backbone.context_length - 2  # start and end-of-text tokens
    too_long = []
    for text in dict.fromkeys(texts):
        # placeholders "X" are one token each; count the text after them
        body = text.split(" ", n_ctx)[-1] if n_ctx else text
        length = n_ctx + backbone.count_tokens(body)
        if length > room:
            too_long.append((length, body))
    if too_long:
        shown = "; ".join(f"{n} tokens: {t[:60]!r}" for n, t in too_long[:3])
        raise ConfigError(
            f"{len(too_long)} prompt text(s) do not fit the context length of "
            f"{backbone.context_length} tokens with {n_ctx} context vectors ({shown}); shorten "
            "them instead of letting the tokenizer cut them"
        )


def _class_token_order(
    name_lengths: Tensor, n_ctx: int, length: int, position: ClassTokenPosition
) -> Tensor:
    """``[N, L]`` source positions (in the ``end`` layout) of each position of the prompt.

    ``end``: ``[start][ctx][name][rest]``; ``middle``: ``[start][ctx[:h]][name][ctx[h:]][rest]``
    with ``h = n_ctx // 2``; ``front``: ``[start][name][ctx][rest]`` (CoOp's layouts).
    """
    rows = []
    for name_len in name_lengths.tolist():
        ctx = list(range(1, 1 + n_ctx))
        name = list(range(1 + n_ctx, 1 + n_ctx + name_len))
        rest = list(range(1 + n_ctx + name_len, length))
        if position == "middle":
            half = n_ctx // 2
            row = [0, *ctx[:half], *name, *ctx[half:], *rest]
        else:
            row = [0, *name, *ctx, *rest]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long)
