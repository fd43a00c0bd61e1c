"""Retrieval recall@k and VQA accuracy, in percent, and the result objects of both tasks.

Retrieval follows the Flickr30k / MSCOCO protocol with several captions per image:

* image -> text: an image is a hit at k when any of its captions is among the k best-scored
  captions;
* text -> image: a caption is a hit at k when its image is among the k best-scored images.

Captions with identical text are scored once (they are one text): an image's hit counts any of its
caption texts, and each caption entry queries with its text and counts its own image. With
distinct captions (the real datasets) this is exactly the standard protocol.

VQA accuracy of a predicted answer is ``min(#humans who gave that answer / 3, 1)``, averaged over
the questions (``leave_one_out`` averages it over the ten 9-annotator subsets, as the official
evaluation script does).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from cotprompt.errors import DataError

DEFAULT_KS = (1, 5, 10)


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise DataError(f"recall ks must be positive integers, got {ks}")
    return ks


def image_to_text_recall(
    top_texts: Tensor, image_texts: Sequence[Collection[int]], ks: Sequence[int] = DEFAULT_KS
) -> dict[int, float]:
    """Image -> text recall@k from ranked caption texts.

    Args:
        top_texts: ``[N, k']`` text indices, best first, for each image (``k' >= max(ks)`` or
            all texts); ``-1`` pads.
        image_texts: For each image, the indices of its caption texts.
        ks: The cut-offs.

    Returns:
        ``{k: percent of images with a caption text among their top k}``.
    """
    ks = _check_ks(ks)
    if top_texts.shape[0] != len(image_texts) or not image_texts:
        raise DataError(f"{top_texts.shape[0]} ranked rows for {len(image_texts)} images")
    width = top_texts.shape[1]
    first = []
    for ranked, own in zip(top_texts.tolist(), image_texts, strict=True):
        mine = set(own)
        first.append(next((r for r, t in enumerate(ranked) if t in mine), width))
    ranks = torch.tensor(first)
    return {k: float((ranks < k).float().mean() * 100) for k in ks}


def text_to_image_recall(
    top_images: Tensor, entry_text: Sequence[int], entry_image: Sequence[int],
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[int, float]:
    """Text -> image recall@k from ranked images per caption text.

    Args:
        top_images: ``[U, k']`` image indices, best first, for each caption text.
        entry_text: ``[T]`` text index of each caption entry.
        entry_image: ``[T]`` image index of each caption entry.
        ks: The cut-offs.

    Returns:
        ``{k: percent of caption entries whose image is among their text's top k}``.
    """
    ks = _check_ks(ks)
    if len(entry_text) != len(entry_image) or not entry_text:
        raise DataError("entry_text and entry_image must be non-empty and of equal length")
    ranked = top_images[torch.as_tensor(entry_text, dtype=torch.long)]  # [T, k']
    hits = ranked == torch.as_tensor(entry_image, dtype=torch.long)[:, None]
    width = ranked.shape[1]
    first = torch.where(hits.any(1), hits.float().argmax(1),
                        torch.full((ranked.shape[0],), width, dtype=torch.long))
    return {k: float((first < k).float().mean() * 100) for k in ks}


def recall_from_scores(
    scores: Tensor,
    entry_text: Sequence[int],
    entry_image: Sequence[int],
    ks: Sequence[int] = DEFAULT_KS,
) -> tuple[dict[int, float], dict[int, float]]:
    """Both directions from a dense score matrix (the reference for small galleries).

    Args:
        scores: ``[N, U]`` image-text scores (higher is better).
        entry_text: ``[T]`` text index of each caption entry.
        entry_image: ``[T]`` image index of each caption entry.

    Returns:
        ``(image_to_text, text_to_image)`` recall@k dictionaries.
    """
    num_images, num_texts = scores.shape
    image_texts: list[set[int]] = [set() for _ in range(num_images)]
    for t, i in zip(entry_text, entry_image, strict=True):
        image_texts[i].add(t)
    top_texts = scores.topk(min(max(ks), num_texts), dim=1).indices
    top_images = scores.topk(min(max(ks), num_images), dim=0).indices.t()
    return (
        image_to_text_recall(top_texts, [sorted(s) for s in image_texts], ks),
        text_to_image_recall(top_images, entry_text, entry_image, ks),
    )


@dataclass(frozen=True)
class RetrievalResult:
    """Recall@k of an image-text retrieval evaluation, in percent.

    Attributes:
        image_to_text: ``{k: recall}``, image queries ranking captions.
        text_to_image: ``{k: recall}``, caption queries ranking images.
        num_images: N.
        num_captions: T, caption entries.
        num_unique_captions: U, distinct caption texts (what the text encoder saw).
        mode: ``full``, ``two-stage`` or ``zero-shot``.
        rerank_k: Candidates re-scored per query in ``two-stage`` mode.
        seconds: Wall time of the evaluation (image encoding included).
    """

    image_to_text: dict[int, float]
    text_to_image: dict[int, float]
    num_images: int
    num_captions: int
    num_unique_captions: int
    mode: str
    rerank_k: int | None = None
    seconds: float = 0.0

    @property
    def rsum(self) -> float:
        """Sum of all recalls (the usual single retrieval score)."""
        return float(sum(self.image_to_text.values()) + sum(self.text_to_image.values()))

    def metrics(self) -> dict[str, float]:
        """Flat metrics for ``pipeline.metrics`` and the model card."""
        out = {f"i2t_recall@{k}": v for k, v in self.image_to_text.items()}
        out.update({f"t2i_recall@{k}": v for k, v in self.text_to_image.items()})
        out["rsum"] = self.rsum
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields (recall keys as strings) plus ``rsum``."""
        data = asdict(self)
        data["image_to_text"] = {str(k): v for k, v in self.image_to_text.items()}
        data["text_to_image"] = {str(k): v for k, v in self.text_to_image.items()}
        data["rsum"] = self.rsum
        return data


def vqa_score(answer: str, human_answers: Sequence[str], leave_one_out: bool = False) -> float:
    """VQA accuracy (0..1) of ``answer`` against the human answers of one question.

    ``min(matches / 3, 1)``; with ``leave_one_out`` the mean of that over every subset that
    leaves one human answer out (the official script's averaging over 10 choose 9).
    """
    if not human_answers:
        raise DataError("a question needs human answers to be scored")
    matches = sum(1 for a in human_answers if a == answer)
    if not leave_one_out or len(human_answers) < 2:
        return min(matches / 3.0, 1.0)
    total = 0.0
    for other in human_answers:
        total += min((matches - (other == answer)) / 3.0, 1.0)
    return total / len(human_answers)


@dataclass(frozen=True)
class VQAResult:
    """VQA accuracy over an answer vocabulary, in percent.

    Attributes:
        accuracy: Mean VQA accuracy over all questions (questions that no vocabulary answer can
            get right count as 0, as in the standard evaluation).
        accuracy_in_vocabulary: Mean over the questions whose reference answer is in the
            vocabulary.
        oracle_accuracy: The best mean accuracy any prediction within the vocabulary could get.
        num_questions: Questions evaluated.
        num_out_of_vocabulary: Questions whose reference (most common) answer is not in the
            vocabulary.
        num_unanswerable: Questions none of whose human answers is in the vocabulary (they score
            0 whatever is predicted).
        num_answers: A, the vocabulary size.
        seconds: Wall time.
        predictions: The predicted answer of each question, in dataset order.
    """

    accuracy: float
    accuracy_in_vocabulary: float | None
    oracle_accuracy: float
    num_questions: int
    num_out_of_vocabulary: int
    num_unanswerable: int
    num_answers: int
    seconds: float = 0.0
    predictions: tuple[str, ...] = field(default=(), repr=False)

    def metrics(self) -> dict[str, float]:
        """Flat metrics for ``pipeline.metrics`` and the model card."""
        out = {
            "vqa_accuracy": self.accuracy,
            "oracle_accuracy": self.oracle_accuracy,
            "num_questions": float(self.num_questions),
            "out_of_vocabulary": float(self.num_out_of_vocabulary),
            "unanswerable": float(self.num_unanswerable),
        }
        if self.accuracy_in_vocabulary is not None:
            out["vqa_accuracy_in_vocabulary"] = self.accuracy_in_vocabulary
        return out

    def to_dict(self, with_predictions: bool = False) -> dict[str, Any]:
        """JSON-serialisable fields (predictions only when asked)."""
        data = asdict(self)
        if not with_predictions:
            data.pop("predictions")
        else:
            data["predictions"] = list(self.predictions)
        return data
