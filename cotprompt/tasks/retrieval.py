"""Image-text retrieval with prompt chains: captions take the place of class names.

Each caption is a label: the generator (``caption``) writes its K step texts, the tuner puts its
learnable (image-conditioned, chained) context around them, and the aggregator scores image x
caption, exactly as it scores image x class. Training uses a symmetric contrastive loss over the
batch; evaluation ranks a whole gallery and reports recall@k in both directions.

Cost of scoring N images against U distinct captions (K chain steps):

* unconditioned tuners (``coop``): U x K text-encoder passes, in chunks of ``caption_chunk``
  captions, then an [N, U] matrix product: exact and cheap (``full`` mode);
* image-conditioned tuners (``cocoop``, ``cotpt``): every (image, caption) pair has its own
  prompt, N x U x K passes. ``full`` mode does exactly that (small galleries);
  ``two-stage`` mode ranks with the context of one stand-in image (the meta-net shift of the mean
  image feature, or of a zero feature) -- U x K passes -- then re-scores the ``rerank_k`` best
  captions of every image and the ``rerank_k`` best images of every caption with their own
  conditioned prompts: ``rerank_k x (N + U) x K`` passes. Recall@k for ``k <= rerank_k`` is then
  decided by conditioned scores only.

Captions longer than the text encoder's context follow one rule (``long_captions``), see
:mod:`cotprompt.tasks.long_captions`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from cotprompt.backbones.zero_shot import zero_shot_classifier, zero_shot_logits
from cotprompt.config import ComponentConfig
from cotprompt.data.retrieval import RetrievalDataset
from cotprompt.errors import ConfigError
from cotprompt.evaluation.task_metrics import (
    DEFAULT_KS,
    RetrievalResult,
    image_to_text_recall,
    text_to_image_recall,
)
from cotprompt.pipeline.inputs import ImagesInput
from cotprompt.tasks import loops
from cotprompt.tasks._tokens import binding_backbone
from cotprompt.tasks.generators import RETRIEVAL
from cotprompt.tasks.long_captions import (
    LongCaptions,
    caption_images,
    check_caption_lengths,
    chunk_ranges,
    long_captions_policy,
    truncating,
)
from cotprompt.training.seeding import derive_seed
from cotprompt.tuners.prompt_tokens import labels_may_coincide
from cotprompt.types import Task

if TYPE_CHECKING:
    from cotprompt.pipeline import CoTPipeline

logger = logging.getLogger(__name__)

#: The stand-in label a retrieval pipeline is bound to (and saved with): its chain shows the
#: step templates, e.g. ``"a photo: {caption}"``.
CAPTION_PLACEHOLDER = "{caption}"



class RetrievalEvalConfig(ComponentConfig):
    """How a retrieval gallery is scored.

    Args:
        mode: ``auto``: ``full`` for unconditioned tuners and for galleries of at most
            ``full_max_pairs`` image-caption pairs, else ``two-stage``; ``full``: every pair with
            its own prompt; ``two-stage``: rank with a stand-in image's context, re-score the top
            ``rerank_k`` (see the module docstring).
        ks: Recall cut-offs.
        rerank_k: Candidates re-scored per image and per caption in ``two-stage`` mode.
        stage_one: Stand-in image feature of the first stage: ``mean`` (the mean normalised
            image feature of the gallery, normalised) or ``zero`` (a zero vector: the meta-net's
            bias alone).
        full_max_pairs: Largest N x U that ``auto`` scores in ``full`` mode with a conditioned
            tuner.
        caption_chunk: Captions bound (tokenised and encoded) at a time; bounds memory.
        image_batch: Images per aggregator call against a caption chunk.
        conditioned_images_per_call: Images per text-encoder call in conditioned ``full`` mode
            (each brings its own ``caption_chunk x K`` prompts).
        rerank_images_per_call: Images whose candidates are re-scored in one call (their
            candidate lists are merged, so larger values trade tokenisation for encoder work).
        long_captions: Captions too long for the context: ``error`` or ``truncate`` (see
            :func:`check_caption_lengths`); ``None`` (default) takes the ``caption``
            generator's ``long_captions`` (``error`` for generators without the option).
    """

    mode: Literal["auto", "full", "two-stage"] = "auto"
    ks: tuple[Annotated[int, Field(ge=1)], ...] = Field(default=DEFAULT_KS, min_length=1)
    rerank_k: int = Field(default=10, ge=1)
    stage_one: Literal["mean", "zero"] = "mean"
    full_max_pairs: int = Field(default=200_000, ge=1)
    caption_chunk: int = Field(default=1024, ge=1)
    image_batch: int = Field(default=256, ge=1)
    conditioned_images_per_call: int = Field(default=8, ge=1)
    rerank_images_per_call: int = Field(default=1, ge=1)
    long_captions: LongCaptions | None = None


def placeholder_task() -> Task:
    """The task a retrieval pipeline is bound to between batches (and saved with)."""
    return Task(labels=(CAPTION_PLACEHOLDER,), kind=RETRIEVAL)


def prepare(pipeline: CoTPipeline) -> None:
    """Check the components and bind the pipeline to the retrieval task.

    Raises:
        ConfigError: A generator without retrieval prompts, or class-specific context.
    """
    loops.check_generator(pipeline, RETRIEVAL)
    if loops.class_specific(pipeline):
        raise ConfigError(
            "class-specific context (class_specific=true) learns one context per label; "
            "retrieval labels are captions, different in every batch: use unified context"
        )
    loops.bind_placeholder(pipeline, placeholder_task())


def _bind(pipeline: CoTPipeline, captions: Sequence[str]) -> Any:
    chain = loops.generate(pipeline, Task(labels=tuple(captions), kind=RETRIEVAL))
    # captions that read the same to the tokenizer ("A dog." / "a dog.") are two gallery
    # entries with equal scores, not two classes to tell apart
    with labels_may_coincide():
        pipeline.tuner.bind(binding_backbone(pipeline), chain)
    return chain


def _aggregate(pipeline: CoTPipeline, features: Tensor, text: Tensor) -> Tensor:
    return pipeline.aggregator(features, text, pipeline.backbone.logit_scale.float())


def caption_logits(
    pipeline: CoTPipeline, image_features: Tensor, captions: Sequence[str]
) -> Tensor:
    """Logits ``[B, C]`` of images against distinct captions, each pair with its own prompt.

    Binds the tuner to ``captions`` (a chain of C labels); gradients flow when enabled.

    Args:
        pipeline: A pipeline prepared for retrieval.
        image_features: ``[B, E]``, L2-normalised.
        captions: C distinct captions.
    """
    _bind(pipeline, captions)
    conditioned = image_features if pipeline.tuner.image_conditioned else None
    text = pipeline.tuner.encode_text(pipeline.backbone, conditioned)  # [B or 1, K, C, E]
    return _aggregate(pipeline, image_features, text)


def contrastive_loss(logits: Tensor, positives: Tensor) -> Tensor:
    """Symmetric contrastive loss on ``[B, U]`` logits (B images, U distinct captions).

    ``positives[i, u]`` is true when caption u belongs to image i; the image -> text and
    text -> image cross-entropies use the positives as (uniform) soft targets, which is CLIP's
    loss when every image brings one distinct caption.
    """
    pos = positives.to(logits.device, torch.float32)
    i2t = loops.soft_cross_entropy(logits, pos / pos.sum(1, keepdim=True))
    t2i = loops.soft_cross_entropy(logits.t(), pos.t() / pos.t().sum(1, keepdim=True))
    return (i2t + t2i) / 2


def sample_captions(dataset: RetrievalDataset, seed: int, epoch: int) -> list[int]:
    """One caption index per image for ``epoch``: a function of (seed, epoch) only."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "captions", epoch))
    counts = torch.tensor([len(group) for group in dataset.captions], dtype=torch.float64)
    draws = torch.rand(len(counts), generator=generator, dtype=torch.float64)
    return (draws * counts).long().clamp(max=counts.long() - 1).tolist()


