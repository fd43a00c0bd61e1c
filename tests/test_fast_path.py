"""The fast text-encoder path equals the plain path: outputs and gradients, every tuner layout.

The plain path (``text_encoder="plain"``) is the reference forward through open_clip's
transformer; ``tests/test_exactness.py`` ties it (and the default fast path) to the research code.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F

from cotprompt import CoTPipeline
from cotprompt.backbones import TINY_MODEL, OpenCLIPBackbone, OpenCLIPBackboneConfig
from cotprompt.backbones.encoder_plan import length_buckets, resolve_budget
from cotprompt.backbones.encoder_weights import TowerWeights
from cotprompt.backbones.text_encoder import FastTextEncoder, unsupported_reason
from cotprompt.errors import ConfigError
from cotprompt.tuners import (
    CoCoOpTuner,
    ContextPromptTuner,
    ContextTunerConfig,
    CoOpTuner,
    CoTPTTuner,
)
from cotprompt.types import PromptChain, PromptStep

LABELS = ["beagle", "golden retriever", "tabby cat", "sea turtle", "a very long label name here"]


def make_chain(num_steps: int, labels=LABELS, ensemble: bool = False) -> PromptChain:
    templates = ["{c}.", "{c}, a kind of animal.", "{c} in a photo, seen from far away."]
    steps = []
    for k in range(num_steps):
        texts = []
        for c in labels:
            cell = [templates[k % 3].format(c=c)]
            if ensemble and k == 0:
                cell.append(f"{c}, a pet.")
            texts.append(tuple(cell))
        steps.append(PromptStep(name=f"s{k}", texts=tuple(texts)))
    return PromptChain(
        labels=tuple(labels), steps=tuple(steps), zero_shot=tuple((c,) for c in labels)
    )


@pytest.fixture(scope="module")
def layer_scale_backbone(tmp_path_factory) -> OpenCLIPBackbone:
    """A second tiny architecture: layer scale, 4 heads, 3 layers, exact GELU, CustomTextCLIP."""
    import open_clip

    folder = tmp_path_factory.mktemp("model_configs")
    config = {
        "embed_dim": 48,
        "quick_gelu": False,
        "custom_text": True,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 64,
            "head_width": 32,
            "patch_size": 16,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 64,
            "heads": 4,
            "layers": 3,
            "ls_init_value": 0.5,
        },
    }
    (folder / "cotprompt-tiny-ls.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    backbone = OpenCLIPBackbone(
        OpenCLIPBackboneConfig(model_name="cotprompt-tiny-ls", pretrained=None)
    )
    with torch.no_grad():  # layer scales that differ per channel
        for name, p in backbone.text.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.5 + torch.rand_like(p))
    return backbone


def pair(tuner_cls, backbone, chain, **options):
    """A fast and a plain tuner with the same (perturbed) parameters."""
    fast = tuner_cls(tuner_cls.Config(text_encoder="fast", **options))
    fast.bind(backbone, chain)
    with torch.no_grad():
        for p in fast.parameters():
            p.add_(0.1 * torch.randn_like(p))
    plain = tuner_cls(tuner_cls.Config(text_encoder="plain", **options))
    plain.bind(backbone, chain)
    plain.load_state_dict(fast.state_dict())
    return fast, plain


def outputs_and_grads(tuner, backbone, features):
    text = tuner.encode_text(backbone, features if tuner.image_conditioned else None)
    weights = torch.randn(
        features.shape[0], *text.shape[1:], generator=torch.Generator().manual_seed(1)
    )
    loss = (text * weights[: text.shape[0]]).sum()
    return text, torch.autograd.grad(loss, list(tuner.parameters()))


def assert_same(fast, plain, backbone, batch=3):
    features = F.normalize(torch.randn(batch, backbone.embed_dim), dim=-1)
    out_f, grads_f = outputs_and_grads(fast, backbone, features)
    out_p, grads_p = outputs_and_grads(plain, backbone, features)
    torch.testing.assert_close(out_f, out_p, rtol=1e-5, atol=2e-6)
    assert len(grads_f) == len(grads_p) > 0
    for g_f, g_p in zip(grads_f, grads_p, strict=True):
        if g_p.numel():
            torch.testing.assert_close(g_f, g_p, rtol=1e-4, atol=1e-4 * g_p.abs().max().item())


@pytest.mark.parametrize("tuner_cls", [CoOpTuner, CoCoOpTuner, CoTPTTuner])
@pytest.mark.parametrize("position", ["end", "middle", "front"])
@pytest.mark.parametrize("class_specific", [False, True])
@pytest.mark.parametrize("num_steps", [1, 3])
def test_fast_equals_plain(tiny_backbone, tuner_cls, position, class_specific, num_steps):
    chain = make_chain(num_steps)
    fast, plain = pair(
        tuner_cls,
        tiny_backbone,
        chain,
        class_token_position=position,
        class_specific=class_specific,
    )
    assert fast.shares_prefix == (position == "end" and not class_specific)
    assert_same(fast, plain, tiny_backbone)
    # one bucket and one chunk: the prefix runs in the same calls as the suffixes
    plan = tiny_backbone.fast_text_encoder().last_plan
    assert plan["joint_prefix"] == (fast.shares_prefix and plan["chunks"] == 1)


@pytest.mark.parametrize("tuner_cls", [CoOpTuner, CoTPTTuner])
@pytest.mark.parametrize("batch", [1, 6])
def test_fast_equals_plain_with_layer_scale_heads_and_gelu(layer_scale_backbone, tuner_cls, batch):
    assert layer_scale_backbone.fast_text_encoder() is not None
    fast, plain = pair(tuner_cls, layer_scale_backbone, make_chain(3, ensemble=True))
    assert_same(fast, plain, layer_scale_backbone, batch=batch)
    fast, plain = pair(
        tuner_cls, layer_scale_backbone, make_chain(2), class_token_position="middle"
    )
    assert_same(fast, plain, layer_scale_backbone, batch=batch)


def test_no_context_and_ensembles(tiny_backbone):
    """n_ctx=0 (the prefix is the start token alone) and several texts per cell."""
    fast, plain = pair(
        ContextPromptTuner, tiny_backbone, make_chain(1, ensemble=True), n_ctx=0, meta_net=True
    )
    assert_same(fast, plain, tiny_backbone, batch=2)


@pytest.mark.parametrize("options", [{"memory_budget_mb": 0.05}, {"max_sequences_per_call": 3}])
def test_chunks_and_recomputation_are_exact(tiny_backbone, options):
    chain = make_chain(3)
    fast, plain = pair(CoTPTTuner, tiny_backbone, chain, **options)
    assert_same(fast, plain, tiny_backbone, batch=4)
    plan = tiny_backbone.fast_text_encoder().last_plan
    assert plan["chunks"] > len(plan["bucket_lengths"])
    # a budget smaller than the step needs: chunks are recomputed in the backward pass
    assert plan["recompute"] == ("memory_budget_mb" in options)
    assert not plan["joint_prefix"]  # the prefix's keys/values are computed once, first
    # the class-specific (no shared prefix) path chunks too
    fast, plain = pair(CoCoOpTuner, tiny_backbone, chain, class_specific=True, **options)
    assert_same(fast, plain, tiny_backbone, batch=2)
    assert tiny_backbone.fast_text_encoder().last_plan["chunks"] > 1


def test_end_of_text_truncation_equals_the_full_context(tiny_backbone):
    """Positions after the longest end-of-text token change nothing: 77 positions vs fewer."""
    texts = ["a photo of a cat.", "golden retriever", "x"]
    tokens = tiny_backbone.tokenize(texts)
    eot = tiny_backbone.end_of_text_index(tokens)
    embeddings = tiny_backbone.embed_tokens(tokens).requires_grad_(True)
    full = tiny_backbone.encode_text_embeddings(embeddings, eot)
    assert embeddings.shape[1] == 77
    length = int(eot.max()) + 1
    truncated = tiny_backbone.encode_text_embeddings(embeddings[:, :length], eot)
    fast = tiny_backbone.fast_text_encoder().encode(embeddings, eot)
    torch.testing.assert_close(truncated, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    seed = torch.randn_like(full)
    grads = [torch.autograd.grad((y * seed).sum(), embeddings)[0] for y in (full, truncated, fast)]
    assert grads[0][:, length:].abs().max() == 0
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0], rtol=1e-4, atol=1e-4 * grads[0].abs().max().item())


@pytest.mark.parametrize("prefixes,texts,rows", [(1, 4, "all"), (3, 5, "all"), (4, 6, "some")])
def test_shared_prefix_equals_concatenated_sequences(tiny_backbone, prefixes, texts, rows):
    """Encoder level: rows = prefix[p] + suffix[t] attend to the prefix's cached keys/values."""
    encoder = tiny_backbone.fast_text_encoder()
    width = tiny_backbone.text_width
    prefix = torch.randn(prefixes, 5, width, requires_grad=True)
    suffix_tokens = tiny_backbone.tokenize([" ".join(["word"] * (t + 1)) for t in range(texts)])
    suffix_eot = tiny_backbone.end_of_text_index(suffix_tokens)
    length = int(suffix_eot.max()) + 1
    suffix = tiny_backbone.embed_tokens(suffix_tokens[:, 1:length])  # drop the start token
    suffix_eot = suffix_eot - 1
    if rows == "all":
        row_prefix = torch.arange(prefixes).repeat_interleave(texts)
        row_text = torch.arange(texts).repeat(prefixes)
    else:
        row_prefix = torch.tensor([0, 3, 1, 1, 2, 0, 3])
        row_text = torch.tensor([5, 0, 2, 2, 4, 1, 3])
    out = encoder.encode_with_prefix(prefix, suffix, suffix_eot, row_prefix, row_text)
    sequences = torch.cat([prefix[row_prefix], suffix[row_text]], dim=1)
    expected = tiny_backbone.encode_text_embeddings(sequences, suffix_eot[row_text] + 5)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    seed = torch.randn_like(out)
    g_fast = torch.autograd.grad((out * seed).sum(), prefix)[0]
    g_ref = torch.autograd.grad((expected * seed).sum(), prefix)[0]
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-4, atol=1e-4 * g_ref.abs().max().item())


