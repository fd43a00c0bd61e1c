"""CoOp and CoCoOp come out exactly: the tuners equal plain re-implementations of the research
code's forward pass (prefix + context + suffix through the full 77-token text encoder, one text
pass per image for CoCoOp), with the same frozen weights and parameter values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cotprompt.aggregators import MeanAggregator
from cotprompt.generators import RuleBasedGenerator
from cotprompt.tuners import (
    CoCoOpConfig,
    CoCoOpTuner,
    CoOpConfig,
    CoOpTuner,
    CoTPTConfig,
    CoTPTTuner,
)
from cotprompt.types import Task

CLASSES = ["airplane", "golden retriever", "sea turtle", "cat", "traffic light"]


def reference_text_encoder(model, prompts, tokenized):
    """CoOp's TextEncoder: positional embedding, causal transformer over 77 tokens, pool at EOT."""
    x = prompts + model.positional_embedding
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    return x[torch.arange(x.shape[0]), tokenized.argmax(dim=-1)] @ model.text_projection


def reference_prompt_buffers(backbone, n_ctx):
    import open_clip

    prefix_text = " ".join(["X"] * n_ctx)
    tokenized = open_clip.tokenize([f"{prefix_text} {name}." for name in CLASSES])
    with torch.no_grad():
        embedding = backbone.model.token_embedding(tokenized)
    name_lens = [len(open_clip.get_tokenizer("ViT-B-16").encode(name)) for name in CLASSES]
    return tokenized, embedding[:, :1], embedding[:, 1 + n_ctx :], name_lens


def reference_coop_prompts(ctx, prefix, suffix, name_lens, position):
    n_cls, n_ctx = prefix.shape[0], ctx.shape[-2]
    if ctx.dim() == 2:
        ctx = ctx.unsqueeze(0).expand(n_cls, -1, -1)
    if position == "end":
        return torch.cat([prefix, ctx, suffix], dim=1)
    prompts = []
    half = n_ctx // 2
    for i in range(n_cls):
        name_len = name_lens[i]
        class_i, rest_i = suffix[i : i + 1, :name_len], suffix[i : i + 1, name_len:]
        if position == "middle":
            parts = [
                prefix[i : i + 1],
                ctx[i : i + 1, :half],
                class_i,
                ctx[i : i + 1, half:],
                rest_i,
            ]
        else:
            parts = [prefix[i : i + 1], class_i, ctx[i : i + 1], rest_i]
        prompts.append(torch.cat(parts, dim=1))
    return torch.cat(prompts)


def bind(tuner, backbone):
    task = Task.classification(CLASSES)
    chain = RuleBasedGenerator().generate(task)
    tuner.bind(backbone, chain)
    aggregator = MeanAggregator()
    aggregator.bind(chain.num_steps, backbone.embed_dim)
    return aggregator


def cotprompt_logits(tuner, aggregator, backbone, image_features):
    features = F.normalize(image_features, dim=-1)
    text = tuner.encode_text(backbone, features if tuner.image_conditioned else None)
    return aggregator(features, text, backbone.logit_scale)


@pytest.mark.parametrize("position", ["end", "middle", "front"])
@pytest.mark.parametrize("class_specific", [False, True])
def test_coop_equals_reference(tiny_backbone, position, class_specific):
    backbone = tiny_backbone
    tuner = CoOpTuner(
        CoOpConfig(n_ctx=6, class_specific=class_specific, class_token_position=position)
    )
    aggregator = bind(tuner, backbone)
    image_features = torch.randn(3, backbone.embed_dim)

    ours = cotprompt_logits(tuner, aggregator, backbone, image_features)

    tokenized, prefix, suffix, name_lens = reference_prompt_buffers(backbone, 6)
    prompts = reference_coop_prompts(tuner.ctx[0], prefix, suffix, name_lens, position)
    text = F.normalize(reference_text_encoder(backbone.model, prompts, tokenized), dim=-1)
    reference = backbone.model.logit_scale.exp() * F.normalize(image_features, dim=-1) @ text.t()
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)

    # gradients with respect to the context agree too
    grad_ours = torch.autograd.grad(ours.logsumexp(-1).sum(), tuner.ctx[0])[0]
    prompts = reference_coop_prompts(tuner.ctx[0], prefix, suffix, name_lens, position)
    text = F.normalize(reference_text_encoder(backbone.model, prompts, tokenized), dim=-1)
    reference = backbone.model.logit_scale.exp() * F.normalize(image_features, dim=-1) @ text.t()
    grad_ref = torch.autograd.grad(reference.logsumexp(-1).sum(), tuner.ctx[0])[0]
    torch.testing.assert_close(
        grad_ours, grad_ref, rtol=1e-4, atol=1e-4 * grad_ref.abs().max().item()
    )


def reference_cocoop_logits(tuner, backbone, image_features):
    """CoCoOp's CustomCLIP.forward: one text-encoder pass per image."""
    tokenized, prefix, suffix, _ = reference_prompt_buffers(backbone, tuner.n_ctx)
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    meta_net = tuner.meta_nets[0]
    bias = meta_net(image_features).unsqueeze(1)
    ctx_shifted = tuner.ctx[0].unsqueeze(0) + bias
    logits = []
    for ctx_i, imf_i in zip(ctx_shifted, image_features, strict=True):
        ctx_i = ctx_i.unsqueeze(0).expand(len(CLASSES), -1, -1)
        pts_i = torch.cat([prefix, ctx_i, suffix], dim=1)
        text = reference_text_encoder(backbone.model, pts_i, tokenized)
        text = text / text.norm(dim=-1, keepdim=True)
        logits.append(backbone.model.logit_scale.exp() * imf_i @ text.t())
    return torch.stack(logits)


def test_cocoop_equals_reference(tiny_backbone):
    backbone = tiny_backbone
    tuner = CoCoOpTuner(CoCoOpConfig())
    aggregator = bind(tuner, backbone)
    with torch.no_grad():  # a non-trivial meta-net and context
        for p in tuner.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    image_features = torch.randn(4, backbone.embed_dim)
    ours = cotprompt_logits(tuner, aggregator, backbone, image_features)
    reference = reference_cocoop_logits(tuner, backbone, image_features)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)

    params = [tuner.ctx[0], *tuner.meta_nets.parameters()]
    grads_ours = torch.autograd.grad(ours.logsumexp(-1).sum(), params)
    reference = reference_cocoop_logits(tuner, backbone, image_features)
    grads_ref = torch.autograd.grad(reference.logsumexp(-1).sum(), params)
    for g_ours, g_ref in zip(grads_ours, grads_ref, strict=True):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-4 * g_ref.abs().max().item())


def test_cotpt_one_step_unchained_equals_cocoop(tiny_backbone):
    backbone = tiny_backbone
    cocoop = CoCoOpTuner(CoCoOpConfig())
    cotpt = CoTPTTuner(CoTPTConfig(chain="none"))
    aggregator = bind(cocoop, backbone)
    bind(cotpt, backbone)
    with torch.no_grad():
        for p in cocoop.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    cotpt.load_state_dict(cocoop.state_dict())
    image_features = torch.randn(4, backbone.embed_dim)
    torch.testing.assert_close(
        cotprompt_logits(cotpt, aggregator, backbone, image_features),
        cotprompt_logits(cocoop, aggregator, backbone, image_features),
        rtol=0,
        atol=0,
    )