# -- evaluation -----------------------------------------------------------------------------


class _Ranker:
    """Running top lists: the best captions of every image, the best images of every caption."""

    def __init__(self, num_images: int, num_texts: int, depth: int) -> None:
        self.text_depth = min(depth, num_texts)
        self.image_depth = min(depth, num_images)
        self.values = torch.empty(num_images, 0)
        self.top_texts = torch.empty(num_images, 0, dtype=torch.long)
        self.top_images = torch.empty(num_texts, self.image_depth, dtype=torch.long)

    def add(self, scores: Tensor, offset: int) -> None:
        """Merge the ``[N, c]`` scores of captions ``offset .. offset + c - 1``."""
        scores = scores.detach().float().cpu()
        count = scores.shape[1]
        ids = torch.arange(offset, offset + count).expand(scores.shape[0], -1)
        values = torch.cat([self.values, scores], 1)
        ids = torch.cat([self.top_texts, ids], 1)
        best = values.topk(min(self.text_depth, values.shape[1]), dim=1)
        self.values, self.top_texts = best.values, ids.gather(1, best.indices)
        self.top_images[offset : offset + count] = scores.topk(self.image_depth, dim=0).indices.t()


@torch.no_grad()
def _rank_unconditioned(
    pipeline: CoTPipeline, features: Tensor, texts: Sequence[str], ranker: _Ranker,
    config: RetrievalEvalConfig, condition: Tensor | None,
) -> None:
    """Rank with one text feature per caption: unconditioned tuners, or a conditioned tuner's
    prompts for the stand-in feature ``condition`` ``[1, E]`` (first stage)."""
    for chunk in chunk_ranges(len(texts), config.caption_chunk):
        _bind(pipeline, [texts[u] for u in chunk])
        text = pipeline.tuner.encode_text(pipeline.backbone, condition)  # [1, K, c, E]
        scores = torch.cat([
            _aggregate(pipeline, features[rows.start : rows.stop], text).cpu()
            for rows in chunk_ranges(features.shape[0], config.image_batch)
        ])
        ranker.add(scores, chunk.start)