def test_length_buckets_cover_every_item_once():
    lengths = torch.tensor([3, 9, 4, 3, 30, 9, 5, 31, 3])
    groups = length_buckets(lengths, overhead=0)
    flat = torch.cat(groups).sort().values
    assert torch.equal(flat, torch.arange(len(lengths)))
    padded = sum(int(lengths[g].max()) * len(g) for g in groups)
    assert 1 < len(groups) <= 4 and padded < int(lengths.max()) * len(lengths)
    assert len(length_buckets(torch.tensor([7, 7, 7]))) == 1
    assert len(length_buckets(lengths, overhead=1000)) == 1  # not worth another call


def test_inference_text_features_are_computed_once(tiny_backbone):
    tuner = CoOpTuner(CoOpTuner.Config(n_ctx=4))
    tuner.bind(tiny_backbone, make_chain(1))
    with torch.no_grad():
        first = tuner.encode_text(tiny_backbone, None)
        assert tuner.encode_text(tiny_backbone, None) is first
        tuner.ctx[0].add_(0.5)  # an optimiser step: recomputed
        second = tuner.encode_text(tiny_backbone, None)
    assert not torch.allclose(first, second)
    with_grad = tuner.encode_text(tiny_backbone, None)
    assert with_grad.requires_grad
    torch.testing.assert_close(with_grad, second)


