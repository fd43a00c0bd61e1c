"""Image loading in worker processes: training, evaluation and prediction give the same results
with any number of workers, training keeps one loader (one set of workers) for the whole run,
``num_workers="auto"`` follows the usable CPUs, and long encoding passes show a progress bar
that ``TQDM_DISABLE`` turns off."""

from __future__ import annotations

import gc
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from colour_images import CLASSES, colour_dataset

import cotprompt.training.config as training_config
import cotprompt.training.loading as loading
from cotprompt import CoTPipeline
from cotprompt.data import ImageClassificationDataset, from_folder
from cotprompt.errors import ConfigError, DataError
from cotprompt.training.config import TrainingConfig, default_num_workers, merge_training

FAST = {"optimizer": "adamw", "lr": 0.01, "warmup_epochs": 0, "weight_decay": 0.0,
        "scheduler": "constant", "progress": False, "batch_size": 4, "seed": 5}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The colour dataset as JPEG files, a folder per class (decoded in the loader)."""
    root = tmp_path_factory.mktemp("colour-jpegs")
    for n, record in enumerate(colour_dataset(per_class=4, size=48).records):
        folder = root / CLASSES[record.label]
        folder.mkdir(exist_ok=True)
        assert record.image is not None
        record.image.save(folder / f"{n:02d}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def images(image_folder: Path) -> ImageClassificationDataset:
    return from_folder(image_folder)


def checksum(pipeline: CoTPipeline) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(pipeline.model.trainable_state().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train(backbone: Any, data: ImageClassificationDataset, **options: Any) -> CoTPipeline:
    pipeline = CoTPipeline.for_method("coop", backbone=backbone,
                                      training={**FAST, "epochs": 2, "augment": True, **options})
    pipeline.fit(data)
    return pipeline


class CountingLoader(torch.utils.data.DataLoader):  # type: ignore[type-arg]
    made = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        type(self).made += 1
        super().__init__(*args, **kwargs)


# -- training ----------------------------------------------------------------------------------


@pytest.mark.loader_workers
def test_augmented_training_gives_the_same_weights_with_any_number_of_workers(
        tiny_backbone: Any, images: ImageClassificationDataset,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "DataLoader", CountingLoader)
    CountingLoader.made = 0
    in_process = checksum(train(tiny_backbone, images, num_workers=0, epochs=3))
    assert CountingLoader.made == 1
    CountingLoader.made = 0
    with_workers = train(tiny_backbone, images, num_workers=2, epochs=3)
    assert CountingLoader.made == 1  # one loader (persistent workers) for the three epochs
    assert not multiprocessing.active_children()  # its workers stopped with the run
    assert checksum(with_workers) == in_process
    assert checksum(train(tiny_backbone, images, num_workers=2, epochs=3)) == in_process
    other_seed = train(tiny_backbone, images, num_workers=2, epochs=3, seed=6)
    assert checksum(other_seed) != in_process  # the checksum does see the augmentation


@pytest.mark.loader_workers
@pytest.mark.parametrize("stop_at", [2, 3])  # mid-epoch; after the first epoch's last batch
def test_an_interrupted_run_stops_its_workers(tiny_backbone: Any,
                                              images: ImageClassificationDataset,
                                              stop_at: int) -> None:
    class Interrupt(Exception):
        pass

    def interrupt(info: Any) -> None:
        if info.global_step == stop_at:
            raise Interrupt

    pipeline = CoTPipeline.for_method("coop", backbone=tiny_backbone,
                                      training={**FAST, "epochs": 2, "num_workers": 2})
    with pytest.raises(Interrupt) as caught:
        pipeline.fit(images, callbacks=[interrupt])
    # the exception (and so its traceback's frames) is kept, as a notebook keeps
    # sys.last_traceback: the workers must stop all the same
    assert caught.value.__traceback__ is not None
    gc.collect()
    assert not multiprocessing.active_children()


@pytest.mark.loader_workers
def test_the_feature_encoding_pass_uses_the_workers(
        tiny_backbone: Any, images: ImageClassificationDataset,
        monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []

    class Recording(torch.utils.data.DataLoader):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(kwargs.get("num_workers", 0))
            super().__init__(*args, **kwargs)

    import cotprompt.training.trainer as trainer

    monkeypatch.setattr(trainer, "DataLoader", Recording)
    train(tiny_backbone, images, augment=False, epochs=1, num_workers=2)
    assert made == [1]  # 12 images: one batch of 64 to encode, so one of the 2 workers


# -- num_workers="auto" ------------------------------------------------------------------------


@pytest.fixture
def fork_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes start by fork (Linux before Python 3.14), where "auto" starts workers."""
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "fork")