@torch.no_grad()
def _rank_conditioned(
    pipeline: CoTPipeline, features: Tensor, texts: Sequence[str], ranker: _Ranker,
    config: RetrievalEvalConfig,
) -> None:
    """Every (image, caption) pair with its own conditioned prompt: N x U x K passes."""
    for chunk in chunk_ranges(len(texts), config.caption_chunk):
        _bind(pipeline, [texts[u] for u in chunk])
        parts = []
        for rows in chunk_ranges(features.shape[0], config.conditioned_images_per_call):
            batch = features[rows.start : rows.stop]
            text = pipeline.tuner.encode_text(pipeline.backbone, batch)  # [b, K, c, E]
            parts.append(_aggregate(pipeline, batch, text).cpu())
        ranker.add(torch.cat(parts), chunk.start)


@torch.no_grad()
def _rank_zero_shot(
    pipeline: CoTPipeline, features: Tensor, texts: Sequence[str], ranker: _Ranker,
    config: RetrievalEvalConfig,
) -> None:
    """The untuned model: the generator's zero-shot sentences through the plain text encoder."""
    for chunk in chunk_ranges(len(texts), config.caption_chunk):
        chain = loops.generate(pipeline, Task(labels=tuple(texts[u] for u in chunk),
                                              kind=RETRIEVAL))
        text = zero_shot_classifier(pipeline.backbone, chain.zero_shot)
        ranker.add(zero_shot_logits(pipeline.backbone, features, text), chunk.start)


@torch.no_grad()
def _rerank(
    pipeline: CoTPipeline, features: Tensor, texts: Sequence[str], ranker: _Ranker,
    config: RetrievalEvalConfig,
) -> int:
    """Second stage: re-score the top ``rerank_k`` of every list with conditioned prompts and
    re-order those entries in place. Returns the number of pairs scored.

    An image is scored against its own top captions and against every caption that ranks it in
    its top images; with "hub" images the latter can be thousands, so each image's candidates
    are bound ``caption_chunk`` at a time.
    """
    text_k = min(config.rerank_k, ranker.top_texts.shape[1])
    image_k = min(config.rerank_k, ranker.top_images.shape[1])
    candidates: list[set[int]] = [set(row) for row in ranker.top_texts[:, :text_k].tolist()]
    for u, row in enumerate(ranker.top_images[:, :image_k].tolist()):
        for i in row:
            candidates[i].add(u)
    scores: list[dict[int, float]] = [{} for _ in candidates]
    for group in chunk_ranges(len(candidates), config.rerank_images_per_call):
        union = sorted(set().union(*(candidates[i] for i in group)))
        feats = features[group.start : group.stop]
        for part in chunk_ranges(len(union), config.caption_chunk):
            ids = union[part.start : part.stop]
            logits = caption_logits(pipeline, feats, [texts[u] for u in ids]).float().cpu()
            for row, values in zip(group, logits.tolist(), strict=True):
                mine = candidates[row]
                scores[row].update((u, v) for u, v in zip(ids, values, strict=True) if u in mine)
    for i in range(len(candidates)):
        row = ranker.top_texts[i, :text_k].tolist()
        row.sort(key=lambda u: -scores[i][u])
        ranker.top_texts[i, :text_k] = torch.tensor(row, dtype=torch.long)
    for u in range(ranker.top_images.shape[0]):
        row = ranker.top_images[u, :image_k].tolist()
        row.sort(key=lambda i: -scores[i][u])
        ranker.top_images[u, :image_k] = torch.tensor(row, dtype=torch.long)
    return sum(len(c) for c in candidates)