def test_inference_text_features_follow_new_backbone_weights():
    backbone = OpenCLIPBackbone(OpenCLIPBackboneConfig(model_name=TINY_MODEL, pretrained=None))
    tuner = CoOpTuner(CoOpTuner.Config(n_ctx=4))
    tuner.bind(backbone, make_chain(1))
    with torch.no_grad():
        first = tuner.encode_text(backbone, None)
        backbone.text.transformer.resblocks[0].mlp.c_fc.weight.mul_(1.5)  # e.g. other weights
        second = tuner.encode_text(backbone, None)
    assert not torch.allclose(first, second)
    torch.testing.assert_close(second, tuner.encode_text(backbone, None).detach())


def test_plain_switch_uses_the_backbone_forward(tiny_backbone, monkeypatch):
    calls = []
    original = type(tiny_backbone).encode_text_embeddings

    def spy(self, embeddings, eot):
        calls.append(embeddings.shape)
        return original(self, embeddings, eot)

    monkeypatch.setattr(type(tiny_backbone), "encode_text_embeddings", spy)
    for encoder in ("fast", "plain"):
        tuner = CoOpTuner(CoOpTuner.Config(n_ctx=4, text_encoder=encoder))
        tuner.bind(tiny_backbone, make_chain(1))
        tuner.encode_text(tiny_backbone, None)
        assert bool(calls) == (encoder == "plain")


