"""Sweeps (issue 14): the protocols' run lists, the method presets and method files, and the
runner on cotprompt-tiny over tiny datasets of real images (``tests/sweep_data.py``): results,
resuming after a kill, shards, shared image features, the ``sweep`` command."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sweep_data

from cotprompt.errors import ConfigError, DataError, UnsafeSettingError
from cotprompt.experiments.methods import METHOD_PRESETS, method_from_file, resolve_methods
from cotprompt.experiments.protocols import (
    DEFAULT_METHODS,
    STANDARD_DATASETS,
    base2new,
    build_runs,
    cross_dataset,
    domain_generalization,
    few_shot,
    shard_runs,
    sweep_order,
    training_group,
)
from cotprompt.experiments.results import (
    EvalTarget,
    RunResult,
    RunSpec,
    find_results,
    path_part,
    read_result,
)
from cotprompt.experiments.runner import run_fingerprint, run_sweep

TESTS = Path(__file__).resolve().parent


# -- protocols ----------------------------------------------------------------------------------


def test_base2new_trains_base_classes_and_evaluates_base_and_new():
    runs = base2new(["caltech101", "dtd"], ["zsclip", "coop"], [1, 2, 3])
    assert len(runs) == 2 * (1 + 3)
    coop = [r for r in runs if r.method == "coop"]
    assert {(r.dataset, r.seed) for r in coop} == {(d, s) for d in ("caltech101", "dtd")
                                                   for s in (1, 2, 3)}
    for run in runs:
        assert run.train_classes == "base"
        assert run.eval == (EvalTarget(run.dataset, "base"), EvalTarget(run.dataset, "new"))
    zero = [r for r in runs if r.method == "zsclip"]
    assert [(r.seed, r.shots) for r in zero] == [(0, 0), (0, 0)]  # one deterministic run
    assert all(r.shots == 16 for r in coop)


def test_cross_dataset_and_domain_generalization_train_on_imagenet():
    xd = cross_dataset(methods=["coop"], seeds=[1])
    assert len(xd) == 1 and xd[0].dataset == "imagenet" and xd[0].train_classes == "all"
    assert [t.dataset for t in xd[0].eval] == list(STANDARD_DATASETS)  # ImageNet, then ten
    assert all(t.classes == "all" for t in xd[0].eval)
    dg = domain_generalization(methods=["coop", "cocoop"], seeds=[1, 2])
    assert len(dg) == 4
    assert [t.dataset for t in dg[0].eval] == ["imagenet", "imagenetv2", "imagenet_sketch",
                                               "imagenet_a", "imagenet_r"]


def test_few_shot_runs_every_shot_count_on_all_classes():
    runs = few_shot(["eurosat"], ["zsclip", "coop"], [1, 2])
    assert sorted((r.shots, r.seed) for r in runs if r.method == "coop") == [
        (k, s) for k in (1, 2, 4, 8, 16) for s in (1, 2)]
    assert all(r.eval == (EvalTarget("eurosat", "all"),) for r in runs)
    assert len(runs) == 10 + 1


def test_build_runs_choices_and_refusals():
    runs = build_runs("few_shot", datasets=["dtd"], methods=["coop"], seeds=[3], shots=[1, 4])
    assert [(r.shots, r.seed) for r in runs] == [(1, 3), (4, 3)]
    xd = build_runs("cross_dataset", datasets=["dtd"], methods=["coop"], seeds=[1],
                    source="caltech101")
    assert xd[0].dataset == "caltech101" and [t.dataset for t in xd[0].eval] == ["caltech101",
                                                                                "dtd"]
    with pytest.raises(ConfigError, match="did you mean 'base2new'"):
        build_runs("base2nw")
    with pytest.raises(ConfigError, match="one number of shots"):
        build_runs("base2new", shots=[1, 2])
    with pytest.raises(ConfigError, match="no source"):
        build_runs("few_shot", source="imagenet")
    with pytest.raises(ConfigError, match="listed twice"):
        build_runs("base2new", seeds=[1, 1])
    with pytest.raises(ConfigError, match="shots must be"):
        build_runs("few_shot", shots=[0])


def test_seed_0_is_refused_as_the_research_code_leaves_it_unseeded():
    with pytest.raises(ConfigError, match=r"1\.\.2\*\*63-1.*seed 0 unseeded.*\[0\]") as error:
        build_runs("base2new", seeds=[0, 1])
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="seed 0"):
        few_shot(["dtd"], ["coop"], [0])


def test_default_methods_are_the_papers_baselines():
    # CoCoOp's paper compares with CoOp vit_b16_ctxv1 (4 vectors from "a photo of a")
    for protocol in ("base2new", "cross_dataset", "domain_generalization"):
        assert DEFAULT_METHODS[protocol] == ("zsclip", "coop_ctxv1", "cocoop", "cotpt")
        assert {r.method for r in build_runs(protocol, seeds=[1])} == set(
            DEFAULT_METHODS[protocol])
    # CoOp's own few-shot protocol: 16 random vectors
    assert DEFAULT_METHODS["few_shot"] == ("zsclip", "coop", "cocoop", "cotpt")
    assert {r.method for r in few_shot(["dtd"], seeds=[1])} == set(DEFAULT_METHODS["few_shot"])


def test_the_standard_datasets_are_the_registrys():
    from cotprompt.data.research import registry
    from cotprompt.experiments import protocols

    assert protocols.STANDARD_DATASETS is registry.STANDARD_DATASETS
    assert protocols.DG_TARGETS is registry.IMAGENET_VARIANTS


def test_sweep_order_groups_the_runs_that_train_on_the_same_images():
    runs = base2new(["dtd", "caltech101"], ["cotpt", "coop", "cocoop"], [2, 1])
    ordered = sweep_order(list(reversed(runs)))
    assert ordered == sweep_order(runs)  # whatever the order given
    groups = [(r.dataset, r.seed) for r in ordered]
    assert groups == sorted(groups)  # the methods of one dataset and seed follow each other
    other = RunSpec("base2new", "coop", "dtd", 1, 16, "all", ())
    with pytest.raises(ConfigError, match="two different runs"):
        sweep_order([*runs, other])


def test_shards_keep_training_groups_whole():
    runs = [*base2new(["dtd", "caltech101", "eurosat"], ["zsclip", "coop", "cocoop", "cotpt"],
                      [1, 2, 3]),
            *cross_dataset(["dtd"], ["coop", "cocoop"], [1, 2]),
            *domain_generalization(methods=["coop", "cocoop"], seeds=[1, 2])]
    for count in (1, 2, 3, 4):
        shards = [shard_runs(runs, i, count) for i in range(count)]
        ids = [r.run_id for shard in shards for r in shard]
        assert sorted(ids) == sorted(r.run_id for r in runs)  # the same union...
        assert len(set(ids)) == len(runs)  # ...disjoint
        groups = [{training_group(r) for r in shard} for shard in shards]
        for i in range(count):  # a training group on one shard only
            for j in range(i + 1, count):
                assert not groups[i] & groups[j]
        sizes = [len(shard) for shard in shards]
        largest = max(sum(training_group(r) == g for r in runs) for g in groups[0])
        assert max(sizes) - min(sizes) <= largest  # balanced up to one group
        assert shards == [shard_runs(list(reversed(runs)), i, count) for i in range(count)]
    # cross-dataset and domain generalisation train on the same ImageNet images: together
    (xd,) = [r for r in runs if r.protocol == "cross_dataset" and r.method == "coop"
             and r.seed == 1]
    together = [s for s in (shard_runs(runs, i, 3) for i in range(3)) if xd in s]
    assert {r.protocol for r in together[0] if training_group(r) == training_group(xd)} == {
        "cross_dataset", "domain_generalization"}
    with pytest.raises(ConfigError, match="shard"):
        shard_runs(runs, 2, 2)


def test_run_ids_of_user_datasets_are_safe_folder_names():
    assert path_part("caltech101") == "caltech101"
    spec = RunSpec("few_shot", "coop", "folder:a/../b", 1, 2, "all",
                   (EvalTarget("folder:a/../b"),))
    parts = spec.run_id.split("/")
    assert len(parts) == 4 and parts[0] == "few_shot" and parts[2:] == ["coop", "shots2_seed1"]
    assert parts[1].startswith("folder-a-b-") and len(parts[1].rsplit("-", 1)[1]) == 8
    for name in ("folder:a/../b", "csv:../x;y.csv", "split:s.json;image_root=/d", "..",
                 "folder:a/b", "folder:a-b"):
        part = path_part(name)
        assert part not in (".", "..") and all(c.isalnum() or c in "._-" for c in part), name
    # different names, different folders
    assert len({path_part(n) for n in ("folder:a/b", "folder:a-b", "folder:a b")}) == 3


# -- methods ------------------------------------------------------------------------------------


def test_presets_follow_the_published_configs():
    coop = METHOD_PRESETS["coop"]
    config = coop.training_config(dataset="caltech101", shots=16, seed=1)
    assert (config.epochs, config.batch_size, config.lr, config.optimizer) == (200, 32, 0.002,
                                                                               "sgd")
    assert (config.warmup_epochs, config.warmup_lr, config.scheduler) == (1, 1e-5, "cosine")
    assert coop.training_config(dataset="imagenet", shots=1, seed=1).epochs == 50
    assert coop.training_config(dataset="dtd", shots=1, seed=1).epochs == 50
    assert coop.training_config(dataset="dtd", shots=4, seed=1).epochs == 100
    assert coop.tuner.config == {"n_ctx": 16, "class_token_position": "end"}
    cocoop = METHOD_PRESETS["cocoop"].training_config(dataset="imagenet", shots=16, seed=2)
    assert (cocoop.epochs, cocoop.batch_size, cocoop.seed) == (10, 1, 2)
    assert METHOD_PRESETS["cocoop"].tuner.config == {"ctx_init": "a photo of a"}
    assert METHOD_PRESETS["zsclip"].zero_shot
    assert "reconstruction" in METHOD_PRESETS["cotpt"].source
    assert all(m.source for m in METHOD_PRESETS.values())
    quick = coop.training_config(dataset="imagenet", shots=16, seed=1, overrides={"epochs": 2})
    assert quick.epochs == 2
    with pytest.raises(ConfigError, match="unknown option"):
        coop.training_config(dataset="dtd", shots=1, seed=1, overrides={"epoch": 2})


def test_a_method_file_names_any_registered_components(tmp_path):
    path = tmp_path / "coop-m8.yaml"
    path.write_text("tuner: {name: coop, config: {n_ctx: 8}}\n"
                    "aggregator: {name: attention}\ntraining: {epochs: 3, batch_size: 4}\n")
    method = method_from_file(path)
    assert method.name == "coop-m8" and "coop-m8.yaml" in method.source
    assert method.tuner.config == {"n_ctx": 8} and method.aggregator.name == "attention"
    assert dict(method.training) == {"epochs": 3, "batch_size": 4}
    assert method.training_config(dataset="dtd", shots=16, seed=5).epochs == 3
    assert list(resolve_methods(["coop", str(path)])) == ["coop", "coop-m8"]


@pytest.mark.parametrize(("text", "error", "match"), [
    ("backbone: {name: open_clip}\n", ConfigError, "shares one backbone"),
    ("tuner: {name: coop, config: {n_ctx: -1}}\n", ConfigError, "n_ctx"),
    ("tunr: {name: coop}\n", ConfigError, "tunr"),
    ("name: coop\n", ConfigError, "like a preset"),
    ("name: 'a b/c'\n", ConfigError, "names folders"),
    ("generator: {name: lm, config: {trust_remote_code: true}}\n", UnsafeSettingError,
     "trust_remote_code"),
])
def test_a_method_file_is_validated_as_untrusted(tmp_path, text, error, match):
    path = tmp_path / "method.yaml"
    path.write_text(text)
    with pytest.raises(error, match=match):
        method_from_file(path)


def test_resolve_methods_suggests_a_preset():
    with pytest.raises(ConfigError, match="did you mean 'cocoop'"):
        resolve_methods(["cocop"])


# -- the runner -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data() -> Path:
    if not sweep_data.ROOT.is_dir():
        pytest.skip(f"shared test data not found at {sweep_data.ROOT}")
    return sweep_data.ROOT


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The tests' sweep, uninterrupted, with shared features: (output folder, report)."""
    output = tmp_path_factory.mktemp("reference")
    started = time.perf_counter()
    report = run_sweep(sweep_data.specs(), data_root=data, output=output,
                       load_dataset=sweep_data.load_dataset, sample=sweep_data.sample,
                       **sweep_data.SWEEP_OPTIONS)
    report.seconds = time.perf_counter() - started
    return output, report


