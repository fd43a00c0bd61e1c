"""What the learned context means: the nearest words of the backbone's token vocabulary.

For every learned context vector of every chain step (and every label, for class-specific
context), the ``top_k`` tokens of the text encoder's token-embedding table nearest to it, with
their distances. For image-conditioned tuners (``cocoop``, ``cotpt``) the context may first be
shifted by the meta-net output for one image, as the prompts of that image are.

Source: the research code's ``interpret_prompt.py`` (CoOp, Zhou et al., IJCV 2022), which takes
the Euclidean distance (``torch.cdist``) of each context vector to CLIP's token embeddings and
decodes the nearest token ids with the tokenizer's ``decoder``. It handles unified context only;
here class-specific context, every chain step, image-conditioned shifts and a cosine distance
are added.

Context vectors are trained freely in the embedding space, so the nearest token is often far
away and only a hint of what the vector does (the CoOp paper's "Interpreting the learned
prompts" analysis).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from cotprompt.errors import ConfigError, DataError
from cotprompt.pipeline.inputs import ImageLike
from cotprompt.tuners.context_tuner import ContextPromptTuner

if TYPE_CHECKING:
    from cotprompt.pipeline.core import CoTPipeline

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_TOP_K",
    "METRICS",
    "ContextInterpretation",
    "Metric",
    "NearestToken",
    "PromptInterpretation",
    "StepInterpretation",
    "learned_context",
    "nearest_words",
]

Metric = Literal["euclidean", "cosine"]
#: The distances :func:`nearest_words` can rank by.
METRICS: tuple[str, ...] = ("euclidean", "cosine")

_ROWS_PER_CHUNK = 256  # context vectors compared with the whole vocabulary at once
_CANDIDATE_MARGIN = 32  # extra candidates ranked exactly, beyond top_k
_EXACT_ROWS = 16  # context vectors whose candidates' differences are held at once


@dataclass(frozen=True)
class NearestToken:
    """One token of the vocabulary near a context vector.

    Attributes:
        token_id: Its id in the tokenizer's vocabulary (a row of the token-embedding table).
        token: The vocabulary entry as the tokenizer stores it (CLIP's BPE marks the end of a
            word with ``</w>``: ``"dog</w>"``).
        distance: Euclidean distance, or cosine distance ``1 - cos``, to the context vector.
    """

    token_id: int
    token: str
    distance: float


@dataclass(frozen=True)
class ContextInterpretation:
    """The nearest tokens of one context vector.

    Attributes:
        position: Its index among the step's ``n_ctx`` context vectors (0 first, as in the
            parameter ``tuner.ctx.<step>``).
        label: The label whose context it is (class-specific context), else ``None``.
        nearest: The ``top_k`` nearest tokens, nearest first (ties: lower token id first).
    """

    position: int
    label: str | None
    nearest: tuple[NearestToken, ...]


@dataclass(frozen=True)
class StepInterpretation:
    """The context vectors of one chain step.

    Attributes:
        index: The step's index in the chain (0 first).
        name: The step's name from the prompt chain (``"class"``, ``"group"``...).
        contexts: One entry per context vector: position-major, then by label.
    """

    index: int
    name: str
    contexts: tuple[ContextInterpretation, ...]


@dataclass(frozen=True)
class PromptInterpretation:
    """What :func:`nearest_words` returns.

    Attributes:
        tuner: The registered name of the tuner whose context this is.
        metric: ``"euclidean"`` or ``"cosine"``.
        top_k: Tokens per context vector.
        vocabulary_size: The number of tokens ranked.
        image: The image the context was shifted by (its path, or ``"<PIL image>"``), else
            ``None``.
        steps: One entry per chain step.
        notes: Learned parts that were left out, and why (visual prompts).
    """

    tuner: str
    metric: str
    top_k: int
    vocabulary_size: int
    image: str | None
    steps: tuple[StepInterpretation, ...]
    notes: tuple[str, ...] = field(default=())

    def words(self, step: int = 0, label: str | None = None) -> list[str]:
        """The nearest token of each context vector of ``step`` (and ``label``), in order."""
        return [c.nearest[0].token for c in self.steps[step].contexts if c.label == label]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the same fields (what ``cotprompt interpret --json`` prints)."""
        return {
            "tuner": self.tuner,
            "metric": self.metric,
            "top_k": self.top_k,
            "vocabulary_size": self.vocabulary_size,
            "image": self.image,
            "notes": list(self.notes),
            "steps": [
                {
                    "index": step.index,
                    "name": step.name,
                    "contexts": [
                        {
                            "position": c.position,
                            "label": c.label,
                            "nearest": [
                                {"token_id": t.token_id, "token": t.token,
                                 "distance": t.distance}
                                for t in c.nearest
                            ],
                        }
                        for c in step.contexts
                    ],
                }
                for step in self.steps
            ],
        }


