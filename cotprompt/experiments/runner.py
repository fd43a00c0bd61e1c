"""The sweep runner: every run of a protocol in one process per device, resumable and
shardable, one ``results.json`` per run.

:func:`run_sweep` loads the backbone once and shares it between the runs' pipelines; skips the
runs whose ``results.json`` exists (a killed sweep continues where it stopped: a result is
written atomically once its run is complete), and refuses to go on when a finished result was
written for other settings (its spec or its fingerprint differ: a result is never overwritten);
with ``shard=(i, n)`` takes the i-th of n shards of whole training groups
(:func:`~cotprompt.experiments.protocols.shard_runs`: the methods that share augmented views
stay together), so that n processes, GPUs or machines split a sweep and write into one output
folder; and shows a progress bar over the runs with an ETA. Each run samples its few-shot
training images with its seed (the research code's sampler), keeps the base classes for
base-to-new, trains, evaluates every :class:`~cotprompt.experiments.results.EvalTarget` (other
datasets over their own class names through ``pipeline.set_classes``: unified-context prompts
transfer) and writes its result.
Frozen image features are shared between runs (:mod:`cotprompt.experiments.sharing`).

A result's ``fingerprint`` (:func:`~cotprompt.experiments.methods.run_fingerprint`) is the
sha256 of the method's resolved record (components, training options after overrides, the
precision actually used), the backbone's spec, the share mode and the results format.

Output layout: ``<output>/<protocol>/<dataset>/<method>/shots<K>_seed<S>/results.json`` (each
part a safe folder name: :attr:`~cotprompt.experiments.results.RunSpec.run_id`) and the
sweep's feature cache in ``<output>/.features``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from cotprompt.data.records import ImageClassificationDataset, ImageRecord
from cotprompt.data.research.base import ResearchDataset
from cotprompt.data.research.fewshot import research_class_labels, training_image_list
from cotprompt.data.sampling import subsample_classes
from cotprompt.errors import ConfigError, DataError, one_line
from cotprompt.evaluation.finite import check_finite_scores
from cotprompt.evaluation.metrics import EvaluationResult
from cotprompt.experiments.methods import (
    METHOD_PRESETS,
    Method,
    RunRecords,
    backbone_record,
    run_fingerprint,
)
from cotprompt.experiments.protocols import shard_runs
from cotprompt.experiments.results import (
    RESULTS_NAME,
    EvalTarget,
    RunResult,
    RunSpec,
    library_versions,
    write_result,
)
from cotprompt.experiments.sharing import (
    ForwardCounter,
    SharedFeatures,
    SharedViewsHead,
    TrainingViews,
    encoder_id,
)
from cotprompt.io import check_writable
from cotprompt.training.config import TrainingConfig
from cotprompt.training.loop import progress_disabled

if TYPE_CHECKING:
    from cotprompt.pipeline import CoTPipeline
    from cotprompt.protocols import Backbone

__all__ = ["FEATURES_FOLDER", "SweepReport", "default_load_dataset", "default_sample",
           "run_fingerprint", "run_sweep"]

logger = logging.getLogger("cotprompt.experiments")

FEATURES_FOLDER = ".features"

#: ``(name, $DATA) -> ResearchDataset``.
DatasetLoader = Callable[[str, Path], ResearchDataset]
#: ``(dataset, shots, seed=...) -> (train, val)``, the few-shot images of a run.
Sampler = Callable[..., tuple[ImageClassificationDataset, ImageClassificationDataset | None]]


def default_load_dataset(name: str, root: Path) -> ResearchDataset:
    """The standard dataset ``name`` read from ``$DATA`` (the research code's layouts)."""
    from cotprompt.data.research.registry import load_dataset

    return load_dataset(name, root)


#: The standard readers (their names are checked before the backbone is built).
_STANDARD_LOADER = default_load_dataset


def default_sample(dataset: ResearchDataset, shots: int, *, seed: int
                   ) -> tuple[ImageClassificationDataset, ImageClassificationDataset | None]:
    """The research code's few-shot training and validation images for ``seed``."""
    from cotprompt.data.research.fewshot import research_few_shot

    return research_few_shot(dataset, shots, seed=seed)


@dataclass
class SweepReport:
    """What :func:`run_sweep` did.

    Attributes:
        runs: This shard's runs, in order.
        done: The results written by this call.
        skipped: Run ids whose ``results.json`` existed.
        failed: Run id -> one-line error (``keep_going``).
        image_forwards: Images through the backbone's image encoder.
        encoder_calls: Calls of the backbone's image encoder.
        seconds: Wall time of the call.
    """

    runs: list[RunSpec]
    done: list[RunResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    image_forwards: int = 0
    encoder_calls: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"runs": len(self.runs), "done": [r.run.run_id for r in self.done],
                "skipped": self.skipped, "failed": self.failed,
                "image_forwards": self.image_forwards, "encoder_calls": self.encoder_calls,
                "seconds": self.seconds}


def run_sweep(
    specs: Sequence[RunSpec],
    *,
    data_root: str | Path,
    output: str | Path,
    methods: Mapping[str, Method] | None = None,
    model_name: str = "ViT-B-16",
    pretrained: str | None = "openai",
    backbone: Backbone | None = None,
    allow_pickle: bool = False,
    device: str | torch.device | None = None,
    training: Mapping[str, Any] | None = None,
    load_dataset: DatasetLoader | None = None,
    sample: Sampler | None = None,
    shard: tuple[int, int] = (0, 1),
    share_features: bool = True,
    batch_size: int = 64,
    num_workers: int = 0,
    keep_going: bool = False,
    progress: bool = True,
) -> SweepReport:
    """Run (this shard of) a sweep, writing ``<output>/<run id>/results.json`` per run.

    Args:
        specs: The runs (:func:`~cotprompt.experiments.protocols.build_runs`); any order.
        data_root: ``$DATA``, the folder of the datasets.
        output: The sweep's folder (shards and resumed sweeps write into the same one).
        methods: Methods by name besides (or replacing) the presets of
            :data:`~cotprompt.experiments.methods.METHOD_PRESETS`.
        model_name: open_clip architecture of the backbone.
        pretrained: open_clip pretrained tag or weights file; ``None``: random weights.
        backbone: A built backbone to use instead (``model_name`` and ``pretrained`` ignored).
        allow_pickle: Your opt-in to a pickle-based ``pretrained`` file.
        device: Where to run; default CUDA when available, else CPU.
        training: Training options for every run, over each method's recipe (``{"epochs": 2}``
            for a quick run); the run's seed always wins.
        load_dataset: ``(name, data_root) -> ResearchDataset``; default: the standard readers.
        sample: ``(dataset, shots, seed=seed) -> (train, val)``; default: the research code's
            few-shot sampler.
        shard: ``(i, n)``: run the i-th (0-based) of n shards, each of whole training groups
            (:func:`~cotprompt.experiments.protocols.shard_runs`); every process of a sweep
            must be given the same runs.
        share_features: Compute frozen image features once per sweep (see
            :mod:`cotprompt.experiments.sharing`); ``False`` runs every run as a separate
            ``train`` + ``eval`` would.
        batch_size: Images per image-encoder batch.
        num_workers: DataLoader workers decoding images.
        keep_going: Record a failing run's error and continue (it is retried when the sweep is
            run again); default: raise it.
        progress: Show progress bars.

    Returns:
        A :class:`SweepReport`.

    Raises:
        ConfigError: A bad shard, an unknown method, an unwritable output folder, bad training
            or backbone options, or a finished result written for other settings (its file,
            what differs; nothing is run or overwritten).
        DataError: A dataset cannot be read or sampled.
    """
    started = time.perf_counter()
    index, count = shard
    known = {**METHOD_PRESETS, **(methods or {})}
    runs = shard_runs(specs, index, count)
    unknown = sorted({r.method for r in runs} - set(known))
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}; known: {sorted(known)}")
    output = Path(output)
    check_writable(output, what="output folder")
    options: dict[str, Any] = {"model_name": model_name, "pretrained": pretrained}
    if allow_pickle:
        options["allow_pickle"] = True
    backbone_config, record = backbone_record(backbone, options)
    expected = RunRecords(known, training or {}, record, share_features)
    report = SweepReport(runs=runs)
    todo = []
    conflicts: list[tuple[Path, str]] = []
    for run in runs:
        path = output / run.run_id / RESULTS_NAME
        if not path.is_file():
            todo.append(run)
            continue
        report.skipped.append(run.run_id)
        differs = expected.check_finished(path, run)
        if differs is not None:
            conflicts.append((path, differs))
    if conflicts:
        path, differs = conflicts[0]
        more = f" (and {len(conflicts) - 1} more finished run(s))" if len(conflicts) > 1 else ""
        raise ConfigError(
            f"{path} was written for other settings ({differs}: existing vs this sweep){more}; "
            "a finished result is never overwritten: give another --output to run with these "
            "settings")
    logger.info("%d run(s) in shard %d/%d: %d done already, %d to run", len(runs), index, count,
                len(report.skipped), len(todo))
    if not todo:
        report.seconds = time.perf_counter() - started
        return report
    loader = load_dataset or default_load_dataset
    _check_data(Path(data_root), todo, default_loader=loader is _STANDARD_LOADER)
    if backbone is None:
        from cotprompt.plugins.registry import get_registry

        backbone = get_registry().create("backbone", "open_clip", backbone_config)
    sweep = _Sweep(
        backbone=backbone, expected=expected, data_root=Path(data_root), output=output,
        device=device, load_dataset=loader,
        sample=sample or default_sample, share=share_features, batch_size=batch_size,
        num_workers=num_workers, progress=progress,
    )
    counter = ForwardCounter(backbone)
    bar = tqdm(todo, desc=f"sweep {index}/{count}" if count > 1 else "sweep", unit="run",
               disable=not progress or progress_disabled())
    try:
        for run in bar:
            bar.set_postfix_str(run.run_id)
            try:
                result = sweep.run(run)
            except Exception as exc:
                if not keep_going:
                    raise
                report.failed[run.run_id] = one_line(exc)
                logger.error("%s failed: %s", run.run_id, one_line(exc))
                continue
            write_result(output / run.run_id, result)
            report.done.append(result)
            logger.info("%s: %s", run.run_id, ", ".join(
                f"{k} {m['accuracy']:.2f}" for k, m in result.metrics.items()))
    finally:
        bar.close()
        counter.remove()
        report.image_forwards, report.encoder_calls = counter.images, counter.calls
        report.seconds = time.perf_counter() - started
    return report