def _by_id(output: Path) -> dict[str, RunResult]:
    return {r.run.run_id: r for r in find_results(output)}


def _same_results(a: dict[str, RunResult], b: dict[str, RunResult]) -> None:
    assert sorted(a) == sorted(b)
    for run_id in a:
        assert a[run_id].metrics == b[run_id].metrics, run_id
        assert a[run_id].train_images == b[run_id].train_images, run_id
        assert a[run_id].method == b[run_id].method, run_id


def test_a_sweep_writes_one_result_per_run(reference, data):
    output, report = reference
    results = _by_id(output)
    assert len(results) == len(report.done) == 3 * (1 + 3 * 2) == 21
    assert report.seconds < 120  # about 5 s alone on a 2-core machine
    coop = results["base2new/tiny_animals/coop/shots2_seed1"]
    assert set(coop.metrics) == {"tiny_animals/base", "tiny_animals/new"}
    for metrics in coop.metrics.values():
        assert set(metrics) == {"accuracy", "mean_per_class_accuracy", "num_images"}
        assert metrics["num_images"] == 12 and 0 <= metrics["accuracy"] <= 100
    # the base half of the classes, two shots each, relative to $DATA
    assert len(coop.train_images) == 4
    assert all(p.startswith(("train/cat/", "train/dog/")) for p in coop.train_images)
    assert all((data / p).is_file() for p in coop.train_images)
    assert coop.method["training"]["epochs"] == 2 and coop.method["training"]["seed"] == 1
    assert coop.method["training"]["drop_last"] is True
    # the precision actually used, not "auto": fp32 on a CPU
    import torch

    if not torch.cuda.is_available():
        assert coop.method["training"]["precision"] == "fp32"
    assert coop.method["training"]["precision"] in ("fp32", "bf16", "fp16")
    assert coop.method["tuner"] == {"name": "coop", "config": {"n_ctx": 16,
                                                               "class_token_position": "end"}}
    assert set(coop.seconds) == {"train", "eval", "total"}
    assert set(coop.versions) == {"cotprompt", "torch", "open_clip", "python"}
    assert {k: coop.backbone[k] for k in ("model_name", "pretrained")} == {
        "model_name": "cotprompt-tiny", "pretrained": None}
    assert coop.backbone["spec"]["name"] == "open_clip"
    assert coop.backbone["spec"]["config"]["model_name"] == "cotprompt-tiny"
    assert coop.fingerprint == run_fingerprint(coop.method, coop.backbone["spec"],
                                               share_features=True)
    assert len({r.fingerprint for r in results.values()}) == 4  # one per method: seeds share it
    zero = results["base2new/tiny_animals/zsclip/shots0_seed0"]
    assert zero.train_images == [] and zero.seconds["train"] == 0
    assert zero.method["zero_shot_templates"] == {"tiny_animals": sweep_data.TEMPLATE}
    # two seeds sample different images
    seed2 = results["base2new/tiny_animals/coop/shots2_seed2"]
    assert seed2.train_images != coop.train_images


