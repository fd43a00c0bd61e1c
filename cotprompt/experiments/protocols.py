"""The field's four protocols as lists of runs (:class:`~cotprompt.experiments.results.RunSpec`).

- ``base2new`` (CoCoOp, Table 1): per dataset, train on the base half of the classes (16 shots),
  evaluate on the test images of the base classes and of the new classes.
- ``cross_dataset`` (CoCoOp, Table 2): train on ImageNet (all classes, 16 shots), evaluate on
  ImageNet and on the other ten datasets.
- ``domain_generalization`` (CoOp, Table 2; CoCoOp, Table 3): train on ImageNet, evaluate on
  ImageNet, ImageNet-V2, -Sketch, -A and -R (-A and -R cover 200 of the 1,000 classes: each
  target is evaluated over its own class names, as the research code does).
- ``few_shot`` (CoOp, Figure 3): 1, 2, 4, 8 and 16 shots on all classes of every dataset.

Default methods (:data:`DEFAULT_METHODS`) follow the papers' baselines: base-to-new,
cross-dataset and domain generalisation compare with CoCoOp's paper, whose CoOp is
``vit_b16_ctxv1`` (4 vectors from "a photo of a": ``coop_ctxv1``); the few-shot protocol is
CoOp's own, with 16 random vectors (``coop``).

Seeds are integers >= 1: the research code leaves seed 0 unseeded (``if args.seed:`` in its
``train.py``), so a seed-0 run could not be compared with it.

A zero-shot method (``zsclip``) is not trained: it has one run per dataset, with ``shots`` 0 and
``seed`` 0, whatever the seeds and shots of the sweep. Dataset names are those of the research
code's ``configs/datasets/*.yaml`` (``caltech101``, ``oxford_pets``, ``imagenet_a``...).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from types import MappingProxyType

from cotprompt.data.research.registry import IMAGENET_VARIANTS, STANDARD_DATASETS
from cotprompt.errors import ConfigError
from cotprompt.experiments.results import Classes, EvalTarget, RunSpec

__all__ = [
    "COCOOP_METHODS",
    "DEFAULT_METHODS",
    "DEFAULT_SEEDS",
    "DG_TARGETS",
    "FEW_SHOTS",
    "FEW_SHOT_METHODS",
    "PROTOCOLS",
    "STANDARD_DATASETS",
    "base2new",
    "build_runs",
    "cross_dataset",
    "domain_generalization",
    "few_shot",
    "shard_runs",
    "sweep_order",
    "training_group",
]

#: The ImageNet variants of domain generalisation (the registry's ``IMAGENET_VARIANTS``).
DG_TARGETS: tuple[str, ...] = IMAGENET_VARIANTS
#: The targets of cross-dataset transfer from ImageNet: the other standard datasets.
_CROSS_DATASET_TARGETS: tuple[str, ...] = tuple(d for d in STANDARD_DATASETS if d != "imagenet")
#: CoCoOp's paper's methods: its CoOp baseline is ``vit_b16_ctxv1`` (``coop_ctxv1``).
COCOOP_METHODS: tuple[str, ...] = ("zsclip", "coop_ctxv1", "cocoop", "cotpt")
#: CoOp's few-shot protocol: CoOp with 16 random context vectors (``coop``).
FEW_SHOT_METHODS: tuple[str, ...] = ("zsclip", "coop", "cocoop", "cotpt")
#: Protocol -> its default methods.
DEFAULT_METHODS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "base2new": COCOOP_METHODS,
    "cross_dataset": COCOOP_METHODS,
    "domain_generalization": COCOOP_METHODS,
    "few_shot": FEW_SHOT_METHODS,
})
DEFAULT_SEEDS: tuple[int, ...] = (1, 2, 3)
FEW_SHOTS: tuple[int, ...] = (1, 2, 4, 8, 16)

ZERO_SHOT_METHODS: tuple[str, ...] = ("zsclip",)


def _check(datasets: Sequence[str], methods: Sequence[str], seeds: Sequence[int],
           shots: Sequence[int]) -> None:
    for what, values in (("datasets", datasets), ("methods", methods), ("seeds", seeds),
                         ("shots", shots)):
        if not values:
            raise ConfigError(f"a sweep needs at least one of {what}")
        if len(set(values)) != len(values):
            raise ConfigError(f"{what} are listed twice: {list(values)}")
    bad_seeds = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int)
                 or not 1 <= s < 2**63]
    if bad_seeds:
        raise ConfigError(f"seeds must be integers in 1..2**63-1 (the research code leaves "
                          f"seed 0 unseeded), got {bad_seeds}")
    bad_shots = [k for k in shots if isinstance(k, bool) or not isinstance(k, int) or k < 1]
    if bad_shots:
        raise ConfigError(f"shots must be integers >= 1, got {bad_shots}")


def _runs(protocol: str, dataset: str, methods: Sequence[str], seeds: Sequence[int],
          shots: Sequence[int], train_classes: Classes, targets: tuple[EvalTarget, ...],
          zero_shot_methods: Collection[str]) -> list[RunSpec]:
    runs = []
    for method in methods:
        if method in zero_shot_methods:  # deterministic and untrained: one run
            runs.append(RunSpec(protocol, method, dataset, 0, 0, train_classes, targets))
            continue
        runs += [RunSpec(protocol, method, dataset, seed, k, train_classes, targets)
                 for k in shots for seed in seeds]
    return runs


def base2new(
    datasets: Sequence[str] = STANDARD_DATASETS,
    methods: Sequence[str] = COCOOP_METHODS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    shots: int = 16,
    *,
    zero_shot_methods: Collection[str] = ZERO_SHOT_METHODS,
) -> list[RunSpec]:
    """Train on each dataset's base classes; evaluate ``<dataset>/base`` and ``<dataset>/new``.

    Raises:
        ConfigError: Empty or repeated datasets, methods or seeds; invalid seeds or shots.
    """
    _check(datasets, methods, seeds, [shots])
    runs = []
    for dataset in datasets:
        targets = (EvalTarget(dataset, "base"), EvalTarget(dataset, "new"))
        runs += _runs("base2new", dataset, methods, seeds, [shots], "base", targets,
                      zero_shot_methods)
    return runs


def _transfer(protocol: str, source: str, targets: Sequence[str], methods: Sequence[str],
              seeds: Sequence[int], shots: int, zero_shot_methods: Collection[str]
              ) -> list[RunSpec]:
    _check(targets, methods, seeds, [shots])
    evals = (EvalTarget(source, "all"),
             *(EvalTarget(t, "all") for t in targets if t != source))
    return _runs(protocol, source, methods, seeds, [shots], "all", evals, zero_shot_methods)


def cross_dataset(
    targets: Sequence[str] = _CROSS_DATASET_TARGETS,
    methods: Sequence[str] = COCOOP_METHODS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    shots: int = 16,
    *,
    source: str = "imagenet",
    zero_shot_methods: Collection[str] = ZERO_SHOT_METHODS,
) -> list[RunSpec]:
    """Train on ``source`` (all classes); evaluate on ``source`` and on every target, each over
    its own classes.

    Raises:
        ConfigError: As :func:`base2new`.
    """
    return _transfer("cross_dataset", source, targets, methods, seeds, shots, zero_shot_methods)


def domain_generalization(
    targets: Sequence[str] = DG_TARGETS,
    methods: Sequence[str] = COCOOP_METHODS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    shots: int = 16,
    *,
    source: str = "imagenet",
    zero_shot_methods: Collection[str] = ZERO_SHOT_METHODS,
) -> list[RunSpec]:
    """Train on ImageNet; evaluate on ImageNet and its variants (each over its own class names:
    ImageNet-A and -R over their 200 classes).

    Raises:
        ConfigError: As :func:`base2new`.
    """
    return _transfer("domain_generalization", source, targets, methods, seeds, shots,
                     zero_shot_methods)


def few_shot(
    datasets: Sequence[str] = STANDARD_DATASETS,
    methods: Sequence[str] = FEW_SHOT_METHODS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    shots: Sequence[int] = FEW_SHOTS,
    *,
    zero_shot_methods: Collection[str] = ZERO_SHOT_METHODS,
) -> list[RunSpec]:
    """Train on all classes with each number of shots; evaluate ``<dataset>/all``.

    Raises:
        ConfigError: As :func:`base2new`.
    """
    _check(datasets, methods, seeds, shots)
    runs = []
    for dataset in datasets:
        runs += _runs("few_shot", dataset, methods, seeds, shots, "all",
                      (EvalTarget(dataset, "all"),), zero_shot_methods)
    return runs


#: Protocol name -> the function that lists its runs.
PROTOCOLS: dict[str, Callable[..., list[RunSpec]]] = {
    "base2new": base2new,
    "cross_dataset": cross_dataset,
    "domain_generalization": domain_generalization,
    "few_shot": few_shot,
}


def build_runs(
    protocol: str,
    *,
    datasets: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    shots: Sequence[int] | None = None,
    source: str | None = None,
    zero_shot_methods: Collection[str] = ZERO_SHOT_METHODS,
) -> list[RunSpec]:
    """The runs of ``protocol`` with the given choices (``None``: the protocol's defaults), in
    :func:`sweep_order`.

    Args:
        protocol: A name of :data:`PROTOCOLS`.
        datasets: Training datasets (``base2new``, ``few_shot``) or evaluation targets
            (``cross_dataset``, ``domain_generalization``).
        shots: Shots per class; ``few_shot`` takes several, the others one.
        source: The training dataset of ``cross_dataset`` and ``domain_generalization``.
        zero_shot_methods: The methods that are not trained (one run per dataset).

    Raises:
        ConfigError: Unknown protocol (with the closest name), several shots for a protocol
            that takes one, a source for a protocol without one, or invalid choices.
    """
    from cotprompt.pipeline.config import choose_preset

    choose_preset("protocol", protocol, PROTOCOLS)
    kwargs: dict[str, object] = {"zero_shot_methods": zero_shot_methods}
    if datasets is not None:
        kwargs["targets" if protocol in ("cross_dataset", "domain_generalization")
               else "datasets"] = list(datasets)
    if methods is not None:
        kwargs["methods"] = list(methods)
    if seeds is not None:
        kwargs["seeds"] = list(seeds)
    if shots is not None:
        if protocol == "few_shot":
            kwargs["shots"] = list(shots)
        elif len(shots) != 1:
            raise ConfigError(f"{protocol} trains with one number of shots, got {list(shots)}")
        else:
            kwargs["shots"] = shots[0]
    if source is not None:
        if protocol not in ("cross_dataset", "domain_generalization"):
            raise ConfigError(f"{protocol} has no source dataset (it trains on each dataset)")
        kwargs["source"] = source
    return sweep_order(PROTOCOLS[protocol](**kwargs))


def sweep_order(runs: Sequence[RunSpec]) -> list[RunSpec]:
    """The runs in the order a sweep runs and shards them, whatever order they were given in:
    by protocol, dataset, classes, shots and seed, then method, so that the methods that train
    on the same images follow each other (they share those images' features).

    Raises:
        ConfigError: Two different runs have the same run id.
    """
    by_id: dict[str, RunSpec] = {}
    for run in runs:
        known = by_id.setdefault(run.run_id, run)
        if known != run:
            raise ConfigError(f"two different runs have the id {run.run_id}")
    return sorted(by_id.values(), key=lambda r: (r.protocol, r.dataset, r.train_classes, r.shots,
                                                  r.seed, r.method))


def training_group(run: RunSpec) -> tuple[str, str, int, int]:
    """The runs that train on the same images and views: (dataset, train classes, shots,
    seed), whatever the method and protocol (cross-dataset and domain generalisation both
    train on ImageNet). A zero-shot method's runs form a group of their own per dataset."""
    return (run.dataset, run.train_classes, run.shots, run.seed)


def shard_runs(runs: Sequence[RunSpec], index: int, count: int) -> list[RunSpec]:
    """Shard ``index`` of ``count`` of the runs (in :func:`sweep_order`): whole training groups
    (:func:`training_group`, their augmented views are encoded once for all their methods),
    each given in sweep order to the shard with the fewest runs so far (ties: the lowest
    index). A function of the runs only: every process of a sweep must be given the same runs,
    and then the shards are disjoint and their union is the sweep.

    Raises:
        ConfigError: Not ``0 <= index < count``, or two different runs with one id.
    """
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard must be i/n with 0 <= i < n, got {index}/{count}")
    ordered = sweep_order(runs)
    groups: dict[tuple[str, str, int, int], list[RunSpec]] = {}
    for run in ordered:
        groups.setdefault(training_group(run), []).append(run)
    sizes = [0] * count
    mine: set[tuple[str, str, int, int]] = set()
    for key, members in groups.items():
        shard = min(range(count), key=lambda i: (sizes[i], i))
        sizes[shard] += len(members)
        if shard == index:
            mine.add(key)
    return [run for run in ordered if training_group(run) in mine]