def _check_data(data_root: Path, runs: Sequence[RunSpec], *, default_loader: bool) -> None:
    """Refuse a missing ``$DATA`` and unknown dataset names before the backbone is built.

    Raises:
        DataError: ``data_root`` is not a folder.
        ConfigError: An unknown dataset name (with the closest one).
    """
    if not data_root.is_dir():
        raise DataError(f"$DATA folder {str(data_root)!r} does not exist or is not a folder")
    if default_loader:
        from cotprompt.data.research.registry import get_reader

        for name in sorted({r.dataset for r in runs} | {t.dataset for r in runs for t in r.eval}):
            get_reader(name)


def _subset(dataset: ImageClassificationDataset, classes: str,
            train: ImageClassificationDataset | None) -> tuple[list[int], list[int], list[str]]:
    """``(indices, labels, class names)`` of the images of ``classes`` in ``dataset``: all, or
    the base or new half of the labels of ``train`` (the research code's ``subsample_classes``:
    :func:`~cotprompt.data.research.fewshot.research_class_labels`), relabelled in order."""
    if classes == "all":
        return list(range(len(dataset))), dataset.labels, list(dataset.class_names)
    if train is None:
        raise DataError(f"base/new classes need a training split, got {classes!r}")
    keep = research_class_labels(train, classes)  # type: ignore[arg-type]
    relabel = {old: i for i, old in enumerate(keep)}
    indices = [i for i, r in enumerate(dataset.records) if r.label in relabel]
    if not indices:
        raise DataError(f"no image of the {classes} classes")
    labels = [relabel[dataset.records[i].label] for i in indices]
    return indices, labels, [dataset.class_names[old] for old in keep]