def test_a_finished_sweep_is_skipped(reference, data):
    output, _ = reference
    report = run_sweep(sweep_data.specs(), data_root=data, output=output,
                       load_dataset=sweep_data.load_dataset, sample=sweep_data.sample,
                       **sweep_data.SWEEP_OPTIONS)
    assert report.done == [] and len(report.skipped) == 21
    assert report.image_forwards == 0  # nothing was built: not even the backbone


def test_a_sweep_killed_half_way_resumes_to_the_same_results(reference, data, tmp_path):
    output = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, str(TESTS / "sweep_data.py"), str(output)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target, deadline = 8, time.monotonic() + 240
    try:
        while len(list(output.rglob("results.json"))) < target:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the sweep did not progress"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    written = len(list(output.rglob("results.json")))
    assert target <= written < 21  # killed in the middle
    assert len(find_results(output)) == written  # each one whole (written atomically)
    report = run_sweep(sweep_data.specs(), data_root=data, output=output,
                       load_dataset=sweep_data.load_dataset, sample=sweep_data.sample,
                       **sweep_data.SWEEP_OPTIONS)
    assert len(report.skipped) == written and len(report.done) == 21 - written
    _same_results(_by_id(output), _by_id(reference[0]))
    from cotprompt.experiments.report import report_from_folder

    assert report_from_folder(output).to_markdown() == \
        report_from_folder(reference[0]).to_markdown()  # the same tables