# -- the tuner's context ----------------------------------------------------------------------


def _context_tuner(pipeline: CoTPipeline) -> tuple[ContextPromptTuner, list[str]]:
    """The tuner holding word-embedding context, and notes on learned parts left out.

    Raises:
        ConfigError: The tuner learns no context in the word-embedding space, or is not bound.
    """
    tuner: Any = pipeline.tuner
    name = str(getattr(tuner, "name", type(tuner).__name__))
    notes: list[str] = []
    text = getattr(tuner, "text", None)
    if not isinstance(tuner, ContextPromptTuner) and isinstance(text, ContextPromptTuner):
        if bool(getattr(tuner, "tunes_image_encoder", False)):
            notes.append(
                f"the visual prompts of {name!r} are in the image encoder's input space, not the "
                "word-embedding space: only its text context is interpreted"
            )
        tuner = text
    if not isinstance(tuner, ContextPromptTuner):
        raise ConfigError(
            f"the tuner {name!r} learns no context vectors in the word-embedding space (visual "
            "prompts or fixed text prompts), so it has no nearest words; interpret works for "
            "coop, cocoop, cotpt and multimodal's text context"
        )
    if tuner.ctx is None or len(tuner.ctx) == 0:
        raise ConfigError(
            f"the tuner {name!r} has no learned context yet: call set_classes() or fit() first, "
            "or load a saved pipeline"
        )
    return tuner, notes


#: The most tokens listed per context vector: the answer grows as vectors x top_k.
MAX_TOP_K = 1000


def _check_image(image: object) -> None:
    """Refuse anything but one path or PIL image (a list or a batch would be cut to its first).

    Raises:
        DataError: ``image`` is not a ``str``, ``os.PathLike`` or ``PIL.Image.Image``.
    """
    if image is not None and not isinstance(image, str | os.PathLike | Image.Image):
        raise DataError(f"image must be one path or PIL image, got {type(image).__name__}")


def _image_name(image: ImageLike) -> str:
    return "<PIL image>" if isinstance(image, Image.Image) else os.fspath(image)


@torch.no_grad()
def learned_context(pipeline: CoTPipeline, *, image: ImageLike | None = None) -> list[Tensor]:
    """The learned context of every chain step, as it enters the text encoder.

    Args:
        pipeline: A pipeline whose tuner has context vectors (``coop``, ``cocoop``, ``cotpt``,
            or ``multimodal``'s text tuner), bound to its classes (a loaded or fitted pipeline).
        image: A path or PIL image: the context is shifted by the meta-net output for it (the
            tuner must be image-conditioned); read and preprocessed as ``predict`` does.

    Returns:
        One float32 tensor per step k: ``ctx_k`` ``[n_ctx, W]`` (unified) or ``[C, n_ctx, W]``
        (class-specific), plus ``shift_k(image)`` ``[W]`` on every vector when ``image`` is
        given. W is the text encoder's token width.

    Raises:
        ConfigError: The tuner has no context in the word-embedding space, is not bound, or an
            image is given to a tuner that is not image-conditioned.
        DataError: The image is not one path or PIL image, or cannot be read.
    """
    _check_image(image)
    tuner, _ = _context_tuner(pipeline)
    assert tuner.ctx is not None
    contexts = [ctx.detach().float().clone() for ctx in tuner.ctx]  # not views of parameters
    if image is None:
        return contexts
    if tuner.meta_nets is None:
        raise ConfigError(
            f"the tuner {tuner.name!r} is not image-conditioned (no meta-net): its context is the "
            "same for every image, so leave out the image"
        )
    features = pipeline.image_features(image)  # [1, E], normalised, as predict computes them
    shifts = tuner.context_shifts(features.to(pipeline.device))
    assert shifts is not None  # the tuner has meta-nets
    return [ctx + shift[0].float().to(ctx.device) for ctx, shift in zip(contexts, shifts,
                                                                       strict=True)]


