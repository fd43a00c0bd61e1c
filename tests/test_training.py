"""Training loop: checkpoints and resume, NaN losses, data checks, augmentation path."""

from __future__ import annotations

import itertools
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from cotprompt import CoTPipeline
from cotprompt.data import ImageClassificationDataset, ImageRecord
from cotprompt.errors import DataError, TrainingError
from cotprompt.training.checkpoint import list_checkpoints
from cotprompt.training.config import TrainingConfig
from cotprompt.training.schedule import epoch_batches, learning_rate

CLASSES = ["red", "green", "blue"]


def colour_dataset(per_class: int = 6, seed: int = 0) -> ImageClassificationDataset:
    """Small real PIL images whose dominant colour is the class."""
    rng = np.random.default_rng(seed)
    records = []
    for label in range(len(CLASSES)):
        for _ in range(per_class):
            pixels = rng.integers(0, 90, size=(32, 32, 3), dtype=np.uint8)
            pixels[..., label] = rng.integers(150, 255, size=(32, 32), dtype=np.uint8)
            records.append(ImageRecord(path=None, label=label, image=Image.fromarray(pixels)))
    return ImageClassificationDataset(records, CLASSES)


def training(tmp_path, **overrides):
    options = dict(
        optimizer="sgd",
        lr=0.05,
        epochs=3,
        batch_size=4,
        augment=False,
        progress=False,
        warmup_epochs=1,
        checkpoint_dir=str(tmp_path / "ckpt"),
        checkpoint_every=2,
        seed=3,
    )
    options.update(overrides)
    return TrainingConfig(**options)


def trained_state(pipeline):
    return {k: v.detach().clone() for k, v in pipeline.model.trainable_state().items()}


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("method", ["coop", "cocoop"])
def test_resume_reaches_the_same_result_as_an_uninterrupted_run(tiny_backbone, tmp_path, method):
    data = colour_dataset()
    reference = CoTPipeline.for_method(method, backbone=tiny_backbone, class_names=CLASSES)
    start = trained_state(reference)
    uninterrupted = reference.fit(data, training=training(tmp_path / "a"))
    expected = trained_state(reference)

    interrupted = CoTPipeline.for_method(method, backbone=tiny_backbone, class_names=CLASSES)
    with torch.no_grad():
        for name, value in interrupted.model.trainable_state().items():
            value.copy_(start[name])

    def stop_at_step_7(info):
        if info.global_step == 7:  # mid-epoch (5 batches per epoch), after checkpoint 6
            raise Interrupt

    config = training(tmp_path / "b")
    with pytest.raises(Interrupt):
        interrupted.fit(data, training=config, callbacks=[stop_at_step_7])
    assert [p.name for p in list_checkpoints(tmp_path / "b" / "ckpt")] == [
        "checkpoint-4",
        "checkpoint-6",
    ]

    resumed = CoTPipeline.for_method(method, backbone=tiny_backbone, class_names=CLASSES)
    result = resumed.fit(data, training=config, resume_from="latest")
    assert result.global_step == uninterrupted.global_step == 15
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    # the epochs before the interruption come from the checkpoint, and the interrupted epoch's
    # mean loss counts the steps done before it too
    assert [h["loss"] for h in result.history] == pytest.approx(
        [h["loss"] for h in uninterrupted.history], rel=1e-6)
    assert [h["lr"] for h in result.history] == [h["lr"] for h in uninterrupted.history]
    for name, value in trained_state(resumed).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-7)


def test_resume_with_other_settings_is_refused(tiny_backbone, tmp_path):
    data = colour_dataset()
    pipeline = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES)
    pipeline.fit(data, training=training(tmp_path, epochs=1))
    with pytest.raises(TrainingError, match="different run"):
        pipeline.fit(data, training=training(tmp_path, epochs=1, lr=0.5), resume_from="latest")
    with pytest.raises(TrainingError, match="no checkpoint to resume from"):
        pipeline.fit(data, training=training(tmp_path / "none", epochs=1), resume_from="latest")


def _spoil_meta(folder, edit):
    import json

    meta = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    edit(meta)
    (folder / "state.json").write_text(json.dumps(meta), encoding="utf-8")


def _spoil_tensors(folder, edit):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "state.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "state.safetensors"))


def _drop_first(tensors, prefix):
    del tensors[next(k for k in sorted(tensors) if k.startswith(prefix))]


