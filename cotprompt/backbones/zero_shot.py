"""The zero-shot classifier of CLIP (Radford et al., 2021, section 3.1.4): each label's texts
through the frozen text encoder, normalised, averaged (prompt ensembling) and normalised again;
logits are the scaled cosine similarities with the image features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cotprompt.backbones.base import Backbone


@torch.no_grad()
def zero_shot_classifier(backbone: Backbone, texts: Sequence[Sequence[str]]) -> Tensor:
    """Frozen, ensembled text features ``[C, E]`` (L2-normalised, float32) of ``C`` labels.

    Args:
        backbone: The frozen backbone (its plain text encoder).
        texts: For each label, one or more texts (their normalised features are averaged).
    """
    flat = [t for label_texts in texts for t in label_texts]
    owner = torch.tensor([c for c, label_texts in enumerate(texts) for _ in label_texts])
    encoded = F.normalize(backbone.encode_texts(flat).float(), dim=-1)  # [N, E]
    summed = encoded.new_zeros(len(texts), encoded.shape[-1])
    summed.index_add_(0, owner.to(encoded.device), encoded)
    return F.normalize(summed, dim=-1)


def zero_shot_logits(backbone: Backbone, image_features: Tensor, classifier: Tensor) -> Tensor:
    """Logits ``[B, C]``: ``logit_scale`` times image features ``[B, E]`` against a
    :func:`zero_shot_classifier` ``[C, E]``."""
    return backbone.logit_scale.float() * image_features.to(classifier.device) @ classifier.t()