class _Sweep:
    """The state one process keeps across the runs of a sweep."""

    def __init__(self, *, backbone: Backbone, expected: RunRecords, data_root: Path,
                 output: Path, device: str | torch.device | None, load_dataset: DatasetLoader,
                 sample: Sampler, share: bool, batch_size: int, num_workers: int,
                 progress: bool) -> None:
        self.backbone = backbone
        self.expected = expected
        self.methods = expected.methods
        self.data_root = data_root
        self.device = device
        self.load_dataset = load_dataset
        self.sample = sample
        self.share = share
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.cache_dir = output / FEATURES_FOLDER if share else None
        self.features = SharedFeatures(self.cache_dir, batch_size=batch_size,
                                       num_workers=num_workers, progress=progress)
        self.head = SharedViewsHead(TrainingViews(batch_size=batch_size, progress=progress))
        self.datasets: dict[str, ResearchDataset] = {}
        self.versions = library_versions()

    def dataset(self, name: str) -> ResearchDataset:
        if name not in self.datasets:
            self.datasets[name] = self.load_dataset(name, self.data_root)
        return self.datasets[name]

    def run(self, spec: RunSpec) -> RunResult:
        started = time.perf_counter()
        method = self.methods[spec.method]
        record = self.expected.record(spec)
        fingerprint = self.expected.fingerprint(record)
        train_images: list[str] = []
        if method.zero_shot:
            train_seconds = 0.0
            templates: dict[str, str] = {}
            metrics = {t.key: self.evaluate_zero_shot(method, t, templates) for t in spec.eval}
            record["zero_shot_templates"] = templates
        else:
            dataset = self.dataset(spec.dataset)
            train = self.training_set(spec, dataset)
            config = self.expected.config(spec).model_copy(update={
                "feature_cache_dir": str(self.cache_dir) if self.share else None})
            pipeline = method.create_pipeline(self.backbone, training=config,
                                              device=self.device)
            pipeline.fit(train, task_head=self.head if self.share else None)
            train_images = training_image_list(dataset, train)
            train_seconds = time.perf_counter() - started
            metrics = {t.key: self.evaluate(pipeline, t, zero_shot=False) for t in spec.eval}
        total = time.perf_counter() - started
        return RunResult(
            run=spec, method=record, metrics=metrics, train_images=train_images,
            seconds={"train": train_seconds, "eval": total - train_seconds, "total": total},
            versions=dict(self.versions), backbone=dict(self.expected.backbone_record),
            fingerprint=fingerprint,
        )

    def training_set(self, spec: RunSpec, dataset: ResearchDataset
                     ) -> ImageClassificationDataset:
        """The run's few-shot training images (its seed), of its classes."""
        if dataset.train is None:
            raise DataError(f"{dataset.name} has no training split; it can only be evaluated")
        train, _ = self.sample(dataset, spec.shots, seed=spec.seed)
        if spec.train_classes == "all":
            return train
        return subsample_classes(train, research_class_labels(train, spec.train_classes))

    def evaluate_zero_shot(self, method: Method, target: EvalTarget,
                           templates: dict[str, str]) -> dict[str, float]:
        """Zero-shot metrics on ``target`` with its dataset's hand-written template."""
        dataset = self.dataset(target.dataset)
        options = {}
        if method.generator.name == "rule-based" and \
                "zero_shot_templates" not in method.generator.config:
            options["zero_shot_templates"] = [dataset.template]
            templates[target.dataset] = dataset.template
        pipeline = method.create_pipeline(self.backbone, training=TrainingConfig(progress=False),
                                          device=self.device, generator_config=options)
        return self.evaluate(pipeline, target, zero_shot=True)

    @staticmethod
    def frozen_encoder(pipeline: CoTPipeline) -> bool:
        """Whether the pipeline's image features are the frozen encoder's (those the sweep
        shares): its tuner's ``encode_images`` is the frozen one, and it tunes no part of the
        image encoder."""
        return (encoder_id(pipeline) == encoder_id(pipeline, zero_shot=True)
                and not pipeline.tuner.tunes_image_encoder)

    def evaluate(self, pipeline: CoTPipeline, target: EvalTarget, *, zero_shot: bool
                 ) -> dict[str, float]:
        """Accuracy, mean per-class accuracy and the number of images on ``target``'s test
        images, over its classes (bound with ``set_classes`` when they are other classes)."""
        from cotprompt.types import Task

        dataset = self.dataset(target.dataset)
        test = dataset.test
        if target.classes != "all" and dataset.train is None:
            raise DataError(f"{dataset.name}: base/new classes need a training split")
        indices, labels, names = _subset(test, target.classes, dataset.train)
        task = Task.classification(names, dataset=dataset.name)
        if pipeline.task is None or list(pipeline.task.labels) != list(task.labels):
            pipeline.set_classes(task)
        if self.share and (zero_shot or self.frozen_encoder(pipeline)):
            features = self.features.split_features(pipeline, f"{dataset.name}/test", test)
            features = features[torch.tensor(indices, dtype=torch.long)]
            logits = (pipeline.zero_shot_logits(features) if zero_shot
                      else pipeline.logits_from_features(features, chunk=self.batch_size))
            check_finite_scores(logits, lambda i: test.records[indices[i]].describe(),
                                total=len(indices), zero_shot=zero_shot,
                                consequence="; no accuracy can be computed")
            result = EvaluationResult.from_predictions(logits.argmax(-1).cpu(), labels, names)
        else:  # as `cotprompt eval` would: encode the images for this evaluation
            records = [ImageRecord(path=test.records[i].path, label=y,
                                   image=test.records[i].image)
                       for i, y in zip(indices, labels, strict=True)]
            subset = ImageClassificationDataset(records, names)
            evaluated = pipeline.evaluate(subset, batch_size=self.batch_size,
                                          zero_shot=zero_shot)
            assert isinstance(evaluated, EvaluationResult)
            result = evaluated
        return {"accuracy": result.accuracy,
                "mean_per_class_accuracy": result.mean_per_class_accuracy,
                "num_images": len(indices)}