def _stand_in(features: Tensor, how: str) -> Tensor:
    if how == "zero":
        return torch.zeros(1, features.shape[1], device=features.device)
    return F.normalize(features.mean(0, keepdim=True), dim=-1)


def _resolve_mode(pipeline: CoTPipeline, config: RetrievalEvalConfig, pairs: int,
                  zero_shot: bool) -> str:
    if zero_shot:
        return "zero-shot"
    if not pipeline.tuner.image_conditioned:
        return "full"  # exact and cheap: the text features do not depend on the image
    if config.mode == "auto":
        return "full" if pairs <= config.full_max_pairs else "two-stage"
    return config.mode


def _score(pipeline: CoTPipeline, features: Tensor, texts: Sequence[str], ranker: _Ranker,
           config: RetrievalEvalConfig, mode: str) -> None:
    if mode == "zero-shot":
        _rank_zero_shot(pipeline, features, texts, ranker, config)
    elif mode == "full" and pipeline.tuner.image_conditioned:
        _rank_conditioned(pipeline, features, texts, ranker, config)
    elif mode == "full":
        _rank_unconditioned(pipeline, features, texts, ranker, config, None)
    else:
        stand_in = _stand_in(features, config.stage_one)
        _rank_unconditioned(pipeline, features, texts, ranker, config, stand_in)
        pairs = _rerank(pipeline, features, texts, ranker, config)
        logger.info("two-stage retrieval: re-scored %d image-caption pairs", pairs)


@torch.no_grad()
def score_gallery(
    pipeline: CoTPipeline,
    features: Tensor,
    dataset: RetrievalDataset,
    config: RetrievalEvalConfig | None = None,
    *,
    zero_shot: bool = False,
) -> RetrievalResult:
    """Recall@k of precomputed image features against the dataset's captions.

    Args:
        pipeline: A pipeline prepared for retrieval (see :func:`prepare`).
        features: ``[N, E]`` normalised features of ``dataset.images``.
        dataset: The gallery.
        config: Scoring options.
        zero_shot: Score with the untuned model instead.
    """
    config = config or RetrievalEvalConfig()
    started = time.perf_counter()
    texts, entry_text, entry_image = dataset.unique_captions()
    policy = long_captions_policy(pipeline, config.long_captions)
    check_caption_lengths(pipeline, texts, long_captions=policy,
                          images=caption_images(dataset), what="gallery captions")
    mode = _resolve_mode(pipeline, config, features.shape[0] * len(texts), zero_shot)
    depth = max(max(config.ks), config.rerank_k if mode == "two-stage" else 0)
    ranker = _Ranker(features.shape[0], len(texts), depth)
    pipeline.model.eval()
    features = features.to(pipeline.device)
    try:
        with truncating(policy):
            _score(pipeline, features, texts, ranker, config, mode)
    finally:
        loops.restore_binding(pipeline)
    image_texts: list[set[int]] = [set() for _ in range(features.shape[0])]
    for t, i in zip(entry_text, entry_image, strict=True):
        image_texts[i].add(t)
    return RetrievalResult(
        image_to_text=image_to_text_recall(ranker.top_texts, image_texts, config.ks),
        text_to_image=text_to_image_recall(ranker.top_images, entry_text, entry_image, config.ks),
        num_images=features.shape[0],
        num_captions=len(entry_text),
        num_unique_captions=len(texts),
        mode=mode,
        rerank_k=config.rerank_k if mode == "two-stage" else None,
        seconds=time.perf_counter() - started,
    )


@torch.no_grad()
def similarity(
    pipeline: CoTPipeline, images: ImagesInput, captions: Sequence[str], *, batch_size: int = 64
) -> Tensor:
    """Logits ``[N, T]`` of images (paths, PIL images or pixels) against captions, every pair
    with its own prompt (duplicate captions get equal columns). For small sets; galleries go
    through :func:`evaluate_retrieval`."""
    prepare(pipeline)
    if not captions:
        raise ConfigError("no captions given")
    index: dict[str, int] = {}
    column = [index.setdefault(str(c).strip(), len(index)) for c in captions]
    unique = list(index)
    policy = long_captions_policy(pipeline)
    check_caption_lengths(pipeline, unique, long_captions=policy)
    features = pipeline.image_features(images, batch_size)
    try:
        with truncating(policy):
            logits = caption_logits(pipeline, features, unique)
    finally:
        loops.restore_binding(pipeline)
    return logits[:, torch.tensor(column, device=logits.device)]