def test_unsupported_towers_fall_back_to_the_plain_path(tiny_backbone, monkeypatch):
    assert unsupported_reason(tiny_backbone.text) is None
    assert "resblocks" in unsupported_reason(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError):
        FastTextEncoder(torch.nn.Linear(2, 2))
    monkeypatch.setattr(type(tiny_backbone), "fast_text_encoder", lambda self, compile=False: None)
    fast, plain = pair(CoCoOpTuner, tiny_backbone, make_chain(1))
    assert_same(fast, plain, tiny_backbone)


def test_budget_resolution(monkeypatch):
    """A budget in MiB as given; none: half the free memory, and at least the automatic
    minimum when little is free."""
    import cotprompt.backbones.encoder_plan as encoder_plan

    cpu = torch.device("cpu")
    assert resolve_budget(8, cpu) == 8 * 2**20
    assert resolve_budget(0.5, cpu) == 2**19
    monkeypatch.setattr(encoder_plan, "free_memory_bytes", lambda device: 6 * 2**30)
    assert resolve_budget(None, cpu) == 3 * 2**30
    monkeypatch.setattr(encoder_plan, "free_memory_bytes", lambda device: 2**20)
    assert resolve_budget(None, cpu) == encoder_plan.MIN_AUTO_BUDGET > 2**19


@pytest.mark.parametrize(("budget_mb", "free", "expected"),
                         [(0.5, None, 2**19), (None, 6 * 2**30, 3 * 2**30)],
                         ids=["given", "automatic"])
def test_the_tuners_budget_reaches_the_encoder_plan(tiny_backbone, monkeypatch, budget_mb, free,
                                                    expected):
    import cotprompt.backbones.encoder_plan as encoder_plan

    if free is not None:
        monkeypatch.setattr(encoder_plan, "free_memory_bytes", lambda device: free)
    assert ContextTunerConfig().text_encoder == "fast"  # the default
    fast, plain = pair(CoOpTuner, tiny_backbone, make_chain(2), memory_budget_mb=budget_mb)
    assert_same(fast, plain, tiny_backbone)
    assert tiny_backbone.fast_text_encoder().last_plan["budget_bytes"] == expected


@pytest.mark.parametrize(
    ("option", "says"),
    [
        ({"text_encoder": "other"}, r"- text_encoder: .*'fast'.*'plain'.*\(got 'other'\)"),
        ({"text_encoder": "Fast"}, r"- text_encoder: .*\(got 'Fast'\)"),
        ({"memory_budget_mb": 0}, r"- memory_budget_mb: .*\(got 0\)"),
    ],
    ids=["unknown-encoder", "case", "zero-budget"],
)
@pytest.mark.parametrize("tuner", ["coop", "cotpt"])
def test_invalid_text_encoder_options_are_refused_naming_them(tiny_backbone, tuner, option,
                                                              says):
    with pytest.raises(ConfigError, match=rf"invalid config for tuner '{tuner}'[\s\S]*{says}"
                       r"[\s\S]*Valid options: .*memory_budget_mb.*text_encoder"):
        CoTPipeline.create(backbone=tiny_backbone, tuner=tuner, tuner_config=option)


@pytest.mark.parametrize("tuner_cls", [CoOpTuner, CoTPTTuner])
def test_fast_equals_plain_with_several_length_buckets(tiny_backbone, tuner_cls, monkeypatch):
    import cotprompt.backbones.encoder_plan as encoder_plan

    monkeypatch.setattr(encoder_plan, "BUCKET_OVERHEAD_TOKENS", {"cpu": 0})
    for class_specific in (False, True):
        fast, plain = pair(
            tuner_cls, tiny_backbone, make_chain(2, ensemble=True), class_specific=class_specific
        )
        assert_same(fast, plain, tiny_backbone, batch=3)
        assert len(tiny_backbone.fast_text_encoder().last_plan["bucket_lengths"]) > 1


