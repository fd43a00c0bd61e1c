"""Tuners, aggregators and the rule-based generator, unit by unit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cotprompt import Aggregator, PromptGenerator, PromptTuner
from cotprompt.aggregators import AdaptiveAggregator, AttentionAggregator, MeanAggregator
from cotprompt.errors import ConfigError, DataError
from cotprompt.generators import RuleBasedConfig, RuleBasedGenerator
from cotprompt.generators.templates import IMAGENET_TEMPLATES
from cotprompt.tuners import (
    CoCoOpTuner,
    CoOpConfig,
    CoOpTuner,
    CoTPTConfig,
    CoTPTTuner,
    VPTTuner,
)
from cotprompt.types import PromptChain, PromptStep, Task

CLASSES = ["beagle", "golden retriever", "tabby cat"]


def chain_of(*steps: list[list[str]]) -> PromptChain:
    return PromptChain(
        labels=tuple(CLASSES),
        steps=tuple(
            PromptStep(name=f"s{k}", texts=tuple(tuple(t) for t in s)) for k, s in enumerate(steps)
        ),
        zero_shot=tuple((f"a photo of a {c}.",) for c in CLASSES),
    )


def perturb(module):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)


def assert_follows_protocol(component, protocol, methods):
    """``isinstance`` on a runtime-checkable protocol only sees attribute names: also the
    registered name, the ``Config`` model the constructor takes, and each method's parameters
    (names, order, defaults) as the protocol declares them."""
    import inspect

    from pydantic import BaseModel

    assert isinstance(component, protocol)
    cls = type(component)
    assert isinstance(cls.name, str) and cls.name
    assert issubclass(cls.Config, BaseModel) and isinstance(component.config, cls.Config)
    assert cls(cls.Config()).config == cls.Config()
    for method, implementation in methods.items():
        declared = inspect.signature(getattr(protocol, method)).parameters
        actual = inspect.signature(implementation).parameters
        assert [(p.name, p.default) for p in actual.values()] == [
            (p.name, p.default) for p in declared.values()
        ], f"{cls.__name__}.{method}"


def test_rule_based_generator_follows_its_protocol(tiny_backbone):
    generator = RuleBasedGenerator(RuleBasedConfig(preset="cot"))
    assert generator.name == "rule-based"
    assert_follows_protocol(generator, PromptGenerator, {"generate": RuleBasedGenerator.generate})
    task = Task(labels=tuple(CLASSES))
    for chain in (generator.generate(task), generator.generate(task, backbone=tiny_backbone)):
        assert isinstance(chain, PromptChain) and chain.labels == task.labels
        assert chain.num_steps == len(chain.steps) == 3 and len(chain.zero_shot) == len(CLASSES)
        for step in chain.steps:  # every label's texts name it
            assert len(step.texts) == len(CLASSES)
            for label, texts in zip(CLASSES, step.texts, strict=True):
                assert texts and all(label in text for text in texts)


@pytest.mark.parametrize(
    ("tuner_cls", "name", "image_conditioned", "tunes_image_encoder"),
    [
        (CoOpTuner, "coop", False, False),
        (CoCoOpTuner, "cocoop", True, False),
        (CoTPTTuner, "cotpt", True, False),
        (VPTTuner, "vpt", False, True),
    ],
)
def test_tuners_follow_their_protocol(tiny_backbone, tuner_cls, name, image_conditioned,
                                      tunes_image_encoder):
    """Image features ``[B, E]`` (the frozen encoder's unless the tuner prompts it), text
    features ``[B or 1, K, C, E]`` normalised per step, with gradients to the tuner."""
    tuner = tuner_cls()
    assert tuner.name == name
    assert_follows_protocol(tuner, PromptTuner, {
        m: getattr(tuner_cls, m) for m in ("bind", "encode_images", "encode_text")})
    assert (tuner.image_conditioned, tuner.tunes_image_encoder) == (
        image_conditioned, tunes_image_encoder)
    chain = chain_of([[f"{c}."] for c in CLASSES], [[f"a photo of a {c}."] for c in CLASSES])
    tuner.bind(tiny_backbone, chain)
    perturb(tuner)
    pixels = torch.randn(2, 3, 32, 32)
    images = tuner.encode_images(tiny_backbone, pixels)
    assert images.shape == (2, tiny_backbone.embed_dim) and images.dtype == torch.float32
    with torch.no_grad():
        frozen = tiny_backbone.encode_images(pixels)
    if tunes_image_encoder:
        assert not torch.allclose(images, frozen)
        assert any(g is not None and g.abs().sum() > 0 for g in torch.autograd.grad(
            images.sum(), list(tuner.parameters()), allow_unused=True))
    else:
        torch.testing.assert_close(images, frozen)
    features = F.normalize(images.detach(), dim=-1)
    text = tuner.encode_text(tiny_backbone, features if image_conditioned else None)
    batch = 2 if image_conditioned else 1
    assert text.shape == (batch, chain.num_steps, len(CLASSES), tiny_backbone.embed_dim)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(text.shape[:-1]))
    assert text.requires_grad == (not tunes_image_encoder)  # VPT's text features are fixed


@pytest.mark.parametrize(
    ("aggregator_cls", "name"),
    [(MeanAggregator, "mean"), (AttentionAggregator, "attention"),
     (AdaptiveAggregator, "adaptive")],
)
def test_aggregators_follow_their_protocol(aggregator_cls, name):
    """Logits ``[B, C]`` from ``[B, E]`` image and ``[B or 1, K, C, E]`` text features (one
    text row shared by every image is the same as that row repeated), and ``loss`` where
    defined is the cross-entropy of those logits."""
    aggregator = aggregator_cls()
    assert aggregator.name == name
    assert_follows_protocol(aggregator, Aggregator, {
        "bind": aggregator_cls.bind, "__call__": aggregator_cls.forward})
    aggregator.bind(3, 16)
    perturb(aggregator)
    image = F.normalize(torch.randn(4, 16), dim=-1)
    text = F.normalize(torch.randn(1, 3, 5, 16), dim=-1)
    scale = torch.tensor(10.0)
    logits = aggregator(image, text, scale)
    assert logits.shape == (4, 5) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, aggregator(image, text.expand(4, -1, -1, -1), scale))
    if hasattr(aggregator, "loss"):
        targets = torch.tensor([0, 4, 2, 2])
        torch.testing.assert_close(aggregator.loss(image, text, scale, targets),
                                   F.cross_entropy(logits, targets))


@pytest.mark.parametrize("tuner_cls", [CoOpTuner, CoCoOpTuner, CoTPTTuner])
def test_truncation_and_chunking_are_exact(tiny_backbone, tuner_cls):
    chain = chain_of([[f"{c}."] for c in CLASSES], [[f"{c}, a pet.", f"a {c}."] for c in CLASSES])
    features = F.normalize(torch.randn(3, tiny_backbone.embed_dim), dim=-1)
    weights = torch.randn(3, 2, 3, tiny_backbone.embed_dim)
    outputs = []
    reference = None
    for options in ({}, {"truncate": False}, {"max_sequences_per_call": 4}):
        tuner = tuner_cls(tuner_cls.Config(**options))
        torch.manual_seed(0)
        tuner.bind(tiny_backbone, chain)
        if options:
            tuner.load_state_dict(reference.state_dict())
        else:
            perturb(tuner)
            reference = tuner
        out = tuner.encode_text(tiny_backbone, features if tuner.image_conditioned else None)
        grads = torch.autograd.grad((out * weights).sum(), list(tuner.parameters()))
        outputs.append((out, grads))
    expected_shape = (3 if reference.image_conditioned else 1, 2, 3, tiny_backbone.embed_dim)
    assert outputs[0][0].shape == expected_shape
    for out, grads in outputs[1:]:
        torch.testing.assert_close(out, outputs[0][0], rtol=1e-5, atol=1e-6)
        for g, g0 in zip(grads, outputs[0][1], strict=True):
            torch.testing.assert_close(g, g0, rtol=1e-4, atol=1e-4 * g0.abs().max().item())


def test_ensembled_cell_is_the_normalised_mean_of_its_texts(tiny_backbone):
    chain = chain_of([[f"{c}.", f"a {c}."] for c in CLASSES])
    tuner = CoOpTuner(CoOpConfig(n_ctx=4))
    tuner.bind(tiny_backbone, chain)
    ensembled = tuner.encode_text(tiny_backbone, None)[0, 0]
    singles = []
    for template in ("{c}.", "a {c}."):
        single = CoOpTuner(CoOpConfig(n_ctx=4))
        single.bind(tiny_backbone, chain_of([[template.format(c=c)] for c in CLASSES]))
        single.load_state_dict(tuner.state_dict())
        singles.append(single.encode_text(tiny_backbone, None)[0, 0])
    expected = F.normalize((singles[0] + singles[1]) / 2, dim=-1)
    torch.testing.assert_close(ensembled, expected, rtol=1e-5, atol=1e-6)


def test_chain_links_start_at_zero_and_make_steps_depend_on_each_other(tiny_backbone):
    chain = chain_of([[f"{c}."] for c in CLASSES], [[f"{c}."] for c in CLASSES])
    chained = CoTPTTuner(CoTPTConfig(chain="additive"))
    chained.bind(tiny_backbone, chain)
    unchained = CoTPTTuner(CoTPTConfig(chain="none"))
    unchained.bind(tiny_backbone, chain)
    unchained.load_state_dict(chained.state_dict(), strict=False)
    features = F.normalize(torch.randn(2, tiny_backbone.embed_dim), dim=-1)
    torch.testing.assert_close(
        chained.encode_text(tiny_backbone, features), unchained.encode_text(tiny_backbone, features)
    )
    perturb(chained.chain_links)
    step2 = chained.encode_text(tiny_backbone, features)[:, 1]
    assert not torch.allclose(step2, unchained.encode_text(tiny_backbone, features)[:, 1])
    # step 1 does not depend on the link into step 2
    torch.testing.assert_close(
        chained.encode_text(tiny_backbone, features)[:, 0],
        unchained.encode_text(tiny_backbone, features)[:, 0],
    )


def test_tuner_config_errors(tiny_backbone):
    from cotprompt.tuners import ContextTunerConfig

    with pytest.raises(ValueError, match="needs meta_net=True"):
        ContextTunerConfig(meta_net=False, chain="additive")
    tuner = CoOpTuner(CoOpConfig(ctx_init="a photo of a", n_ctx=6))
    with pytest.raises(ConfigError, match="is 4 tokens but n_ctx=6"):
        tuner.bind(tiny_backbone, chain_of([[f"{c}."] for c in CLASSES]))
    tuner = CoOpTuner(CoOpConfig(class_token_position="front"))
    with pytest.raises(ConfigError, match="start with the label"):
        tuner.bind(tiny_backbone, chain_of([[f"a {c}."] for c in CLASSES]))
    tuner = CoOpTuner()
    with pytest.raises(ConfigError, match="not bound"):
        tuner.encode_text(tiny_backbone, None)
    tuner.bind(tiny_backbone, chain_of([[f"{c}."] for c in CLASSES]))
    with pytest.raises(
        ConfigError, match="trained with 1 chain steps but the generator produced 2"
    ):
        tuner.bind(
            tiny_backbone, chain_of([[f"{c}."] for c in CLASSES], [[f"{c}."] for c in CLASSES])
        )
    long_text = " ".join(["word"] * 80)
    with pytest.raises(ConfigError, match="context length"):
        tuner.bind(tiny_backbone, chain_of([[long_text] for _ in CLASSES]))


def test_cocoop_needs_image_features(tiny_backbone):
    tuner = CoCoOpTuner()
    tuner.bind(tiny_backbone, chain_of([[f"{c}."] for c in CLASSES]))
    with pytest.raises(ConfigError, match="image-conditioned"):
        tuner.encode_text(tiny_backbone, None)


@pytest.mark.parametrize("batch", [1, 4])
def test_aggregators_agree_at_initialisation_and_with_one_step(batch):
    torch.manual_seed(0)
    image = F.normalize(torch.randn(4, 16), dim=-1)
    text = F.normalize(torch.randn(batch, 3, 5, 16), dim=-1)
    scale = torch.tensor(10.0)
    mean = MeanAggregator()
    expected = scale * torch.einsum("be,bkce->bkc", image, text.expand(4, -1, -1, -1)).mean(1)
    outputs = []
    for aggregator in (mean, AttentionAggregator(), AdaptiveAggregator()):
        aggregator.bind(3, 16)
        outputs.append(aggregator(image, text, scale))
        torch.testing.assert_close(outputs[-1], expected, rtol=1e-5, atol=1e-5)
    adaptive = AdaptiveAggregator()
    adaptive.bind(3, 16)
    perturb(adaptive)
    weights = torch.softmax(adaptive.controller(image), -1)
    by_step = scale * torch.einsum("be,bkce->bkc", image, text.expand(4, -1, -1, -1))
    torch.testing.assert_close(adaptive(image, text, scale), (weights[..., None] * by_step).sum(1))
    one_step = text[:, :1]
    for aggregator in (AttentionAggregator(), AdaptiveAggregator()):
        aggregator.bind(1, 16)
        perturb(aggregator)
        torch.testing.assert_close(aggregator(image, one_step, scale), mean(image, one_step, scale))
    with pytest.raises(ConfigError, match="trained for 3 steps, not 2"):
        adaptive.bind(2, 16)


@pytest.mark.parametrize("aggregator_cls", [MeanAggregator, AttentionAggregator])
def test_model_loss_is_the_cross_entropy_of_its_logits(tiny_backbone, aggregator_cls):
    """Training asks the model for its loss (``targets=``): through ``MeanAggregator.loss``
    (which would fuse the head on a GPU) or, for aggregators without one, the logits' CE; same
    value and gradients as the cross-entropy of the logits."""
    from cotprompt.model import PromptModel

    torch.manual_seed(0)
    tuner = CoCoOpTuner()
    tuner.bind(tiny_backbone, chain_of([[f"a photo of a {c}."] for c in CLASSES]))
    perturb(tuner)
    aggregator = aggregator_cls()
    aggregator.bind(1, tiny_backbone.embed_dim)
    model = PromptModel(tiny_backbone, tuner, aggregator)
    features = F.normalize(torch.randn(3, tiny_backbone.embed_dim), dim=-1)
    targets = torch.tensor([2, 0, 1])
    params = list(model.trainable_state().values())
    loss = model(features, targets=targets)
    grads = torch.autograd.grad(loss, params)
    expected = F.cross_entropy(model(features), targets)
    expected_grads = torch.autograd.grad(expected, params)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e)


def test_rule_based_generator_fills_fields_and_templates():
    task = Task(
        labels=("beagle", "tabby cat"),
        dataset="oxford_pets",
        attributes={"group": {"beagle": ["dog"], "tabby cat": ["cat"]}},
    )
    config = RuleBasedConfig(
        steps=[
            {"name": "class", "templates": ["{class}."]},
            {"name": "group", "templates": ["{class}, a type of {group}.", "a {}."]},
        ],
        attributes={"descriptor": {"beagle": ["long ears", "a short coat"]}},
    )
    chain = RuleBasedGenerator(config).generate(task)
    assert chain.num_steps == 2
    assert chain.steps[1].texts[0] == ("beagle, a type of dog.", "a beagle.")
    assert chain.zero_shot[0] == ("a photo of a beagle, a type of pet.",)
    with_descriptors = RuleBasedGenerator(
        RuleBasedConfig(
            steps=[{"name": "d", "templates": ["{class}, which has {descriptor}."]}],
            attributes=config.attributes,
            missing_field="skip",
            zero_shot_templates="imagenet",
        )
    )
    with pytest.raises(
        ConfigError, match="no template of step 'd' could be filled for label 'tabby cat'"
    ):
        with_descriptors.generate(task)
    chain = with_descriptors.generate(Task(labels=("beagle",)))
    assert chain.steps[0].texts[0] == (
        "beagle, which has long ears.",
        "beagle, which has a short coat.",
    )
    assert len(chain.zero_shot[0]) == len(IMAGENET_TEMPLATES) == 80
    strict = RuleBasedGenerator(
        RuleBasedConfig(steps=[{"name": "g", "templates": ["{class} {group}"]}])
    )
    with pytest.raises(
        ConfigError, match=r"uses field \{group\}, which has no value for label 'x'"
    ):
        strict.generate(Task(labels=("x",)))
    preset = RuleBasedGenerator(RuleBasedConfig(preset="cot")).generate(Task(labels=("x",)))
    assert preset.num_steps == 3


def test_task_and_chain_validation():
    with pytest.raises(DataError, match="at least one label"):
        Task(labels=())
    with pytest.raises(DataError, match="duplicate label 'a'"):
        Task(labels=("a", "b", "a"))
    assert Task.classification(["sea_turtle"]).labels == ("sea turtle",)
    with pytest.raises(DataError, match="has texts for 1 labels, expected 2"):
        PromptChain(
            labels=("a", "b"), steps=(PromptStep("s", (("a.",),)),), zero_shot=(("a",), ("b",))
        )
    chain = chain_of([[f"{c}."] for c in CLASSES])
    assert PromptChain.from_dict(chain.to_dict()) == chain