def _reshape_first(tensors, prefix):
    key = next(k for k in sorted(tensors) if k.startswith(prefix) and tensors[k].numel() > 1)
    tensors[key] = tensors[key].flatten()[:-1].clone()


@pytest.mark.parametrize(
    ("spoil", "says"),
    [
        (lambda f: _spoil_meta(f, lambda m: m.pop("param_groups")), "'param_groups'"),
        (lambda f: _spoil_meta(f, lambda m: m.update(param_groups=[{}])), "params"),
        (lambda f: _spoil_meta(f, lambda m: m.pop("global_step")), "'global_step'"),
        (lambda f: _spoil_meta(f, lambda m: m.update(epoch="one")), "'epoch'"),
        (lambda f: _spoil_meta(f, lambda m: m.update(epoch_losses=5)), "'epoch_losses'"),
        (lambda f: _spoil_tensors(f, lambda t: t.pop("rng.cpu")), "'rng.cpu'"),
        (lambda f: _spoil_tensors(f, lambda t: t.update({"rng.cpu": t["rng.cpu"][:9]})),
         "'rng.cpu'"),
        (lambda f: _spoil_tensors(f, lambda t: _drop_first(t, "param.")), "parameter"),
        (lambda f: _spoil_tensors(f, lambda t: _reshape_first(t, "optim.")), "optim."),
        (lambda f: _spoil_tensors(f, lambda t: _drop_first(t, "optim.")), "optimizer state"),
    ],
    ids=["no-param-groups", "param-group-typed", "no-global-step", "epoch-typed",
         "losses-typed", "no-rng", "rng-typed", "no-parameter", "optim-shape", "no-optim"],
)
def test_a_spoilt_checkpoint_is_refused_before_anything_changes(tiny_backbone, tmp_path, spoil,
                                                                  says):
    import shutil

    data = colour_dataset(per_class=2)
    config = training(tmp_path, optimizer="adamw", epochs=1, warmup_epochs=0)
    pipeline = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES)
    pipeline.fit(data, training=config)
    folder = tmp_path / "spoilt"
    shutil.copytree(list_checkpoints(tmp_path / "ckpt")[-1], folder)
    spoil(folder)

    fresh = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES)
    before = trained_state(fresh)
    with pytest.raises(TrainingError) as excinfo:
        fresh.fit(data, training=config, resume_from=str(folder))
    message = str(excinfo.value)
    assert str(folder) in message and says in message, message
    for name, value in trained_state(fresh).items():
        assert torch.equal(value, before[name]), name


def test_nan_loss_stops_training_and_keeps_parameters(tiny_backbone, tmp_path):
    data = colour_dataset()
    pipeline = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES)
    before = trained_state(pipeline)

    def poison(info):
        if info.global_step == 2:
            with torch.no_grad():
                pipeline.tuner.ctx[0][0, 0] = float("nan")

    with pytest.raises(TrainingError, match=r"loss became nan at epoch 1, step 3"):
        pipeline.fit(data, training=training(tmp_path), callbacks=[poison])
    assert not torch.equal(trained_state(pipeline)["tuner.ctx.0"][1:], before["tuner.ctx.0"][1:])


def test_augmented_training_encodes_images_every_step(tiny_backbone, tmp_path):
    data = colour_dataset(per_class=3)
    pipeline = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES)
    result = pipeline.fit(
        data, training=training(tmp_path, augment=True, epochs=2, checkpoint_dir=None)
    )
    assert not result.features_cached
    assert result.global_step == 6  # 9 images in batches of 4: 3 steps per epoch
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert all(math.isfinite(h["loss"]) and h["loss"] > 0 for h in result.history)


