"""Visual prompt tuning (``vpt``) and text + visual prompts (``multimodal``) on the tiny backbone.

Exactness: with no prompt tokens the prompted forward is open_clip's own image forward. Behaviour:
deep prompts replace the previous block's prompt outputs, gradient checkpointing changes nothing
but memory, coupled prompts are projections of the text context. End to end on real images
(../shared/data/cifar10-mini): training on pixels (no feature cache) lowers the loss and beats the
untuned pipeline on the training classes, and saved artifacts reload to identical logits.

The tiny backbone's tensors are small enough that thread synchronisation dominates; the module
runs torch on one thread so that its timing holds when other test processes share the two cores.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from cotprompt import CoTPipeline
from cotprompt.data import few_shot, from_folder, subsample_classes
from cotprompt.errors import ArtifactError, ConfigError, UnknownComponentError
from cotprompt.plugins.registry import get_registry
from cotprompt.tuners import MultimodalConfig, MultimodalTuner, VPTConfig, VPTTuner
from cotprompt.tuners import visual_prompts as vp
from cotprompt.types import PromptChain, PromptStep

LABELS = ("cat", "dog", "car")
TRAINING: dict[str, Any] = dict(
    optimizer="adamw",
    lr=0.01,
    weight_decay=0.0,
    warmup_epochs=0,
    scheduler="constant",
    augment=False,
    progress=False,
    batch_size=32,
    seed=1,
)
NUM_CLASSES, SHOTS = 5, 16


def make_chain(num_steps: int = 1) -> PromptChain:
    steps = tuple(
        PromptStep(f"s{k}", tuple((f"{c}.",) if k == 0 else (f"{c}, step {k}.",) for c in LABELS))
        for k in range(num_steps)
    )
    zero_shot = tuple((f"a photo of a {c}.", f"a picture of a {c}.") for c in LABELS)
    return PromptChain(labels=LABELS, steps=steps, zero_shot=zero_shot)


def pixels(batch: int = 4) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def vpt(backbone, chain: PromptChain | None = None, **options: Any) -> VPTTuner:
    tuner = VPTTuner(VPTConfig(**options))
    tuner.bind(backbone, chain or make_chain())
    return tuner


# -- exactness and mechanics ----------------------------------------------------------------


@pytest.mark.parametrize(
    "options", [{"n_tokens": 0}, {"n_tokens": 0, "mode": "deep"}, {"enabled": False}]
)
def test_no_prompt_tokens_reproduce_the_frozen_image_encoder(tiny_backbone, options):
    x = pixels()
    with torch.no_grad():
        frozen = tiny_backbone.model.encode_image(x)
        # the block-by-block forward itself, without tokens, is open_clip's forward
        plain = vp.encode_with_prompts(vp.vit_tower(tiny_backbone), x, [])
    torch.testing.assert_close(plain, frozen, rtol=0, atol=0)
    tuner = vpt(tiny_backbone, **options)
    assert not tuner.tunes_image_encoder and not list(tuner.parameters())
    torch.testing.assert_close(tuner.encode_images(tiny_backbone, x), frozen, rtol=0, atol=0)


def test_prompt_shapes_initialisation_and_gradients(tiny_backbone):
    width, layers = 64, 2  # cotprompt-tiny: ViT width 64, 2 blocks, 8x8 patches
    shallow = vpt(tiny_backbone, n_tokens=5)
    deep = vpt(tiny_backbone, n_tokens=3, mode="deep")
    first = vpt(tiny_backbone, n_tokens=3, mode="deep", depth=1)
    normal = vpt(tiny_backbone, n_tokens=64, init="normal", init_std=0.5)
    assert shallow.visual.prompts.shape == (1, 5, width)
    assert deep.visual.prompts.shape == (layers, 3, width)
    assert first.visual.prompts.shape == (1, 3, width)
    bound = math.sqrt(6 / (3 * 8 * 8 + width))  # VPT's uniform Xavier bound
    values = deep.visual.prompts.detach()
    assert bound >= float(values.abs().max()) > 0.5 * bound
    assert float(normal.visual.prompts.detach().std()) == pytest.approx(0.5, rel=0.1)
    assert shallow.tunes_image_encoder and not shallow.image_conditioned

    x = pixels()
    with torch.no_grad():
        frozen = tiny_backbone.model.encode_image(x)
    features = deep.encode_images(tiny_backbone, x)
    assert features.shape == frozen.shape and not torch.allclose(features, frozen)
    features.square().sum().backward()
    grad = deep.visual.prompts.grad
    assert grad is not None and bool((grad.flatten(1).norm(dim=1) > 0).all())  # every layer
    assert all(p.grad is None for p in tiny_backbone.parameters())  # the backbone stays frozen


def test_deep_prompts_replace_the_previous_layers_prompt_tokens(tiny_backbone):
    tuner = vpt(tiny_backbone, n_tokens=3, mode="deep")
    blocks = vp.vit_tower(tiny_backbone).transformer.resblocks
    seen: list[torch.Tensor] = []
    handles = [b.register_forward_pre_hook(lambda _m, a: seen.append(a[0])) for b in blocks]
    try:
        with torch.no_grad():
            tuner.encode_images(tiny_backbone, pixels(2))
    finally:
        for handle in handles:
            handle.remove()
    patches = 16  # 32 px / 8 px patches, squared
    assert [tuple(s.shape) for s in seen] == [(2, 1 + patches + 3, 64)] * 2  # replaced, not added
    expected = tuner.visual.prompts[1].expand(2, -1, -1)
    torch.testing.assert_close(seen[1][:, -3:], expected, rtol=0, atol=0)


def test_gradient_checkpointing_is_used_and_changes_nothing(tiny_backbone, monkeypatch):
    calls = []
    original = vp.torch_checkpoint.checkpoint

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(vp.torch_checkpoint, "checkpoint", counting)
    plain = vpt(tiny_backbone, n_tokens=4, mode="deep")
    checkpointed = vpt(tiny_backbone, n_tokens=4, mode="deep", gradient_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = pixels()
    grads = []
    for tuner in (plain, checkpointed):
        out = tuner.encode_images(tiny_backbone, x)
        grads.append(torch.autograd.grad(out.square().sum(), [tuner.visual.prompts])[0])
    assert len(calls) == 2  # one per block, only for the checkpointed tuner
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        checkpointed.encode_images(tiny_backbone, x)
    assert len(calls) == 2  # nothing to recompute without gradients


def test_fixed_text_prompts_are_the_zero_shot_classifier(tiny_backbone):
    chain = make_chain(num_steps=2)
    zero_shot = CoTPipeline.create(backbone=tiny_backbone, tuner="coop")
    zero_shot.set_classes(LABELS, chain)
    untuned = CoTPipeline.create(backbone=tiny_backbone, tuner="vpt", tuner_config={"n_tokens": 0})
    untuned.set_classes(LABELS, chain)
    x = pixels()
    torch.testing.assert_close(
        untuned.logits(x), zero_shot.logits(x, zero_shot=True), rtol=1e-6, atol=1e-5
    )
    text = untuned.tuner.encode_text(tiny_backbone, None)
    assert text.shape == (1, 2, len(LABELS), 64)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(1, 2, len(LABELS)))
    steps = vpt(tiny_backbone, chain, n_tokens=0, text="steps", text_prefix="a photo of a")
    expected = F.normalize(
        tiny_backbone.encode_texts([f"a photo of a {c}, step 1." for c in LABELS])
    )
    torch.testing.assert_close(steps.encode_text(tiny_backbone, None)[0, 1], expected)


def test_coupled_visual_prompts_are_a_projection_of_the_text_context(tiny_backbone):
    tuner = MultimodalTuner(
        MultimodalConfig.model_validate(
            {"text": {"name": "cotpt"}, "visual": {"mode": "deep"}, "couple": True}
        )
    )
    tuner.bind(tiny_backbone, make_chain(num_steps=2))
    names = {name for name, _ in tuner.named_parameters()}
    assert "visual.prompts" not in names and "visual.coupling.1.weight" in names
    assert tuner.image_conditioned and tuner.tunes_image_encoder
    assert tuner.config.text.config["ctx_init"] == "a photo of a"  # full options recorded
    context = torch.cat([tuner.text.ctx[0], tuner.text.ctx[1]])  # [K * n_ctx, W] = [8, 64]
    prompts = tuner.visual.layer_prompts(2, tuner.text_context())
    assert len(prompts) == 2 and prompts[0].shape == (2, 8, 64)
    torch.testing.assert_close(prompts[1][0], tuner.visual.coupling[1](context))
    features = tuner.encode_images(tiny_backbone, pixels(2))
    text = tuner.encode_text(tiny_backbone, F.normalize(features, dim=-1))
    assert text.shape == (2, 2, len(LABELS), 64)
    grad = torch.autograd.grad(features.sum(), [tuner.text.ctx[0]])[0]
    assert float(grad.abs().sum()) > 0  # the image side trains the text context


def test_configuration_errors(tiny_backbone):
    registry = get_registry()
    with pytest.raises(ConfigError, match=r"mode='shallow'.*depth=2"):
        registry.create("tuner", "vpt", {"depth": 2})
    with pytest.raises(ConfigError, match=r"depth=5.*has 2 layers"):
        vpt(tiny_backbone, mode="deep", depth=5)
    with pytest.raises(ConfigError, match="text tuner 'vpt' tunes the image encoder"):
        registry.create("tuner", "multimodal", {"text": {"name": "vpt"}})
    with pytest.raises(UnknownComponentError, match="coopp"):
        registry.create("tuner", "multimodal", {"text": {"name": "coopp"}})
    specific = registry.create(
        "tuner", "multimodal", {"text": {"config": {"class_specific": True}}, "couple": True}
    )
    with pytest.raises(ConfigError, match="unified text context"):
        specific.bind(tiny_backbone, make_chain())
    mismatch = registry.create(
        "tuner",
        "multimodal",
        {"text": {"config": {"n_ctx": 4}}, "visual": {"n_tokens": 6}, "couple": True},
    )
    with pytest.raises(ConfigError, match=r"4 text context vectors.*n_tokens=6"):
        mismatch.bind(tiny_backbone, make_chain())


def test_a_non_vit_image_tower_fails_clearly_at_bind():
    from open_clip.modified_resnet import ModifiedResNet

    resnet = ModifiedResNet(layers=(1, 1, 1, 1), output_dim=64, heads=2, image_size=32, width=8)
    backbone = SimpleNamespace(
        model=SimpleNamespace(visual=resnet), config=SimpleNamespace(model_name="RN50-like")
    )
    with pytest.raises(ConfigError, match="RN50-like has a ModifiedResNet image tower"):
        VPTTuner().bind(backbone, make_chain())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs an open_clip backbone"):
        VPTTuner().bind(SimpleNamespace(), make_chain())  # type: ignore[arg-type]


# -- end to end on real images ---------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar(shared_data: Path):
    root = shared_data / "cifar10-mini"
    labels = list(range(NUM_CLASSES))
    return few_shot(subsample_classes(from_folder(root / "train"), labels), SHOTS, seed=1)


@pytest.fixture(scope="module")
def untuned_accuracy(cifar, tiny_backbone) -> float:
    """The untuned pipeline: frozen image encoder, zero-shot sentences."""
    pipeline = CoTPipeline.create(
        backbone=tiny_backbone, tuner="vpt", tuner_config={"enabled": False}
    )
    return pipeline.evaluate(cifar).accuracy


def _train(tiny_backbone, cifar, tuner: str, tuner_config: dict[str, Any], epochs: int):
    torch.manual_seed(0)
    pipeline = CoTPipeline.create(
        backbone=tiny_backbone,
        tuner=tuner,
        tuner_config=tuner_config,
        training={**TRAINING, "epochs": epochs},
    )
    return pipeline, pipeline.fit(cifar)


@pytest.fixture(scope="module")
def trained_vpt(cifar, tiny_backbone, tmp_path_factory):
    calls: list[int] = []
    original = vp.torch_checkpoint.checkpoint

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vp.torch_checkpoint, "checkpoint", counting)
        options = {"mode": "deep", "gradient_checkpointing": True}
        pipeline, result = _train(tiny_backbone, cifar, "vpt", options, epochs=30)
    directory = pipeline.save_pretrained(tmp_path_factory.mktemp("vpt") / "artifact")
    return pipeline, result, len(calls), directory


def _check_trained(pipeline, result, cifar, untuned_accuracy: float) -> None:
    assert not result.features_cached  # the image encoder is tuned: pixels every step
    assert result.history[-1]["loss"] < result.history[0]["loss"] - 0.05
    tuned = pipeline.evaluate(cifar).accuracy
    assert tuned >= max(1.5 * untuned_accuracy, untuned_accuracy + 10), (tuned, untuned_accuracy)


def _check_round_trip(pipeline, directory: Path, cifar, tiny_backbone) -> None:
    loaded = CoTPipeline.from_pretrained(directory, backbone=tiny_backbone)
    images = [record.path for record in cifar.records[::8]]
    torch.testing.assert_close(loaded.logits(images), pipeline.logits(images), rtol=0, atol=0)


@pytest.mark.slow
def test_vpt_trains_on_pixels_beats_untuned_and_round_trips(
    trained_vpt, cifar, untuned_accuracy, tiny_backbone
):
    pipeline, result, checkpoint_calls, directory = trained_vpt
    _check_trained(pipeline, result, cifar, untuned_accuracy)
    assert checkpoint_calls >= result.global_step * 2  # every block of every training step
    weights = json.loads((directory / "cotprompt_config.json").read_text())["weights"]
    assert weights["tensors"]["tuner.visual.prompts"]["shape"] == [2, 8, 64]
    _check_round_trip(pipeline, directory, cifar, tiny_backbone)


def _edit_depth(directory: Path, depth: int) -> None:
    path = directory / "cotprompt_config.json"
    config = json.loads(path.read_text())
    config["tuner"]["config"]["depth"] = depth
    path.write_text(json.dumps(config))


@pytest.mark.slow
def test_saved_vpt_with_a_mismatching_layer_count_fails_clearly(
    trained_vpt, tiny_backbone, tmp_path
):
    import shutil

    _pipeline, _result, _calls, directory = trained_vpt
    too_deep = shutil.copytree(directory, tmp_path / "too-deep")
    _edit_depth(too_deep, 12)
    with pytest.raises(ConfigError, match=r"depth=12 .* has 2 layers"):
        CoTPipeline.from_pretrained(too_deep, backbone=tiny_backbone)
    shallower = shutil.copytree(directory, tmp_path / "shallower")
    _edit_depth(shallower, 1)
    with pytest.raises(
        ArtifactError, match=r"tuner.visual.prompts: shape \[2, 8, 64\].*\[1, 8, 64\]"
    ):
        CoTPipeline.from_pretrained(shallower, backbone=tiny_backbone)


@pytest.mark.slow
def test_multimodal_coop_trains_beats_untuned_and_round_trips(
    cifar, untuned_accuracy, tiny_backbone, tmp_path
):
    options = {
        "text": {"name": "coop", "config": {"n_ctx": 4}},
        "visual": {"mode": "deep"},
        "couple": True,
    }
    pipeline, result = _train(tiny_backbone, cifar, "multimodal", options, epochs=60)
    _check_trained(pipeline, result, cifar, untuned_accuracy)
    directory = pipeline.save_pretrained(tmp_path / "multimodal")
    names = set(json.loads((directory / "cotprompt_config.json").read_text())["weights"]["tensors"])
    assert {"tuner.text.ctx.0", "tuner.visual.coupling.0.weight"} <= names
    _check_round_trip(pipeline, directory, cifar, tiny_backbone)


@pytest.mark.slow
def test_zero_shot_uses_the_frozen_image_encoder(trained_vpt, cifar, untuned_accuracy):
    pipeline = trained_vpt[0]
    assert pipeline.evaluate(cifar, zero_shot=True).accuracy == pytest.approx(untuned_accuracy)
    images = [record.path for record in cifar.records[::16]]
    frozen = F.normalize(
        pipeline.backbone.encode_images(
            torch.stack(
                [pipeline.backbone.image_transform()(r.load()) for r in cifar.records[::16]]
            )
        ).float(),
        dim=-1,
    )
    torch.testing.assert_close(
        pipeline.logits(images, zero_shot=True), pipeline.zero_shot_logits(frozen)
    )


def test_validation_re_encodes_images_when_the_image_encoder_is_tuned(tiny_backbone, cifar):
    pipeline = CoTPipeline.create(backbone=tiny_backbone, tuner="vpt")
    val = cifar.subset(list(range(0, len(cifar), 8)))
    result = pipeline.fit(val, val=val, training={**TRAINING, "epochs": 3})
    assert result.history[-1]["val_accuracy"] == pytest.approx(pipeline.evaluate(val).accuracy)
