"""accelerate used fully (issue 15): gradient accumulation (the same weights as the larger batch,
resumable), DeepSpeed's launcher accumulation steps unless the options set them, and experiment
trackers (hyperparameters that tell runs apart, one log per epoch, closed also on failure;
missing packages and unknown names refused before any work)."""

from __future__ import annotations

import pytest
import torch
from accelerate.tracking import GeneralTracker
from test_training import CLASSES, Interrupt, colour_dataset, trained_state

from cotprompt import CoTPipeline
from cotprompt.errors import ConfigError, TrainingError
from cotprompt.training.accelerator import accumulation_steps, hyperparameters, make_accelerator
from cotprompt.training.checkpoint import list_checkpoints
from cotprompt.training.config import TrainingConfig, default_num_workers, merge_training

#: 18 images: batches of 8 are 8, 8, 2; batches of 4 are 4, 4, 4, 4, 2, so that accumulating
#: two of them also ends each epoch with a short step (one batch of 2).
DATA_PER_CLASS = 6


@pytest.fixture(autouse=True)
def _fresh_accelerate_state(monkeypatch):
    from accelerate.state import AcceleratorState

    monkeypatch.delenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", raising=False)
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def options(**overrides) -> dict:
    # mean losses, no dropout, frozen features: a batch's gradient is the mean of its halves'
    base = dict(optimizer="sgd", lr=0.05, momentum=0.9, epochs=3, batch_size=8, augment=False,
                progress=False, warmup_epochs=1, seed=3)
    return {**base, **overrides}


def coop(backbone, start=None) -> CoTPipeline:
    pipeline = CoTPipeline.for_method("coop", backbone=backbone, class_names=CLASSES)
    if start is not None:
        with torch.no_grad():
            for name, value in pipeline.model.trainable_state().items():
                value.copy_(start[name])
    return pipeline


def test_two_accumulated_batches_of_4_train_as_batches_of_8(tiny_backbone):
    data = colour_dataset(DATA_PER_CLASS)
    reference = coop(tiny_backbone)
    start = trained_state(reference)
    large = reference.fit(data, training=options(batch_size=8))
    expected = trained_state(reference)

    accumulated = coop(tiny_backbone, start)
    result = accumulated.fit(data, training=options(batch_size=4, gradient_accumulation_steps=2))
    assert result.global_step == large.global_step == 9  # optimiser steps: 3 per epoch
    for name, value in trained_state(accumulated).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6)
        assert not torch.equal(value, start[name])
    assert accumulated.training.gradient_accumulation_steps == 2

    plain = coop(tiny_backbone, start)  # the same batches without accumulation: other weights
    plain.fit(data, training=options(batch_size=4))
    assert any(not torch.allclose(value, expected[name], rtol=1e-3)
               for name, value in trained_state(plain).items())


def test_resume_with_accumulation_reaches_the_uninterrupted_result(tiny_backbone, tmp_path):
    data = colour_dataset(DATA_PER_CLASS)
    settings = options(batch_size=4, gradient_accumulation_steps=2, checkpoint_every=2)
    reference = coop(tiny_backbone)
    start = trained_state(reference)
    uninterrupted = reference.fit(data, training={**settings,
                                                  "checkpoint_dir": str(tmp_path / "a")})
    expected = trained_state(reference)

    def stop_at_step_5(info):
        if info.global_step == 5:  # mid-epoch 2 (3 steps per epoch), after checkpoint 4
            raise Interrupt

    interrupted = coop(tiny_backbone, start)
    config = {**settings, "checkpoint_dir": str(tmp_path / "b")}
    with pytest.raises(Interrupt):
        interrupted.fit(data, training=config, callbacks=[stop_at_step_5])
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["checkpoint-2", "checkpoint-4"]

    resumed = coop(tiny_backbone)
    result = resumed.fit(data, training=config, resume_from="latest")
    assert result.global_step == uninterrupted.global_step == 9
    assert [h["loss"] for h in result.history] == pytest.approx(
        [h["loss"] for h in uninterrupted.history], rel=1e-6)
    for name, value in trained_state(resumed).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-7)

    other = coop(tiny_backbone)  # another accumulation is another run
    with pytest.raises(TrainingError, match="gradient_accumulation_steps"):
        other.fit(data, training={**config, "gradient_accumulation_steps": 3},
                  resume_from="latest")