def test_shards_merge_into_the_whole_sweep(reference, data, tmp_path):
    output = tmp_path / "shards"
    reports = [run_sweep(sweep_data.specs(), data_root=data, output=output,
                         load_dataset=sweep_data.load_dataset, sample=sweep_data.sample,
                         shard=(i, 2), **sweep_data.SWEEP_OPTIONS) for i in (0, 1)]
    ids = [{r.run_id for r in report.runs} for report in reports]
    assert not ids[0] & ids[1] and len(ids[0]) + len(ids[1]) == 21
    assert abs(len(ids[0]) - len(ids[1])) <= 1
    _same_results(_by_id(output), _by_id(reference[0]))
    # whole training groups per shard: each view encoded once over both shards, and each test
    # set once (the second shard reads the first one's from the output's feature cache)
    assert sum(r.image_forwards for r in reports) == reference[1].image_forwards
    with pytest.raises(ConfigError, match="shard"):
        run_sweep(sweep_data.specs(), data_root=data, output=output, shard=(2, 2))


def test_shared_features_save_image_encoder_forwards(reference, data, tmp_path):
    _, shared = reference
    alone = run_sweep(sweep_data.specs(), data_root=data, output=tmp_path / "alone",
                      load_dataset=sweep_data.load_dataset, sample=sweep_data.sample,
                      share_features=False, **sweep_data.SWEEP_OPTIONS)
    assert len(alone.done) == len(shared.done) == 21
    # each test image once (the files tiny_mixed shares with the others once too), and each
    # augmented view once per dataset and seed, not once per method
    test_images = 6 * (4 + 4 + 2)
    views = 4 * 2 * 2 * 3  # (2 base classes x 2 shots) x 2 epochs, per seed and dataset
    assert shared.image_forwards == test_images + views
    # separately: each run encodes its test images and its views at every step
    assert alone.image_forwards == 3 * (1 + 3 * 2) * 24 + 3 * 2 * 3 * 8
    assert alone.image_forwards >= 5 * shared.image_forwards
    assert not (tmp_path / "alone" / ".features").exists()