@pytest.mark.parametrize("overhead", [0, 10**6])
def test_text_tokens_shared_by_all_labels_join_the_prefix(tiny_backbone, overhead, monkeypatch):
    """``"a close-up of the details of the {class}."``: the words before the label are the same
    for every label, so they are encoded once with the context; steps with different shared
    lengths are encoded in groups."""
    templates = ["{c}.", "a photo of a {c}.", "a close-up of the details of the {c}."]
    chain = PromptChain(
        labels=tuple(LABELS),
        steps=tuple(
            PromptStep(f"s{k}", tuple((t.format(c=c),) for c in LABELS))
            for k, t in enumerate(templates)
        ),
        zero_shot=tuple((c,) for c in LABELS),
    )
    import cotprompt.backbones.encoder_plan as encoder_plan

    monkeypatch.setattr(encoder_plan, "BUCKET_OVERHEAD_TOKENS", {"cpu": overhead})
    for tuner_cls in (CoOpTuner, CoTPTTuner):
        fast, plain = pair(tuner_cls, tiny_backbone, chain)
        shared = [fast.tokens.shared_text_prefix(k) for k in range(3)]
        assert shared[0] == 0 and 0 < shared[1] < shared[2]
        groups = fast._prefix_groups(fast.tokens, batch=2)
        assert len(groups) == (3 if overhead == 0 else 1)
        assert_same(fast, plain, tiny_backbone, batch=2)
    # one label: everything but the end-of-text token is shared
    one = PromptChain(
        labels=("cat",),
        steps=(PromptStep("s", (("a photo of a cat.",),)),),
        zero_shot=(("cat",),),
    )
    fast, plain = pair(CoCoOpTuner, tiny_backbone, one)
    assert fast.tokens.shared_text_prefix(0) == 6  # "a photo of a cat ."
    assert_same(fast, plain, tiny_backbone, batch=2)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("COTPROMPT_TEST_COMPILE"),
    reason="torch.compile takes about a minute on a CPU; set COTPROMPT_TEST_COMPILE=1",
)
def test_compiled_fast_path_equals_plain(tiny_backbone):
    fast, plain = pair(CoCoOpTuner, tiny_backbone, make_chain(1), compile=True)
    assert_same(fast, plain, tiny_backbone)


def _rel(actual, expected):
    actual, expected = actual.detach().float(), expected.detach().float()
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("tuner_cls", [CoOpTuner, CoTPTTuner])
def test_fast_path_in_bf16_autocast_matches_fp32(tiny_backbone, tuner_cls):
    """bf16 autocast on the CPU (cached bf16 weights, attention in fp32): within 2e-2 of the
    fp32 plain path (relative to the largest value), outputs and all gradients together, and
    about as close to it as the plain path in bf16 autocast is."""
    fast, plain = pair(tuner_cls, tiny_backbone, make_chain(3))
    features = F.normalize(torch.randn(3, tiny_backbone.embed_dim), dim=-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_f, grads_f = outputs_and_grads(fast, tiny_backbone, features)
        out_b, grads_b = outputs_and_grads(plain, tiny_backbone, features)
    out_p, grads_p = outputs_and_grads(plain, tiny_backbone, features)
    flat = [torch.cat([g.flatten() for g in grads]) for grads in (grads_f, grads_b, grads_p)]
    for fast_bf16, plain_bf16, fp32 in [(out_f, out_b, out_p), flat]:
        assert _rel(fast_bf16, fp32) < 2e-2
        assert _rel(fast_bf16, fp32) <= 2 * _rel(plain_bf16, fp32)


def test_autocast_weight_casts_are_cached_and_follow_weight_changes():
    """Under autocast the frozen weights are cast once (the same values autocast would make),
    recast after they change in place, and left to autocast when the tower is being tuned."""
    backbone = OpenCLIPBackbone(OpenCLIPBackboneConfig(model_name=TINY_MODEL, pretrained=None))
    fast, _ = pair(CoOpTuner, backbone, make_chain(1))
    encoder = backbone.fast_text_encoder()

    def encode(uncached: bool = False):
        # with gradients enabled: the tuner's inference cache of text features stays out of it
        original = TowerWeights.blocks
        if uncached:
            TowerWeights.blocks = lambda self, dtype=None: self.folded()
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fast.encode_text(backbone, None).detach()
        finally:
            TowerWeights.blocks = original

    first = encode()
    torch.testing.assert_close(first, encode(uncached=True), rtol=0, atol=0)
    cached = encoder.weights.blocks(torch.bfloat16)
    assert cached[0].in_w.dtype == torch.bfloat16
    encode()
    assert encoder.weights.blocks(torch.bfloat16) is cached  # reused, not cast again

    block = backbone.text.transformer.resblocks[0]
    with torch.no_grad():
        block.mlp.c_fc.weight.mul_(1.5)
    changed = encode()
    assert not torch.equal(changed, first)
    torch.testing.assert_close(changed, encode(uncached=True), rtol=0, atol=0)

    block.mlp.c_fc.weight.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast.encode_text(backbone, None).float().sum().backward()
    assert block.mlp.c_fc.weight.grad is not None