@pytest.mark.parametrize("value", [0, -2, "two", 1.5])
def test_bad_accumulation_steps_are_refused_in_one_line(tiny_backbone, value):
    pipeline = coop(tiny_backbone)
    with pytest.raises(ConfigError, match="gradient_accumulation_steps") as caught:
        pipeline.fit(colour_dataset(1), training=options(gradient_accumulation_steps=value))
    assert "\n" not in str(caught.value)


def launcher_env(monkeypatch, *flags: str, deepspeed: bool = False) -> None:
    """Set the environment ``accelerate launch <flags> train.py`` gives the script, as
    accelerate's own launcher prepares it (DeepSpeed's or the plain one)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import (
        prepare_deepspeed_cmd_env,
        prepare_simple_launcher_cmd_env,
    )

    args = launch_command_parser().parse_args(
        [*flags, "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1", "train.py"])
    if deepspeed:
        args, _, _ = _validate_launch_command(args)
        args.deepspeed_fields_from_accelerate_config = ""  # as accelerate's launch_command sets
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        args, _, _ = _validate_launch_command(args)
        _, env = prepare_simple_launcher_cmd_env(args)
    for name, value in env.items():
        if name.startswith("ACCELERATE_"):
            monkeypatch.setenv(name, value)


def test_only_deepspeeds_launcher_sets_the_accumulation_steps(monkeypatch):
    # a plain (CPU, multi-GPU) launch does not pass --gradient_accumulation_steps on
    launcher_env(monkeypatch, "--cpu", "--gradient_accumulation_steps", "3")
    assert make_accelerator(TrainingConfig()).gradient_accumulation_steps == 1
    launcher_env(monkeypatch, "--use_deepspeed", "--gradient_accumulation_steps", "3",
                 deepspeed=True)
    assert accumulation_steps(None) == 3
    assert accumulation_steps(2) == 2  # the options' value wins


@pytest.mark.parametrize(("name", "value"), [
    ("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "0"),
    ("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "\u00b2"),  # a digit int() refuses
    ("LOCAL_WORLD_SIZE", "\u00b2"),
    ("LOCAL_WORLD_SIZE", "two"),
])
def test_bad_launcher_variables_are_refused_in_one_line_naming_them(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    monkeypatch.setattr("cotprompt.training.config.start_method", lambda: "fork")
    with pytest.raises(ConfigError, match=f"environment variable {name}=") as caught:
        accumulation_steps(None)
        default_num_workers()
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("option", ["project_dir", "checkpoint_dir", "feature_cache_dir"])
@pytest.mark.parametrize("value", ["", "  "])
def test_blank_folders_are_refused(option, value):
    # "" would write into the working folder (./cotprompt/ then shadows the package)
    with pytest.raises(ConfigError, match=f"{option}: must be a folder path"):
        merge_training(TrainingConfig(), {option: value})


# -- trackers ------------------------------------------------------------------------------------


class RecordingTracker(GeneralTracker):
    """A custom accelerate tracker keeping what it is given."""

    name = "recording"
    requires_logging_directory = False

    def __init__(self) -> None:
        super().__init__()
        self.config: dict | None = None
        self.logs: list[tuple[dict, int | None]] = []
        self.finished = 0

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values: dict) -> None:
        self.config = dict(values)

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.logs.append((dict(values), step))

    def finish(self) -> None:
        self.finished += 1


def test_a_custom_tracker_gets_the_hyperparameters_and_one_log_per_epoch(tiny_backbone):
    tracker = RecordingTracker()
    pipeline = coop(tiny_backbone)
    result = pipeline.fit(colour_dataset(2), training=options(epochs=2, log_with=[tracker]))
    assert tracker.config is not None
    assert tracker.config["lr"] == 0.05 and tracker.config["batch_size"] == 8
    assert "max_grad_norm" not in tracker.config  # TensorBoard takes no None: left out
    assert tracker.config["gradient_accumulation_steps"] == 1  # the one the run used
    assert tracker.config["precision"] == "fp32"  # the one the run used, not "auto"
    assert "log_with" not in tracker.config and "progress" not in tracker.config
    assert [step for _, step in tracker.logs] == [1, 2]
    for (values, _), record in zip(tracker.logs, result.history, strict=True):
        assert values == {k: v for k, v in record.items() if k != "epoch"}
    assert tracker.finished == 1
    assert "log_with" not in pipeline.artifact_config()["training"]  # never saved


def test_the_hyperparameters_tell_the_components_of_two_runs_apart(tiny_backbone):
    seen = []
    for n_ctx in (2, 4):
        tracker = RecordingTracker()
        pipeline = CoTPipeline.create(backbone=tiny_backbone, tuner="coop",
                                      tuner_config={"n_ctx": n_ctx}, class_names=CLASSES)
        pipeline.fit(colour_dataset(1), training=options(
            epochs=1, log_with=[tracker], tracker_config={"data": {"shots": 1, "seed": 5}}))
        seen.append(tracker.config)
    first, second = seen
    assert first["tuner"] == "coop" and first["backbone"] == "open_clip"
    assert first["backbone.model_name"] == tiny_backbone.config.model_name
    assert "backbone.pretrained" not in first  # None: left out
    assert (first["tuner.n_ctx"], second["tuner.n_ctx"]) == (2, 4)
    assert first["aggregator"] and first["generator"] == "rule-based"
    assert first["data.shots"] == 1 and first["data.seed"] == 5
    assert all(isinstance(v, (bool, int, float, str)) for v in first.values())


def test_trackers_are_closed_when_the_run_fails(tiny_backbone):
    tracker = RecordingTracker()

    def stop(info):
        raise Interrupt

    with pytest.raises(Interrupt):
        coop(tiny_backbone).fit(colour_dataset(2), training=options(log_with=[tracker]),
                                callbacks=[stop])
    assert tracker.finished == 1 and tracker.logs == []


def test_tensorboard_writes_event_files_under_project_dir(tiny_backbone, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install "
                                              "tensorboard) to check the tensorboard tracker")
    coop(tiny_backbone).fit(colour_dataset(2), training=options(
        epochs=2, log_with="tensorboard", project_dir=str(tmp_path / "runs")))
    events = list((tmp_path / "runs").rglob("events.out.tfevents.*"))
    assert events, sorted(tmp_path.rglob("*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = set()
    for path in events:
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        scalars |= set(accumulator.Tags()["scalars"])
    assert {"loss", "lr"} <= scalars


def test_each_run_logs_to_a_folder_and_name_of_its_own(tiny_backbone, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install "
                                              "tensorboard) to check the tensorboard tracker")
    from datetime import datetime, timezone

    import cotprompt.training.accelerator as accelerator_module

    moment = datetime(2026, 11, 30, 9, 45, 12, tzinfo=timezone.utc)

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return moment

    monkeypatch.setattr(accelerator_module, "datetime", Clock)  # two runs in the same second
    runs = tmp_path / "runs"
    for _ in range(2):  # the same seed, the same project_dir
        coop(tiny_backbone).fit(colour_dataset(2), training=options(
            epochs=1, log_with="tensorboard", project_dir=str(runs)))
    folders = sorted(p.name for p in runs.iterdir())
    assert folders == ["20261130-094512-seed3", "20261130-094512-seed3-2"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for folder in folders:  # TensorBoard shows two runs, each with its own one epoch's loss
        losses = []
        for path in (runs / folder).rglob("events.out.tfevents.*"):
            events = EventAccumulator(str(path))
            events.Reload()
            if "loss" in events.Tags()["scalars"]:
                losses += events.Scalars("loss")
        assert [event.step for event in losses] == [1]


def test_wandb_and_mlflow_runs_are_named_as_the_run(tiny_backbone, monkeypatch):
    from accelerate import Accelerator

    given = {}

    def init_trackers(self, project_name, config=None, init_kwargs=None):
        given.update(project=project_name, kwargs=init_kwargs)

    monkeypatch.setattr(Accelerator, "init_trackers", init_trackers)
    coop(tiny_backbone).fit(colour_dataset(1), training=options(
        epochs=1, log_with=[RecordingTracker()]))
    name = given["kwargs"]["wandb"]["name"]
    assert given["project"] == "cotprompt" and name.endswith("-seed3")
    assert given["kwargs"]["mlflow"] == {"run_name": name}
    coop(tiny_backbone).fit(colour_dataset(1), training=options(
        epochs=1, log_with=[RecordingTracker()], tracker_project="pets", run_name="coop-16"))
    assert given["project"] == "pets"
    assert given["kwargs"] == {"wandb": {"name": "coop-16"}, "mlflow": {"run_name": "coop-16"}}


def test_a_resumed_run_goes_on_under_its_tracker_name(tiny_backbone, tmp_path, monkeypatch):
    import json
    from datetime import datetime, timedelta, timezone

    from accelerate import Accelerator

    import cotprompt.training.accelerator as accelerator_module

    ticks = iter(range(100))

    class Clock(datetime):  # every run starts a minute after the last
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc) + timedelta(
                minutes=next(ticks))

    names = []

    def init_trackers(self, project_name, config=None, init_kwargs=None):
        names.append(init_kwargs["wandb"]["name"])

    monkeypatch.setattr(accelerator_module, "datetime", Clock)
    monkeypatch.setattr(Accelerator, "init_trackers", init_trackers)
    folder = tmp_path / "checkpoints"
    config = options(epochs=2, checkpoint_every=1, checkpoint_dir=str(folder),
                     log_with=[RecordingTracker()], project_dir=str(tmp_path / "runs"))

    def stop(info):
        raise Interrupt

    with pytest.raises(Interrupt):
        coop(tiny_backbone).fit(colour_dataset(2), training=config, callbacks=[stop])
    first = folder / "checkpoint-1"
    result = coop(tiny_backbone).fit(colour_dataset(2), training=config, resume_from="latest")
    assert result.global_step == 2
    assert names == ["20261130-090000-seed3"] * 2  # not a new run a minute later
    coop(tiny_backbone).fit(colour_dataset(2), training={**config, "run_name": "coop-16"},
                            resume_from=first)
    assert names[-1] == "coop-16"  # a name set is used as it is

    meta = json.loads((first / "state.json").read_text())
    (first / "state.json").write_text(json.dumps({**meta, "run_name": ".."}))
    with pytest.raises(TrainingError, match="'run_name' must be a name"):
        coop(tiny_backbone).fit(colour_dataset(2), training=config, resume_from=first)


@pytest.mark.parametrize("option", ["tracker_project", "run_name"])
def test_tracker_names_must_be_names(option):
    # the name is a folder under project_dir: no "..", hidden folders or invisible spaces
    for value in ("", "a/b", "a\\b", "..", ".", ".hidden", " run", "run ", "a b", "x" * 129):
        with pytest.raises(ConfigError, match=f"{option}: must be a name") as caught:
            merge_training(TrainingConfig(), {option: value})
        assert "\n" not in str(caught.value)
    for value in ("coop-16", "run_1.2", "x" * 128):
        assert getattr(merge_training(TrainingConfig(), {option: value}), option) == value


def test_tracker_config_cannot_replace_the_runs_own_values(tiny_backbone):
    with pytest.raises(ConfigError, match="'lr', 'seed' would replace") as caught:
        hyperparameters(TrainingConfig(tracker_config={"lr": 5, "seed": "x", "data": 1}))
    assert "\n" not in str(caught.value)
    components = {"tuner": {"name": "coop", "config": {"n_ctx": 2}}}
    for extra in ({"tuner": "mine"}, {"tuner": {"n_ctx": 9}}, {"precision": "fp64"}):
        with pytest.raises(ConfigError, match="tracker_config"):
            hyperparameters(TrainingConfig(tracker_config=extra), components=components,
                            precision="fp32")
    tracker = RecordingTracker()  # refused before training, whether an option or a component
    for extra in ({"batch_size": 1}, {"tuner.n_ctx": 9}):
        with pytest.raises(ConfigError, match="tracker_config"):
            coop(tiny_backbone).fit(colour_dataset(1), training=options(
                log_with=[tracker], tracker_config=extra))
    assert tracker.config is None and tracker.logs == []


def test_a_tracker_that_writes_files_needs_project_dir():
    pytest.importorskip("tensorboard", reason="tensorboard is not installed")
    with pytest.raises(ConfigError, match="set project_dir"):
        make_accelerator(TrainingConfig(log_with="tensorboard"))


def test_cotprompt_train_checks_trackers_before_the_data_and_logs_its_data_section(
        tmp_path, monkeypatch, capsys, tiny_backbone):
    import accelerate.tracking
    import yaml
    from accelerate import Accelerator
    from PIL import Image

    from cotprompt.cli.app import main

    for i, name in enumerate(CLASSES[:2]):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (100 * i, 50, 0)).save(tmp_path / "data" / name / "0.png")
    config = {"backbone": {"name": "open_clip", "config": {
                  "model_name": tiny_backbone.config.model_name, "pretrained": None}},
              "tuner": {"name": "coop", "config": {"n_ctx": 2}},
              "training": {"epochs": 1, "batch_size": 2, "progress": False,
                           "log_with": ["comet_ml"]},
              "data": {"format": "folder", "train": "absent", "shots": None,
                       "dataset_name": "toy"},
              "output": str(tmp_path / "out")}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    available = accelerate.tracking.get_available_trackers
    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    assert main(["train", "--config", str(path), "-q"]) == 2
    assert "pip install comet-ml" in capsys.readouterr().err  # not the absent data first

    given = {}

    def init_trackers(self, project_name, config=None, init_kwargs=None):
        given.update(config)

    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install "
                                              "tensorboard) to check what cotprompt train logs")
    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", available)
    monkeypatch.setattr(Accelerator, "init_trackers", init_trackers)
    config["training"].update(log_with=["tensorboard"], project_dir=str(tmp_path / "runs"))
    config["data"]["train"] = str(tmp_path / "data")
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path), "-q", "--seed", "4"]) == 0
    assert given["data.format"] == "folder" and given["data.dataset_name"] == "toy"
    assert given["data.seed"] == 4 and given["seed"] == 4 and given["tuner.n_ctx"] == 2


def test_a_missing_tracker_package_is_refused_before_training(tiny_backbone, monkeypatch):
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    pipeline = coop(tiny_backbone)
    before = trained_state(pipeline)
    with pytest.raises(ConfigError, match="pip install comet-ml") as caught:
        pipeline.fit(colour_dataset(1), training=options(log_with=["comet_ml"]))
    assert "\n" not in str(caught.value)
    for name, value in trained_state(pipeline).items():
        assert torch.equal(value, before[name])


def test_an_unknown_tracker_name_is_refused_with_the_closest_one(tiny_backbone):
    with pytest.raises(ConfigError, match="did you mean 'tensorboard'"):
        coop(tiny_backbone).fit(colour_dataset(1), training=options(log_with="tensorbord"))
    with pytest.raises(ConfigError, match="tracker names"):
        merge_training(TrainingConfig(), {"log_with": [{"type": "wandb"}]})  # no objects from files


def test_hyperparameters_are_flat_scalars():
    values = hyperparameters(TrainingConfig(
        checkpoint_dir="/tmp/x", log_with="wandb", tracker_project="p", run_name="r",
        tracker_config={"data": {"format": "folder", "shots": None, "extra": {}}, "tags": [1]}),
        precision="bf16")
    assert all(isinstance(v, (bool, int, float, str)) for v in values.values())
    assert "checkpoint_dir" not in values and "log_with" not in values
    assert not {"tracker_project", "run_name", "tracker_config"} & set(values)
    assert values["precision"] == "bf16" and values["data.format"] == "folder"
    assert "data.shots" not in values and "data.extra" not in values
    assert values["tags"] == "[1]"  # lists as JSON text


def test_project_dir_in_a_config_file_starts_from_its_folder(tmp_path, monkeypatch):
    from cotprompt.pipeline.config_files import load_pipeline_config

    folder = tmp_path / "configs"
    folder.mkdir()
    path = folder / "c.yaml"
    path.write_text("training: {log_with: [tensorboard], project_dir: runs}\n")
    monkeypatch.chdir(tmp_path)
    config = load_pipeline_config(path)
    assert config.training.project_dir == str(folder / "runs")
    assert config.training.log_with == ["tensorboard"]