def test_resuming_with_other_settings_is_refused_and_the_results_kept(data, tmp_path):
    runs = base2new(["tiny_vehicles"], ["zsclip", "coop"], [1], shots=2)
    options = {**sweep_data.SWEEP_OPTIONS, "training": {"epochs": 1}}
    first = run_sweep(runs, data_root=data, output=tmp_path, load_dataset=sweep_data.load_dataset,
                      sample=sweep_data.sample, **options)
    assert len(first.done) == 2
    files = sorted(tmp_path.rglob("results.json"))
    before = {p: p.read_bytes() for p in files}
    coop = next(p for p in files if "/coop/" in p.as_posix())
    with pytest.raises(ConfigError) as error:
        run_sweep(runs, data_root=data, output=tmp_path, load_dataset=sweep_data.load_dataset,
                  sample=sweep_data.sample, **{**options, "training": {"epochs": 3}})
    message = str(error.value)
    assert "\n" not in message and str(coop) in message
    assert "training.epochs 1 vs 3" in message and "another --output" in message
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("results.json"))} == before
    # the share mode is in the fingerprint too
    with pytest.raises(ConfigError, match="features shared yes vs no"):
        run_sweep(runs, data_root=data, output=tmp_path, load_dataset=sweep_data.load_dataset,
                  sample=sweep_data.sample, share_features=False, **options)
    # a result for other evaluations of the same run id
    other = [RunSpec("base2new", "coop", "tiny_vehicles", 1, 2, "base",
                     (EvalTarget("tiny_vehicles", "base"),))]
    with pytest.raises(ConfigError, match=r"run\.eval"):
        run_sweep(other, data_root=data, output=tmp_path, load_dataset=sweep_data.load_dataset,
                  sample=sweep_data.sample, **options)
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("results.json"))} == before
    # the same settings: everything skipped
    again = run_sweep(runs, data_root=data, output=tmp_path,
                      load_dataset=sweep_data.load_dataset, sample=sweep_data.sample, **options)
    assert again.done == [] and len(again.skipped) == 2