@pytest.mark.loader_workers
@pytest.mark.usefixtures("fork_start")
@pytest.mark.parametrize(("cpus", "workers"), [(1, 0), (2, 1), (4, 3), (64, 8)])
def test_auto_workers_follow_the_usable_cpus(monkeypatch: pytest.MonkeyPatch, cpus: int,
                                             workers: int) -> None:
    monkeypatch.setattr(training_config.os, "sched_getaffinity",
                        lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setattr(training_config.os, "cpu_count", lambda: 128)  # not the usable ones
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_num_workers() == workers
    assert TrainingConfig().num_workers == "auto"
    assert TrainingConfig().loader_workers() == workers
    assert TrainingConfig(num_workers=0).loader_workers() == 0  # explicit numbers stay


@pytest.mark.loader_workers
@pytest.mark.usefixtures("fork_start")
def test_auto_workers_share_the_cpus_among_local_training_processes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(training_config.os, "sched_getaffinity", lambda pid: set(range(32)),
                        raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # accelerate launch / torchrun, 8 GPUs
    assert default_num_workers() == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "")
    assert default_num_workers() == 8


@pytest.mark.loader_workers
@pytest.mark.usefixtures("fork_start")
def test_auto_workers_without_sched_getaffinity_count_the_cpus(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(training_config.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(training_config.os, "cpu_count", lambda: 6)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_num_workers() == 5
    monkeypatch.setattr(training_config.os, "cpu_count", lambda: None)  # unknown: one CPU
    assert default_num_workers() == 0


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_auto_workers_are_none_unless_processes_fork(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture,
                                                     method: str) -> None:
    # a spawned worker imports the user's script again: without an `if __name__ ==
    # "__main__":` guard it would fail (macOS, Windows; forkserver: Linux from Python 3.14)
    monkeypatch.setattr(training_config.os, "sched_getaffinity", lambda pid: set(range(4)),
                        raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(training_config, "_LOGGED_START_METHODS", set())
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: method)
    with caplog.at_level("INFO", logger="cotprompt.training.config"):
        assert default_num_workers() == 0
        assert TrainingConfig().loader_workers() == 0
    logged = [r.getMessage() for r in caplog.records if "num_workers='auto'" in r.getMessage()]
    assert len(logged) == 1 and repr(method) in logged[0]  # once, naming the start method
    assert TrainingConfig(num_workers=3).loader_workers() == 3  # explicit numbers stay
    # no start method set yet: the platform's default decides, and reading it fixes nothing
    monkeypatch.setattr(multiprocessing, "get_start_method",
                        lambda allow_none=False: None if allow_none else method)
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: [method, "fork"])
    assert default_num_workers() == 0
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["fork", method])
    assert default_num_workers() == 3


@pytest.mark.parametrize("bad", [-1, True, "many", 1.5, None])
def test_bad_num_workers_are_refused(tiny_backbone: Any, bad: Any) -> None:
    with pytest.raises(ConfigError, match=r"num_workers: .*must be an integer >= 0 or 'auto'"):
        merge_training(TrainingConfig(), {"num_workers": bad})
    pipeline = CoTPipeline.for_method("coop", backbone=tiny_backbone, training=FAST)
    pipeline.set_classes(CLASSES)
    data = colour_dataset(per_class=1)
    with pytest.raises(ConfigError, match="num_workers must be an integer >= 0"):
        pipeline.evaluate(data, num_workers=bad)
    with pytest.raises(ConfigError, match="num_workers must be an integer >= 0"):
        pipeline.predict([r.image for r in data.records], num_workers=bad)


def test_num_workers_from_a_config_file_is_a_number_or_auto() -> None:
    assert merge_training(TrainingConfig(), {"num_workers": "3"}).num_workers == 3
    assert merge_training(TrainingConfig(num_workers=2), {"num_workers": "auto"}).num_workers \
        == "auto"


# -- evaluation and prediction -----------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_backbone: Any, images: ImageClassificationDataset) -> CoTPipeline:
    return train(tiny_backbone, images, num_workers=0, epochs=1)


@pytest.mark.loader_workers
def test_evaluate_and_predict_give_the_same_results_with_workers(
        trained: CoTPipeline, images: ImageClassificationDataset, image_folder: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TQDM_DISABLE", "1")
    first = trained.evaluate(images, batch_size=5, num_workers=0)
    again = trained.evaluate(images, batch_size=5, num_workers=2, pin_memory=False)
    assert again.to_dict() == first.to_dict()
    paths = [str(r.path) for r in images.records]
    broken = image_folder.parent / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    items = [paths[0], str(broken), *paths[1:]]
    expected = trained.predict(items, top_k=2, batch_size=5, on_bad_image="skip")
    assert expected[1] is None
    assert trained.predict(items, top_k=2, batch_size=5, on_bad_image="skip",
                           num_workers=2) == expected
    with pytest.raises(DataError, match=r"broken\.jpg"):
        trained.predict(items, batch_size=5, num_workers=2)


def test_no_more_workers_start_than_there_are_usable_cpus(
        trained: CoTPipeline, images: ImageClassificationDataset,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import warnings

    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setattr(training_config.os, "sched_getaffinity", lambda pid: {0},
                        raising=False)  # also what PyTorch's own check counts
    with caplog.at_level("WARNING", logger="cotprompt.training.loading"):
        assert loading.loader_options(1000, "cpu", num_batches=50)["num_workers"] == 1
    [record] = caplog.records
    assert "num_workers=1000" in record.getMessage() and "usable CPUs" in record.getMessage()
    caplog.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PyTorch warns of more workers than CPUs
        with caplog.at_level("WARNING", logger="cotprompt.training.loading"):
            result = trained.evaluate(images, batch_size=4, num_workers=10**6)
    assert result.to_dict() == trained.evaluate(images, batch_size=4).to_dict()
    assert len(caplog.records) == 1


def test_heads_are_given_the_loader_options_and_bad_ones_are_refused(
        trained: CoTPipeline, images: ImageClassificationDataset) -> None:
    from cotprompt.tasks import ClassificationHead

    seen: list[tuple[int, bool | None]] = []

    class RecordingHead(ClassificationHead):
        def evaluate(self, pipeline: Any, dataset: Any, *, batch_size: int, zero_shot: bool,
                     num_workers: int, pin_memory: bool | None) -> Any:
            seen.append((num_workers, pin_memory))
            return super().evaluate(pipeline, dataset, batch_size=batch_size,
                                    zero_shot=zero_shot, num_workers=num_workers,
                                    pin_memory=pin_memory)

    result = trained.evaluate(images, task_head=RecordingHead(), pin_memory=True)
    assert seen == [(0, True)]
    assert result.to_dict() == trained.evaluate(images).to_dict()  # pinning changes no number
    with pytest.raises(ConfigError, match="pin_memory must be True, False or None, got 'yes'"):
        trained.evaluate(images, task_head=RecordingHead(), pin_memory="yes")  # type: ignore
    assert len(seen) == 1  # refused before the head ran
    with pytest.raises(ConfigError, match="pin_memory must be True, False or None, got 1"):
        trained.predict([str(r.path) for r in images.records], pin_memory=1)  # type: ignore


def test_a_long_evaluation_shows_a_progress_bar_unless_tqdm_disable(
        trained: CoTPipeline, images: ImageClassificationDataset,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    trained.evaluate(images, batch_size=2)  # 6 batches
    assert "evaluation" in capsys.readouterr().err
    trained.evaluate(images, batch_size=6)  # 2 batches: no bar
    assert "evaluation" not in capsys.readouterr().err
    paths = [str(r.path) for r in images.records]
    trained.predict(paths, batch_size=2)
    assert "images" in capsys.readouterr().err
    monkeypatch.setenv("TQDM_DISABLE", "1")
    trained.evaluate(images, batch_size=2)
    trained.predict(paths, batch_size=2)
    assert capsys.readouterr().err == ""


def test_the_lm_generator_bar_respects_tqdm_disable(monkeypatch: pytest.MonkeyPatch) -> None:
    import cotprompt.generators.lm as lm
    from cotprompt.types import Task

    class Made(Exception):
        pass

    disabled: list[Any] = []

    def fake_tqdm(*args: Any, **kwargs: Any) -> Any:
        disabled.append(kwargs.get("disable"))
        raise Made  # stop before any model is loaded

    monkeypatch.setattr(lm, "tqdm", fake_tqdm)
    generator = lm.LMGenerator(lm.LMGeneratorConfig.model_validate(
        {"model": "gpt2", "cache": False, "progress": True, "device": "cpu"}))
    for value in ("", "1"):
        monkeypatch.setenv("TQDM_DISABLE", value)
        with pytest.raises(Made):
            generator.generate(Task.classification(CLASSES), None)  # type: ignore[arg-type]
    assert disabled == [None, True]  # None: tqdm's own rule (off where stderr is no terminal)


# -- command line ------------------------------------------------------------------------------


@pytest.mark.loader_workers
def test_cli_eval_and_predict_take_workers(trained: CoTPipeline, image_folder: Path,
                                           tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from cotprompt.cli.app import main

    artifact = tmp_path / "artifact"
    trained.save_pretrained(artifact)

    def run(*args: str) -> Any:
        code = main([*args, "--json", "-q"])
        out = capsys.readouterr()
        assert code == 0, out.err
        return json.loads(out.out)

    evaluated = run("eval", str(artifact), "--data", str(image_folder), "--workers", "0")
    assert run("eval", str(artifact), "--data", str(image_folder), "--workers", "2") == evaluated
    predicted = run("predict", str(artifact), str(image_folder), "--workers", "0")
    assert run("predict", str(artifact), str(image_folder), "--workers", "2") == predicted
    assert main(["predict", str(artifact), str(image_folder), "--workers", "-1"]) == 2
    assert "--workers: must be an integer >= 0, got '-1'" in capsys.readouterr().err


# -- benchmark ---------------------------------------------------------------------------------


def test_the_benchmark_runs_and_writes_its_report(tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_data_loading.py", "--model-name", "cotprompt-tiny",
         "--images", "8", "--classes", "2", "--batch-size", "2", "--threads", "1",
         "--output", str(report)],
        cwd=root, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("data_loading cotprompt-tiny: step through fit ")
    text = report.read_text()
    assert "- command: `" in text and "- date: " in text and "- machine: " in text
    assert "| main process (`num_workers=0`, before) |" in text
    assert "| the step alone (images in memory) |" in text