def test_training_lowers_the_loss_raises_accuracy_and_records_every_step(tiny_backbone, tmp_path):
    """CoCoOp on the separable colour task: every step is reported once, each epoch's record
    holds the mean of its steps' losses and its learning rate, the loss falls every epoch, and
    the validation accuracy ends well above the untrained and zero-shot classifiers' (and is the
    accuracy that ``evaluate`` finds)."""
    train, val = colour_dataset(), colour_dataset(seed=1)
    pipeline = CoTPipeline.for_method("cocoop", backbone=tiny_backbone, class_names=CLASSES)
    untrained = pipeline.evaluate(val).accuracy
    zero_shot = pipeline.evaluate(val, zero_shot=True).accuracy
    config = training(tmp_path, optimizer="adamw", warmup_epochs=0, checkpoint_dir=None)
    steps = []
    result = pipeline.fit(train, val=val, training=config, callbacks=[steps.append])

    per_epoch = -(-len(train) // config.batch_size)  # 18 images in batches of 4: 5 steps
    assert result.global_step == len(steps) == config.epochs * per_epoch
    assert [s.global_step for s in steps] == list(range(1, result.global_step + 1))
    assert [s.epoch for s in steps] == [e for e in range(config.epochs) for _ in range(per_epoch)]
    assert [s.lr for s in steps] == [learning_rate(config, s.epoch) for s in steps]
    assert result.features_cached
    history = result.history
    assert [h["epoch"] for h in history] == list(range(1, config.epochs + 1))
    assert [h["lr"] for h in history] == [learning_rate(config, e) for e in range(config.epochs)]
    for record in history:
        losses = [s.loss for s in steps if s.epoch == record["epoch"] - 1]
        assert record["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-12)
        assert math.isfinite(record["loss"])
    assert 0 < sum(h["seconds"] for h in history) <= result.seconds

    losses = [h["loss"] for h in history]
    assert all(later < earlier for earlier, later in itertools.pairwise(losses))
    assert losses[-1] < 0.75 * losses[0] and losses[-1] < math.log(len(CLASSES)) - 0.2
    accuracy = pipeline.evaluate(val).accuracy
    assert history[-1]["val_accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert accuracy >= max(untrained, zero_shot) + 25


def test_empty_class_and_mismatching_classes_are_refused(tiny_backbone, tmp_path):
    data = colour_dataset()
    keep = [i for i, r in enumerate(data.records) if r.label != 2]
    pipeline = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES)
    with pytest.raises(DataError, match="blue"):
        pipeline.fit(data.subset(keep), training=training(tmp_path))
    other = ImageClassificationDataset(data.records, ["rouge", "vert", "bleu"])
    with pytest.raises(DataError, match=r"classes do not match[\s\S]*set_classes"):
        pipeline.fit(other, training=training(tmp_path))


def test_schedule_and_batch_order():
    config = TrainingConfig(epochs=4, lr=0.1, warmup_epochs=1, warmup_lr=1e-5)
    assert learning_rate(config, 0) == 1e-5
    assert learning_rate(config, 1) == pytest.approx(0.05 * (1 + np.cos(np.pi / 4)))
    assert learning_rate(config.model_copy(update={"scheduler": "constant"}), 3) == 0.1
    first = epoch_batches(10, 4, seed=1, epoch=0)
    assert first == epoch_batches(10, 4, seed=1, epoch=0)
    assert first != epoch_batches(10, 4, seed=1, epoch=1)
    assert sorted(i for b in first for i in b) == list(range(10))
    assert [len(b) for b in epoch_batches(10, 4, 1, 0, drop_last=True)] == [4, 4]


def test_fp16_on_cpu_is_refused(tiny_backbone, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("only meaningful without a GPU")
    pipeline = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES)
    with pytest.raises(TrainingError, match=r"fp16.*needs a GPU"):
        pipeline.fit(colour_dataset(), training=training(tmp_path, precision="fp16"))


@pytest.mark.parametrize(("umask", "dir_mode", "file_mode"),
                         [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_checkpoints_follow_the_umask_and_a_resave_keeps_one(tmp_path, umask, dir_mode,
                                                             file_mode):
    from cotprompt.training.checkpoint import TrainingState, list_checkpoints, save_checkpoint

    weights = {"w": torch.nn.Parameter(torch.ones(3))}
    optimizer = torch.optim.SGD(weights.values(), lr=0.1)
    previous = os.umask(umask)
    try:
        for value in (1.0, 2.0):  # the same step saved twice replaces the first
            with torch.no_grad():
                weights["w"].fill_(value)
            folder = save_checkpoint(tmp_path, TrainingState(global_step=5), weights, optimizer,
                                     "fp", keep=2)
    finally:
        os.umask(previous)
    assert list_checkpoints(tmp_path) == [folder]
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]
    assert folder.stat().st_mode & 0o777 == dir_mode
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {file_mode}
    from safetensors.torch import load_file

    saved = load_file(str(folder / "state.safetensors"))["param.w"]
    assert torch.equal(saved, torch.full((3,), 2.0))  # the second save's values, not the first's


def _checkpoint_value(folder) -> float:
    from safetensors.torch import load_file

    return float(load_file(str(folder / "state.safetensors"))["param.w"][0])


def _save_step(directory, value: float):
    from cotprompt.training.checkpoint import TrainingState, save_checkpoint

    weights = {"w": torch.nn.Parameter(torch.full((3,), value))}
    optimizer = torch.optim.SGD(weights.values(), lr=0.1)
    return save_checkpoint(directory, TrainingState(global_step=5), weights, optimizer, "fp",
                           keep=2)


def _fail_second_rename(monkeypatch, action):
    import pathlib

    real, calls = pathlib.Path.rename, []

    def rename(self, target):
        calls.append((self, target))
        if len(calls) == 2:  # final -> set aside, then (here) the new one -> final
            action()
        return real(self, target)

    monkeypatch.setattr(pathlib.Path, "rename", rename)
    return calls


@pytest.mark.parametrize("error", [OSError(5, "Input/output error"), KeyboardInterrupt()])
def test_an_interrupted_checkpoint_resave_keeps_the_old_checkpoint(tmp_path, monkeypatch, error):
    final = _save_step(tmp_path, 1.0)
    with pytest.MonkeyPatch.context() as patch:

        def fail():
            raise error

        calls = _fail_second_rename(patch, fail)
        with pytest.raises(type(error)):
            _save_step(tmp_path, 2.0)
    assert calls[0][0] == final  # the old checkpoint had been set aside
    assert list_checkpoints(tmp_path) == [final]
    assert _checkpoint_value(final) == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]  # no leftovers


def _resave_and_die(directory) -> None:
    import signal

    with pytest.MonkeyPatch.context() as patch:
        _fail_second_rename(patch, lambda: os.kill(os.getpid(), signal.SIGKILL))
        _save_step(directory, 2.0)


def test_a_checkpoint_set_aside_by_a_killed_resave_is_restored(tmp_path):
    import multiprocessing
    import signal

    from cotprompt.training.checkpoint import resolve_checkpoint

    final = _save_step(tmp_path, 1.0)
    child = multiprocessing.get_context("fork").Process(target=_resave_and_die, args=(tmp_path,))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    assert not final.exists()  # killed between the two renames: only the set-aside copy is left
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".old")]
    assert list_checkpoints(tmp_path) == [final]  # restored by the listing
    assert _checkpoint_value(final) == 1.0
    assert resolve_checkpoint("latest", str(tmp_path)) == final
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".old")]
    assert _checkpoint_value(_save_step(tmp_path, 2.0)) == 2.0  # and later saves go on
    assert list_checkpoints(tmp_path) == [final]