def test_a_user_dataset_name_stays_inside_the_output(data, tmp_path):
    name = "folder:a/../b"

    def load(dataset: str, root: Path):
        return sweep_data.load_dataset("tiny_vehicles" if dataset == name else dataset, root)

    runs = few_shot([name], ["coop"], [1], [2])
    output = tmp_path / "out"
    report = run_sweep(runs, data_root=data, output=output, load_dataset=load,
                       sample=sweep_data.sample, **{**sweep_data.SWEEP_OPTIONS,
                                                    "training": {"epochs": 1}})
    (result,) = report.done
    (path,) = output.rglob("results.json")
    assert path.resolve().is_relative_to(output.resolve())
    assert path.relative_to(output).parts[1] == path_part(name) != name
    assert read_result(path).run.dataset == name  # the real name is kept
    assert set(result.metrics) == {f"{name}/all"}


def test_shared_test_features_only_for_the_frozen_image_encoder():
    from types import SimpleNamespace

    from cotprompt.experiments.runner import _Sweep
    from cotprompt.plugins.registry import get_registry
    from cotprompt.tuners.context_tuner import ContextPromptTuner

    class Adapter(ContextPromptTuner):  # tunes no encoder weights, but has its own features
        def encode_images(self, backbone, pixels):
            return super().encode_images(backbone, pixels) * 2

    class Tuned(ContextPromptTuner):  # the frozen function, but tuned encoder weights
        tunes_image_encoder = True

    def pipeline(tuner_cls):  # encoder_id looks at the tuner's class only
        return SimpleNamespace(tuner=tuner_cls.__new__(tuner_cls))

    for name in ("coop", "cocoop", "cotpt"):
        cls = get_registry().get("tuner", METHOD_PRESETS[name].tuner.name)
        assert _Sweep.frozen_encoder(pipeline(cls)), name
    assert not _Sweep.frozen_encoder(pipeline(Adapter))
    assert not _Sweep.frozen_encoder(pipeline(Tuned))
    assert not _Sweep.frozen_encoder(pipeline(get_registry().get("tuner", "vpt")))


def test_transfer_evaluates_other_datasets_over_their_own_classes(data, tmp_path):
    runs = cross_dataset(["tiny_animals", "tiny_vehicles_sub"], ["zsclip", "coop"], [1],
                         shots=2, source="tiny_vehicles")
    report = run_sweep(runs, data_root=data, output=tmp_path, load_dataset=sweep_data.load_dataset,
                       sample=sweep_data.sample, **sweep_data.SWEEP_OPTIONS)
    assert len(report.done) == 2
    for result in report.done:
        assert {k: m["num_images"] for k, m in result.metrics.items()} == {
            "tiny_vehicles/all": 24, "tiny_animals/all": 24, "tiny_vehicles_sub/all": 12}
    coop = next(r for r in report.done if r.run.method == "coop")
    assert len(coop.train_images) == 8  # all four classes of the source