# -- the vocabulary ---------------------------------------------------------------------------


def _vocabulary(backbone: Any) -> tuple[Tensor, Callable[[list[int]], list[str]]]:
    """The token-embedding table ``[V, W]`` and a decoder of token ids to vocabulary entries.

    Raises:
        ConfigError: The backbone does not expose a token-embedding table or a tokenizer that
            can name its tokens.
    """
    name = str(getattr(backbone, "name", type(backbone).__name__))
    embedding = getattr(getattr(backbone, "text", None), "token_embedding", None)
    if not isinstance(embedding, nn.Embedding):
        raise ConfigError(
            f"the backbone {name!r} has no token-embedding table (text.token_embedding) to "
            "compare the context with"
        )
    # the open_clip backbone keeps its tokenizer private; a public `tokenizer` wins
    tokenizer = getattr(backbone, "tokenizer", None)
    if tokenizer is None:
        tokenizer = getattr(backbone, "_tokenizer", None)
    table = embedding.weight.detach()
    decoder = getattr(tokenizer, "decoder", None)
    if isinstance(decoder, dict):  # open_clip's SimpleTokenizer (CLIP's BPE)
        size = min(len(decoder), table.shape[0])

        def decode(ids: list[int]) -> list[str]:
            return [str(decoder[i]) for i in ids]

        return table[:size], decode
    hf: Any = getattr(tokenizer, "tokenizer", None)  # open_clip's HFTokenizer
    convert = getattr(hf, "convert_ids_to_tokens", None)
    if convert is not None:
        size = min(len(hf), table.shape[0])

        def decode_hf(ids: list[int]) -> list[str]:
            return [str(t) for t in convert(ids)]

        return table[:size], decode_hf
    raise ConfigError(
        f"the tokenizer of the backbone {name!r} ({type(tokenizer).__name__}) cannot name its "
        "token ids (neither a CLIP BPE decoder nor a Hugging Face tokenizer)"
    )


def _nearest(vectors: Tensor, table: Tensor, top_k: int, metric: str) -> tuple[Tensor, Tensor]:
    """``[N, W]`` vectors, ``[V, W]`` table -> ``(distances, ids)``, each ``[N, top_k]``,
    nearest first, ties broken by the lower id.

    Euclidean distances to the whole table come from the matrix-product form (fast, off by
    about 1e-5); those of the ``top_k + _CANDIDATE_MARGIN`` nearest are then computed again from
    the differences, exactly (0 for a vector equal to a token's embedding), and ranked.
    """
    table = table.to(vectors.device)
    unit_table = F.normalize(table, dim=-1) if metric == "cosine" else table
    pool = min(table.shape[0], top_k + _CANDIDATE_MARGIN)
    distances, ids = [], []
    for rows in vectors.split(_ROWS_PER_CHUNK):
        if metric == "cosine":
            d = 1.0 - F.normalize(rows, dim=-1) @ unit_table.T
        else:
            d = torch.cdist(rows, table)
        candidates = d.topk(pool, dim=1, largest=False).indices.sort(dim=1).values  # by id
        if metric == "cosine":
            exact = d.gather(1, candidates)
        else:
            exact = torch.cat([
                (table[part] - row[:, None, :]).norm(dim=-1)
                for row, part in zip(rows.split(_EXACT_ROWS), candidates.split(_EXACT_ROWS),
                                     strict=True)
            ])
        ranked, order = exact.sort(dim=1, stable=True)  # stable: equal distances by id
        distances.append(ranked[:, :top_k])
        ids.append(candidates.gather(1, order[:, :top_k]))
    return torch.cat(distances), torch.cat(ids)


