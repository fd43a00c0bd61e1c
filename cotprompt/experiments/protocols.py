"""The field's four protocols as lists of runs (:class:`~cotprompt.experiments.results.RunSpec`).

- ``base2new`` (CoCoOp, Table 1): per dataset, train on the base half of the classes (16 shots),
  evaluate on the test images of the base classes and of the new classes.
- ``cross_dataset`` (CoCoOp, Table 2): train on ImageNet (all classes, 16 shots), evaluate on
  ImageNet and on the other ten datasets.
- ``domain_generalization`` (CoOp, Table 2; CoCoOp, Table 3): train on ImageNet, evaluate on
  ImageNet, ImageNet-V2, -Sketch, -A and -R (-A and -R cover 200 of the 1,000 classes: each
  target is evaluated over its own class names, as the research code does).
- ``few_shot`` (CoOp, Figure 3): 1, 2, 4, 8 and 16 shots on all classes of every dataset.

A zero-shot method (``zsclip``) is not trained: it has one run per dataset, with ``shots`` 0 and
``seed`` 0, whatever the seeds and shots of the sweep. Dataset names are those of the research
code's ``configs/datasets/*.yaml`` (``caltech101``, ``oxford_pets``, ``imagenet_a``...).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from cotprompt.errors import ConfigError
from cotprompt.experiments.results import Classes, EvalTarget, RunSpec

__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_SEEDS",
    "DG_TARGETS",
    "FEW_SHOTS",
    "PROTOCOLS",
    "STANDARD_DATASETS",
    "base2new",
    "build_runs",
    "cross_dataset",
    "domain_generalization",
    "few_shot",
    "sweep_order",
]

#: The 11 datasets of CoOp and CoCoOp, in the papers' column order.
STANDARD_DATASETS: tuple[str, ...] = (
    "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
    "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101",
)
#: The ImageNet variants of domain generalisation.
DG_TARGETS: tuple[str, ...] = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
DEFAULT_METHODS: tuple[str, ...] = ("zsclip", "coop", "cocoop", "cotpt")
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
                 or not 0 <= s < 2**63]
    if bad_seeds:
        raise ConfigError(f"seeds must be integers in 0..2**63-1, got {bad_seeds}")
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
    methods: Sequence[str] = DEFAULT_METHODS,
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
    targets: Sequence[str] = tuple(d for d in STANDARD_DATASETS if d != "imagenet"),
    methods: Sequence[str] = DEFAULT_METHODS,
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
    methods: Sequence[str] = DEFAULT_METHODS,
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
    methods: Sequence[str] = DEFAULT_METHODS,
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