def test_a_user_method_that_tunes_the_image_encoder_runs_alone(data, tmp_path):
    path = tmp_path / "vpt-shallow.yaml"
    path.write_text("tuner: {name: vpt, config: {mode: shallow}}\ntraining: {epochs: 1}\n")
    methods = resolve_methods([str(path)])
    runs = base2new(["tiny_vehicles"], ["vpt-shallow"], [1], shots=2)
    report = run_sweep(runs, data_root=data, output=tmp_path / "out", methods=methods,
                       load_dataset=sweep_data.load_dataset, sample=sweep_data.sample,
                       **sweep_data.SWEEP_OPTIONS)
    (result,) = report.done
    assert result.method["tuner"]["name"] == "vpt"
    assert result.metrics["tiny_vehicles/new"]["num_images"] == 12


def test_a_failing_run_stops_the_sweep_or_is_recorded(data, tmp_path):
    def load(name: str, root: Path):
        if name == "tiny_animals":
            raise DataError("tiny_animals: split_zhou_TinyAnimals.json is missing")
        return sweep_data.load_dataset(name, root)

    runs = base2new(["tiny_animals", "tiny_vehicles"], ["coop"], [1], shots=2)
    options = {**sweep_data.SWEEP_OPTIONS, "training": {"epochs": 1}}
    with pytest.raises(DataError, match=r"split_zhou_TinyAnimals\.json"):
        run_sweep(runs, data_root=data, output=tmp_path, load_dataset=load,
                  sample=sweep_data.sample, **options)
    report = run_sweep(runs, data_root=data, output=tmp_path, load_dataset=load,
                       sample=sweep_data.sample, keep_going=True, **options)
    assert list(report.failed) == ["base2new/tiny_animals/coop/shots2_seed1"]
    assert "split_zhou_TinyAnimals.json" in report.failed[runs[0].run_id]
    assert [r.run.dataset for r in report.done] == ["tiny_vehicles"]
    with pytest.raises(ConfigError, match="unknown method"):
        run_sweep(base2new(["dtd"], ["nope"], [1]), data_root=data, output=tmp_path)


# -- the command ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from cotprompt.cli._common import common_options
    from cotprompt.cli.experiments import add_commands

    parser = argparse.ArgumentParser(prog="cotprompt")
    add_commands(parser.add_subparsers(dest="command"), common_options())
    return parser


