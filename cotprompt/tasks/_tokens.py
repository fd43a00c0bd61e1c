"""A memoising tokenizer view of a backbone, for binding a tuner to many overlapping label sets.

Retrieval binds the tuner to every batch's captions, to every caption chunk of a gallery and, in
two-stage scoring, to every image's candidate captions; VQA binds it to every question's answer
texts. Each bind tokenises all its texts (and counts their tokens to refuse over-long ones), which
with CLIP's pure-Python tokenizer costs more than encoding them with a small text encoder. The
view answers ``tokenize`` and ``count_tokens`` from a bounded cache keyed by the text and passes
everything else to the backbone; tokenisation is a function of the text alone, so the token
buffers a bind builds are identical.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from cotprompt.tuners.context_tuner import ContextPromptTuner

MAX_TEXTS = 100_000


class MemoTokenizer:
    """``backbone`` with memoised ``tokenize`` / ``count_tokens`` (at most ``max_texts`` texts,
    least recently used dropped first; rows kept as int32).

    Binds through this view are a task head's batch binds, whose labels are free text (captions,
    answers of several questions): two of them may read the same to the tokenizer without
    being an error (see :func:`cotprompt.tuners.prompt_tokens.labels_may_coincide`).
    """

    labels_may_coincide = True

    def __init__(self, backbone: Any, max_texts: int = MAX_TEXTS) -> None:
        self._backbone = backbone
        self._max = max_texts
        self._rows: OrderedDict[str, Tensor] = OrderedDict()
        self._counts: OrderedDict[str, int] = OrderedDict()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backbone, name)

    def _remember(self, cache: OrderedDict, key: str, value: Any) -> None:
        cache[key] = value
        if len(cache) > self._max:
            cache.popitem(last=False)

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """Token ids ``[N, context_length]`` (long), as the backbone's ``tokenize``."""
        texts = list(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self._rows]
        fresh: dict[str, Tensor] = {}
        if missing:
            ids = self._backbone.tokenize(missing)
            for text, row in zip(missing, ids, strict=True):
                fresh[text] = row.to(torch.int32)
                self._remember(self._rows, text, fresh[text])
        rows = []
        for text in texts:
            row = fresh.get(text)
            if row is None:
                row = self._rows[text]
                self._rows.move_to_end(text)
            rows.append(row)
        return torch.stack(rows).long()

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without start/end tokens, as the backbone's ``count_tokens``."""
        count = self._counts.get(text)
        if count is None:
            count = int(self._backbone.count_tokens(text))
            self._remember(self._counts, text, count)
        else:
            self._counts.move_to_end(text)
        return count


_VIEWS: weakref.WeakKeyDictionary[Any, MemoTokenizer] = weakref.WeakKeyDictionary()


def binding_backbone(pipeline: Any) -> Any:
    """What to pass to ``tuner.bind`` for repeated binds: the memoising view for cotprompt's
    context tuners (whose bind only tokenises and embeds), the backbone itself for other tuners."""
    backbone = pipeline.backbone
    if not isinstance(pipeline.tuner, ContextPromptTuner):
        return backbone
    try:
        view = _VIEWS.get(backbone)
        if view is None:
            view = _VIEWS[backbone] = MemoTokenizer(backbone)
    except TypeError:  # not weak-referenceable
        return backbone
    return view