def nearest_words(
    pipeline: CoTPipeline,
    *,
    top_k: int = 5,
    image: ImageLike | None = None,
    metric: Metric = "euclidean",
) -> PromptInterpretation:
    """The ``top_k`` vocabulary tokens nearest to each learned context vector.

    Every context vector ``[W]`` of every chain step (and label, for class-specific context) is
    compared with every row of the text encoder's token-embedding table ``[V, W]`` (CLIP:
    V = 49408), as the research code's ``interpret_prompt.py`` (CoOp) does.

    Args:
        pipeline: A pipeline whose tuner has context vectors (``coop``, ``cocoop``, ``cotpt``;
            ``multimodal``: its text context, the visual prompts are left out with a note),
            bound to its classes (a loaded or fitted pipeline).
        top_k: Tokens per context vector, 1 to :data:`MAX_TOP_K` (and at most V).
        image: A path or PIL image: interpret the context shifted by the meta-net output for
            this image (image-conditioned tuners only), see :func:`learned_context`.
        metric: ``"euclidean"`` (the research code's) or ``"cosine"`` (``1 - cos``).

    Returns:
        A :class:`PromptInterpretation`: per step, per context position (and label), the
        nearest tokens with their distances (unitless, in the embedding space).

    Raises:
        ConfigError: ``top_k`` out of range, an unknown metric, a tuner without context in the
            word-embedding space or not bound, an image for a tuner that is not
            image-conditioned, or a backbone without a token vocabulary.
        DataError: The image is not one path or PIL image, or cannot be read.
    """
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise ConfigError(f"top_k must be an integer from 1 to {MAX_TOP_K}, got {top_k!r}")
    _check_image(image)
    tuner, notes = _context_tuner(pipeline)
    table, decode = _vocabulary(pipeline.backbone)
    if top_k > table.shape[0]:
        raise ConfigError(f"top_k={top_k} exceeds the vocabulary's {table.shape[0]} tokens")
    for note in notes:  # also in the result's notes, which the command line prints
        logger.debug("%s", note)
    contexts = learned_context(pipeline, image=image)
    table = table.float().to(contexts[0].device)
    chain = pipeline.chain
    labels = list(tuner.bound_labels or ())
    step_names = [s.name for s in chain.steps] if chain is not None else []
    steps = []
    for k, ctx in enumerate(contexts):
        keys: list[tuple[int, str | None]]
        if ctx.dim() == 3:  # [C, n_ctx, W]: position-major, then by label
            vectors = ctx.transpose(0, 1).reshape(-1, ctx.shape[-1])
            keys = [(p, labels[c] if c < len(labels) else str(c))
                    for p in range(ctx.shape[1]) for c in range(ctx.shape[0])]
        else:
            vectors = ctx
            keys = [(p, None) for p in range(ctx.shape[0])]
        distances, ids = _nearest(vectors, table, top_k, metric)
        entries = []
        for (position, label), row_d, row_ids in zip(keys, distances.tolist(), ids.tolist(),
                                                     strict=True):
            tokens = decode(row_ids)
            nearest = tuple(NearestToken(token_id=i, token=t, distance=float(d))
                            for i, t, d in zip(row_ids, tokens, row_d, strict=True))
            entries.append(ContextInterpretation(position=position, label=label,
                                                 nearest=nearest))
        name = step_names[k] if k < len(step_names) else f"step {k}"
        steps.append(StepInterpretation(index=k, name=name, contexts=tuple(entries)))
    return PromptInterpretation(
        tuner=str(getattr(pipeline.tuner, "name", type(pipeline.tuner).__name__)),
        metric=metric,
        top_k=top_k,
        vocabulary_size=int(table.shape[0]),
        image=None if image is None else _image_name(image),
        steps=tuple(steps),
        notes=tuple(notes),
    )