def test_the_sweep_command(data, tmp_path, monkeypatch, capsys):
    from cotprompt.experiments import runner

    monkeypatch.setattr(runner, "default_load_dataset", sweep_data.load_dataset)
    monkeypatch.setattr(runner, "default_sample", sweep_data.sample)
    argv = ["sweep", "base2new", "--data", str(data), "--output", str(tmp_path),
            "--methods", "zsclip,coop", "--datasets", "tiny_vehicles,tiny_animals",
            "--seeds", "1", "--shots", "2", "--shard", "1/2", "--epochs", "1",
            "--model-name", "cotprompt-tiny", "--pretrained", "none", "--json"]
    args = _parser().parse_args(argv)
    assert args.handler(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["runs"] == 2 and len(summary["done"]) == 2 and summary["shard"] == [1, 2]
    assert summary["image_forwards"] > 0
    assert len(find_results(tmp_path)) == 2
    args = _parser().parse_args(argv[:-1])  # again: everything is done
    assert args.handler(args) == 0
    assert "0 done now, 2 done before" in capsys.readouterr().out


@pytest.mark.parametrize(("option", "value", "match"), [
    ("--shard", "2/2", "0 <= i < n"), ("--shard", "a/b", "i/n"), ("--seeds", "1,x", "integers"),
    ("--methods", "cocop", "did you mean"), ("--epochs", "0", ">= 1"),
])
def test_the_sweep_command_refuses_bad_options(tmp_path, option, value, match):
    args = _parser().parse_args(["sweep", "few_shot", "--data", str(tmp_path), "--output",
                                 str(tmp_path), option, value])
    with pytest.raises(ConfigError, match=match):
        args.handler(args)


# -- with the standard readers and the research sampler ------------------------------------


@pytest.fixture(scope="module")
def replicas(shared_data, tmp_path_factory) -> Path:
    """``$DATA`` with miniature replicas of the 15 layouts (``tests/research_replicas.py``)."""
    replicas = pytest.importorskip("research_replicas")
    data = tmp_path_factory.mktemp("DATA")
    replicas.build_replicas(shared_data, data)
    return data


def test_a_sweep_reads_the_standard_layouts_and_samples_as_the_research_code(replicas,
                                                                             tmp_path):
    from cotprompt.data.research.fewshot import research_few_shot, training_image_list
    from cotprompt.data.research.registry import load_dataset

    runs = base2new(["caltech101", "dtd"], ["zsclip", "coop"], [1, 2], shots=2)
    options = {**sweep_data.SWEEP_OPTIONS, "training": {"epochs": 1}}
    report = run_sweep(runs, data_root=replicas, output=tmp_path, **options)
    assert len(report.done) == 2 * 3
    for result in report.done:
        dataset = load_dataset(result.run.dataset, replicas)
        if result.run.method == "coop":  # the research code's picks, of the base classes
            train, _ = research_few_shot(dataset, 2, result.run.seed, classes="base")
            assert result.train_images == training_image_list(dataset, train)
        assert sum(m["num_images"] for m in result.metrics.values()) == len(dataset.test)


def test_domain_generalization_evaluates_each_variant_over_its_classes(replicas, tmp_path):
    from cotprompt.data.research.registry import load_dataset

    runs = domain_generalization(methods=["zsclip", "coop"], seeds=[1], shots=1)
    options = {**sweep_data.SWEEP_OPTIONS, "training": {"epochs": 1}}
    report = run_sweep(runs, data_root=replicas, output=tmp_path, **options)
    assert len(report.done) == 2
    for result in report.done:
        for target in result.run.eval:
            expected = len(load_dataset(target.dataset, replicas).test)
            assert result.metrics[target.key]["num_images"] == expected


def test_machine_local_options_stay_out_of_a_runs_record_and_fingerprint(monkeypatch):
    from accelerate.tracking import GeneralTracker

    from cotprompt.experiments.methods import RunRecords

    class Tracker(GeneralTracker):  # a tracker object: not JSON, not a result's business
        name = "custom"
        requires_logging_directory = False

        @property
        def tracker(self):
            return self

    monkeypatch.delenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", raising=False)
    methods = resolve_methods(["coop"])
    spec = RunSpec("few_shot", "coop", "eurosat", 1, 2, "all", (EvalTarget("eurosat", "all"),))

    def records(**training):
        expected = RunRecords(methods, {"epochs": 1, **training}, {"spec": {"name": "b"}}, True)
        record = expected.record(spec)
        return record, expected.fingerprint(record), expected.config(spec)

    plain, fingerprint, config = records()
    # what sweeps recorded before trackers and accumulation existed: existing results resume
    before = config.model_dump(mode="json", exclude={
        "feature_cache_dir", "checkpoint_dir", "checkpoint_every", "keep_checkpoints",
        "progress", "log_every", "num_workers", "gradient_accumulation_steps", "log_with",
        "project_dir", "tracker_project", "run_name", "tracker_config"})
    assert plain["training"] == before
    tracked = records(log_with=["tensorboard", Tracker()], project_dir="/home/alice/runs",
                      tracker_project="alice-lab", run_name="alice-run",
                      tracker_config={"note": "alice"})
    assert tracked[:2] == (plain, fingerprint)
    assert json.dumps(tracked[0]) and "alice" not in json.dumps(tracked[0])
    assert records(gradient_accumulation_steps=1)[:2] == (plain, fingerprint)
    # the accumulation used is recorded, also when `accelerate launch` chose it
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "2")
    launched, launched_fingerprint, launched_config = records()
    assert launched["training"] == {**before, "gradient_accumulation_steps": 2}
    assert launched_config.gradient_accumulation_steps == 2
    assert launched_fingerprint != fingerprint
    monkeypatch.delenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS")
    assert records(gradient_accumulation_steps=2)[:2] == (launched, launched_fingerprint)