def test_task_training_options_update_the_pipelines():
    from types import SimpleNamespace

    from cotprompt.errors import ConfigError
    from cotprompt.training.config import merge_training

    def resolve_training(pipeline, training):  # what CoTPipeline.fit does for every task
        return merge_training(pipeline.training, training)

    pipeline = SimpleNamespace(training=TrainingConfig(optimizer="adamw", lr=0.01, seed=4))
    config = resolve_training(pipeline, {"epochs": 1})
    assert (config.optimizer, config.lr, config.seed, config.epochs) == ("adamw", 0.01, 4, 1)
    assert resolve_training(pipeline, None) is pipeline.training
    other = TrainingConfig(epochs=2)
    assert resolve_training(pipeline, other) is other  # a whole config replaces
    with pytest.raises(ConfigError, match="lr: "):
        resolve_training(pipeline, {"lr": -1})


def test_refusals_to_resume_name_what_differs():
    from cotprompt.training.checkpoint import describe_differences

    assert "older version" in describe_differences(None, {"config": {"lr": 1}})
    saved = {"config": {"lr": 0.1, "epochs": 2}, "labels": ["a"], "shapes": {"tuner.ctx.0": [4]}}
    now = {"config": {"lr": 0.2, "epochs": 2}, "labels": ["a", "b"], "shapes": {}}
    assert describe_differences(saved, now) == (
        'training.lr: 0.1 in the checkpoint, 0.2 now; labels[1]: absent in the checkpoint, "b" '
        "now; shapes.tuner.ctx.0: [4] in the checkpoint, absent now"
    )
    many = {"labels": [f"class {i}" for i in range(100)]}
    renamed = {"labels": [*many["labels"][:-1], "other"]}
    assert describe_differences(many, renamed) == (
        'labels[99]: "class 99" in the checkpoint, "other" now')
