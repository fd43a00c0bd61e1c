"""The open_clip backbone: text encoding over embeddings, and clear errors for bad model specs."""

from __future__ import annotations

import logging

import pytest
import torch

from cotprompt.backbones import TINY_MODEL, OpenCLIPBackbone, OpenCLIPBackboneConfig
from cotprompt.errors import ConfigError


def test_encode_texts_equals_open_clip(tiny_backbone):
    texts = ["a photo of a dog.", "cat", "a very long description of a small grey tabby cat."]
    ours = tiny_backbone.encode_texts(texts)
    reference = tiny_backbone.model.encode_text(tiny_backbone.tokenize(texts))
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    assert tiny_backbone.count_tokens("a photo of a dog.") == 6


def test_random_weights_are_reproducible_and_quiet(caplog):
    config = OpenCLIPBackboneConfig(model_name=TINY_MODEL, pretrained=None, init_seed=3)
    with caplog.at_level(logging.WARNING):
        first = OpenCLIPBackbone(config)
    assert "No pretrained weights loaded" not in caplog.text
    second = OpenCLIPBackbone(config)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    assert all(not p.requires_grad for p in first.parameters())


def test_unknown_architecture_suggests_names():
    with pytest.raises(ConfigError, match=r"'ViT-B-17'; close matches: ViT-B-16"):
        OpenCLIPBackbone(OpenCLIPBackboneConfig(model_name="ViT-B-17", pretrained=None))


def test_unknown_pretrained_tag_is_a_config_error():
    with pytest.raises(ConfigError, match=r"pretrained weights 'openai'.*pretrained=None"):
        OpenCLIPBackbone(OpenCLIPBackboneConfig(model_name=TINY_MODEL, pretrained="openai"))
