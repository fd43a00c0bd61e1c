"""One seed makes a run repeatable, and a resumed run continues it bit for bit.

- Two processes (each with its own, differently seeded global generator) that train the same
  config end with the same weight checksum: CoOp with random context, CoCoOp, CoT-PT (chained
  meta-nets, adaptive controller) and VPT (prompt dropout), with and without augmentation.
- A run interrupted at random steps (mid-epoch and at epoch boundaries) and resumed from its
  checkpoints ends with the uninterrupted run's weights and history, bit for bit, with the
  default augmentation, SGD or AdamW, and DataLoader workers.
- Partial training options update the pipeline's; a resume with other options names them.

Run as a script (``python tests/test_reproducibility.py CASE...``), this file trains the given
cases in one process and prints their checksums as JSON; the tests start it twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import subprocess
import sys
from typing import Any

import pytest
import torch
from colour_images import CLASSES, colour_dataset

from cotprompt import CoTPipeline
from cotprompt.backbones import TINY_MODEL, OpenCLIPBackbone, OpenCLIPBackboneConfig
from cotprompt.errors import ConfigError, TrainingError
from cotprompt.training.augment import EpochSamples
from cotprompt.training.config import TrainingConfig

#: The cases the two processes train: method and augmentation.
CASES = [f"{method}:{augment}" for method in ("coop", "cocoop", "cotpt", "vpt")
         for augment in ("aug", "plain")]
FAST = {"optimizer": "adamw", "lr": 0.01, "warmup_epochs": 0, "weight_decay": 0.0,
        "scheduler": "constant", "progress": False}


def checksum(pipeline: CoTPipeline) -> str:
    """sha256 over the names and bytes of the trainable tensors."""
    digest = hashlib.sha256()
    for name, value in sorted(pipeline.model.trainable_state().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def build(backbone: OpenCLIPBackbone, method: str, **training: Any) -> CoTPipeline:
    options = {**FAST, "epochs": 2, "batch_size": 4, "seed": 7, **training}
    if method == "vpt":
        return CoTPipeline.create(backbone=backbone, tuner="vpt",
                                  tuner_config={"n_tokens": 2, "dropout": 0.3}, training=options)
    return CoTPipeline.for_method(method, backbone=backbone, training=options)


def train_case(backbone: OpenCLIPBackbone, case: str) -> str:
    method, augment = case.split(":")
    pipeline = build(backbone, method, augment=augment == "aug")
    pipeline.fit(colour_dataset())
    return checksum(pipeline)


def tiny_backbone_() -> OpenCLIPBackbone:
    return OpenCLIPBackbone(OpenCLIPBackboneConfig(model_name=TINY_MODEL, pretrained=None))


def run_cases(cases: list[str]) -> dict[str, str]:
    """Train ``cases`` in a fresh process; their checksums."""
    proc = subprocess.run([sys.executable, __file__, *cases], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- two processes ---------------------------------------------------------------------------------


def test_two_processes_training_the_same_config_give_the_same_weights(tiny_backbone):
    first = subprocess.Popen([sys.executable, __file__, *CASES], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    second = run_cases(list(reversed(CASES)))  # another order: other global generator states
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    first_sums = json.loads(out.strip().splitlines()[-1])
    assert first_sums == second
    # and this process (its global generator seeded by the test fixtures) agrees
    assert train_case(tiny_backbone, "coop:aug") == first_sums["coop:aug"]
    assert len(set(first_sums.values())) == len(CASES)


def test_the_seed_changes_the_run_and_fit_draws_untrained_parameters_again(tiny_backbone):
    data = colour_dataset()
    a = build(tiny_backbone, "cotpt", seed=1, epochs=1)
    a.fit(data)
    b = build(tiny_backbone, "cotpt", seed=2, epochs=1)
    b.fit(data)
    assert checksum(a) != checksum(b)
    # bound at creation with the pipeline's seed 1, trained with seed 2: the run of seed 2
    c = CoTPipeline.for_method("cotpt", backbone=tiny_backbone, class_names=CLASSES,
                               training={**FAST, "epochs": 1, "batch_size": 4, "seed": 1})
    torch.manual_seed(123)  # whatever happens to the global generator in between
    c.fit(data, training={"seed": 2})
    assert checksum(c) == checksum(b)
    assert c.training_data["seed"] == 2 and c.training.seed == 2
    # trained parameters are never drawn again: a second fit continues from them
    before = checksum(c)
    c.fit(data, training={"seed": 3})
    d = build(tiny_backbone, "cotpt", seed=3, epochs=1)
    d.fit(data)
    assert checksum(c) not in (before, checksum(d))


def test_parameter_initialisation_ignores_the_global_generator_and_the_other_component(
        tiny_backbone):
    def bound(aggregator: str) -> CoTPipeline:
        torch.manual_seed(len(aggregator))
        return CoTPipeline.create(backbone=tiny_backbone, generator="rule-based",
                                  generator_config={"preset": "cot"}, tuner="cotpt",
                                  aggregator=aggregator, class_names=CLASSES,
                                  training={"seed": 4})

    adaptive, mean = bound("adaptive"), bound("mean")
    tuner_a = {k: v for k, v in adaptive.model.trainable_state().items() if k.startswith("tuner")}
    tuner_m = mean.model.trainable_state()
    assert tuner_a.keys() == tuner_m.keys()
    assert all(torch.equal(tuner_a[k], tuner_m[k]) for k in tuner_a)


@pytest.mark.parametrize(("tuner", "config"), [
    ("vpt", {"n_tokens": 2}),
    ("multimodal", {"text": {"name": "cocoop"}, "couple": True, "visual": {"mode": "deep"}}),
])
def test_untrained_parameters_are_drawn_again_for_the_runs_seed(tiny_backbone, tuner, config):
    from cotprompt.training.seeding import redraw_untrained

    def bound(seed: int) -> CoTPipeline:
        return CoTPipeline.create(backbone=tiny_backbone, tuner=tuner, tuner_config=config,
                                  aggregator="adaptive", class_names=CLASSES,
                                  training={"seed": seed})

    first, second = bound(1), bound(2)
    assert checksum(first) != checksum(second)
    parameters = dict(first.model.named_parameters())
    first._init_record = redraw_untrained(first.model, first.chain, first._init_record, 2)
    assert first._init_record is not None and first._init_record.seed == 2
    assert checksum(first) == checksum(second)
    assert all(p is parameters[n] for n, p in first.model.named_parameters())  # in place
    with torch.no_grad():  # trained (here: changed) parameters are never drawn again
        next(iter(first.model.trainable_state().values())).add_(1.0)
    assert redraw_untrained(first.model, first.chain, first._init_record, 3) is None


def test_augmentation_is_a_function_of_seed_epoch_and_sample(tiny_backbone):
    data = colour_dataset(per_class=1)
    transform = tiny_backbone.image_transform(train=True)
    samples = EpochSamples(data, transform, seed=5, random=True)
    first = samples[(0, 1)][0]
    torch.manual_seed(99)
    samples[(0, 2)]
    assert torch.equal(samples[(0, 1)][0], first)
    assert not torch.equal(samples[(1, 1)][0], first)
    assert not torch.equal(EpochSamples(data, transform, 6, random=True)[(0, 1)][0], first)
    state = torch.get_rng_state()
    samples[(0, 0)]
    assert torch.equal(torch.get_rng_state(), state)  # the global stream is left alone


# -- resume ----------------------------------------------------------------------------------------


class Interrupt(Exception):
    pass


def history_without_time(result: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in result.history]


@pytest.mark.parametrize(("method", "optimizer", "num_workers"), [
    ("coop", "sgd", 0), ("cocoop", "adamw", 2), ("cotpt", "sgd", 0),
])
def test_a_run_interrupted_at_random_steps_and_resumed_equals_the_uninterrupted_run(
        tiny_backbone, tmp_path, method, optimizer, num_workers):
    data = colour_dataset(per_class=5)  # 15 images, batches of 4: 4 steps per epoch
    options = {"epochs": 3, "batch_size": 4, "augment": True, "optimizer": optimizer,
               "num_workers": num_workers, "seed": 11}
    if optimizer == "sgd":  # CoOp's recipe: warm-up, cosine
        options.update(lr=0.05, warmup_epochs=1, scheduler="cosine", weight_decay=5e-4)
    reference = build(tiny_backbone, method, **options)
    expected = reference.fit(data)
    options.update(checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=1)
    stops = [*sorted(random.Random(f"{method}-{optimizer}").sample(range(1, 12), 3)), None]
    history: list[dict[str, Any]] = []
    for number, stop in enumerate(stops):
        def interrupt(info, stop=stop):
            if info.global_step == stop:
                raise Interrupt

        pipeline = build(tiny_backbone, method, **options)  # a new process would start so
        resume = "latest" if number else None
        if stop is None:
            result = pipeline.fit(data, resume_from=resume)
            history = history_without_time(result)
            assert result.global_step == 12
        else:
            with pytest.raises(Interrupt):
                pipeline.fit(data, resume_from=resume, callbacks=[interrupt])
    assert checksum(pipeline) == checksum(reference), stops
    assert history == history_without_time(expected)


def test_resuming_at_an_epoch_boundary_records_the_epoch_loss(tiny_backbone, tmp_path):
    data = colour_dataset(per_class=4)  # 12 images, batches of 4: 3 steps per epoch
    options = {"epochs": 2, "batch_size": 4, "augment": True, "seed": 3,
               "checkpoint_dir": str(tmp_path / "ckpt"), "checkpoint_every": 1}
    reference = build(tiny_backbone, "coop", **{**options, "checkpoint_dir": None})
    expected = history_without_time(reference.fit(data))

    def stop_at_epoch_end(info):
        if info.global_step == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        build(tiny_backbone, "coop", **options).fit(data, callbacks=[stop_at_epoch_end])
    resumed = build(tiny_backbone, "coop", **options).fit(data, resume_from="latest")
    history = history_without_time(resumed)
    assert not any(math.isnan(h["loss"]) for h in history)
    assert history == expected


def test_a_resume_with_other_options_names_them(tiny_backbone, tmp_path):
    data = colour_dataset(per_class=2)
    options = {"epochs": 1, "batch_size": 4, "augment": False,
               "checkpoint_dir": str(tmp_path / "ckpt"), "checkpoint_every": 1}
    build(tiny_backbone, "coop", **options).fit(data)
    other = build(tiny_backbone, "coop", **{**options, "lr": 0.5, "batch_size": 2})
    with pytest.raises(TrainingError) as caught:
        other.fit(data, resume_from="latest")
    message = str(caught.value)
    assert "different run" in message
    assert "training.lr: 0.01 in the checkpoint, 0.5 now" in message
    assert "training.batch_size: 4 in the checkpoint, 2 now" in message
    assert "epochs" not in message


# -- command line ----------------------------------------------------------------------------------


def test_train_seed_overrides_the_configs_and_is_recorded(tmp_path, capsys):
    from safetensors.torch import load_file

    from cotprompt.cli.app import main

    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "backbone": {"name": "open_clip", "config": {"model_name": TINY_MODEL, "pretrained": None}},
        "tuner": {"name": "coop", "config": {"n_ctx": 4}},
        "training": {**FAST, "epochs": 1, "batch_size": 8, "seed": 1},  # augmentation on
        "data": {"format": "digits", "shots": 2},
    }))

    def train(output: str, *seed: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        code = main(["train", "--config", str(config), "--output", str(tmp_path / output),
                     "--json", "-q", *seed])
        assert code == 0, capsys.readouterr().err
        capsys.readouterr()
        record = json.loads((tmp_path / output / "cotprompt_config.json").read_text())
        return record, load_file(str(tmp_path / output / "prompt_weights.safetensors"))

    record, first = train("a", "--seed", "3")
    _, again = train("b", "--seed", "3")
    _, other = train("c", "--seed", "4")
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
    assert record["training"]["seed"] == 3
    assert record["training_data"]["seed"] == 3 and record["training_data"]["data_seed"] == 3


# -- partial options -------------------------------------------------------------------------------


def test_partial_training_options_update_the_pipelines(tiny_backbone):
    pipeline = CoTPipeline.for_method("coop", backbone=tiny_backbone,
                                      training={"optimizer": "adamw", "lr": 0.01, "seed": 5,
                                                "progress": False, "augment": False})
    pipeline.fit(colour_dataset(per_class=1), training={"epochs": 1})
    used = pipeline.training
    assert (used.optimizer, used.lr, used.seed, used.epochs) == ("adamw", 0.01, 5, 1)
    assert used.warmup_epochs == TrainingConfig().warmup_epochs  # untouched defaults stay
    with pytest.raises(ConfigError, match="lrr: unknown option"):
        pipeline.fit(colour_dataset(per_class=1), training={"lrr": 0.1})


# -- seeds: any allowed seed works; binding touches no other GPU -----------------------------------


def test_every_allowed_seed_derives_valid_generator_seeds():
    from types import SimpleNamespace

    from cotprompt.tasks.retrieval import sample_captions
    from cotprompt.training.schedule import epoch_batches

    captions = SimpleNamespace(captions=[["a", "b"], ["c"], ["d", "e", "f"]])
    for seed in (0, 1, 2**62, 2**63 - 1):
        TrainingConfig(seed=seed)
        order = epoch_batches(10, 4, seed, 3)
        assert sorted(i for batch in order for i in batch) == list(range(10))
        assert order == epoch_batches(10, 4, seed, 3)
        assert order != epoch_batches(10, 4, seed, 4)
        drawn = sample_captions(captions, seed, 3)  # type: ignore[arg-type]
        assert drawn == sample_captions(captions, seed, 3)  # type: ignore[arg-type]
        assert all(0 <= i < len(c) for i, c in zip(drawn, captions.captions, strict=True))
    for bad in (-1, 2**63):
        with pytest.raises((ConfigError, ValueError), match="seed"):
            TrainingConfig(seed=bad)


def test_seeded_init_forks_only_the_cpu_and_the_current_cuda_generator(monkeypatch):
    import contextlib

    from cotprompt.training import seeding

    forked: list[list[int]] = []
    seeded: list[tuple[str, int | None]] = []

    @contextlib.contextmanager
    def fake_fork_rng(devices=None, enabled=True, **kwargs):
        forked.append(list(devices) if devices is not None else ["all"])
        yield

    monkeypatch.setattr(torch.random, "fork_rng", fake_fork_rng)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda s: seeded.append(("all", None)))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda s: seeded.append(("current", None)))
    monkeypatch.setattr(torch.cuda, "init", lambda: seeded.append(("init", None)))
    state = torch.random.get_rng_state()
    try:
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
        with seeding.seeded_init(3, "tuner"):
            pass
        assert forked == [[]] and seeded == []  # CUDA is never initialised by a bind
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        with seeding.seeded_init(3, "tuner"):
            pass
        assert forked == [[], [2]] and seeded == [("current", None)]
    finally:
        torch.random.set_rng_state(state)


def test_redraw_logs_a_record_of_several_seeds(tiny_backbone, caplog):
    import logging

    from cotprompt.training.seeding import InitRecord, redraw_untrained, state_digest

    pipeline = CoTPipeline.create(backbone=tiny_backbone, tuner="coop",
                                  tuner_config={"n_ctx": 2}, class_names=CLASSES,
                                  training={"seed": 1})
    pipeline._init_record = InitRecord(None, state_digest(pipeline.model))  # several seeds
    with caplog.at_level(logging.INFO, logger="cotprompt.training.seeding"):
        assert redraw_untrained(pipeline.model, pipeline.chain, pipeline._init_record, 2)
    assert "drawn with seed None" in caplog.text


if __name__ == "__main__":
    torch.set_num_threads(1)
    backbone = tiny_backbone_()
    print(json.dumps({case: train_case(backbone, case) for case in sys.argv[1:]}))
