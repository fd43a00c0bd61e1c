"""The accelerate side of a training run: the ``Accelerator`` (:func:`make_accelerator`:
precision, gradient accumulation, trackers, each as the training options or the launcher say)
and the experiment trackers (TensorBoard, W&B, MLflow...) of ``log_with``.

:func:`tracker_options` turns the training options into the ``Accelerator``'s ``log_with`` and
``project_dir`` arguments, refusing a tracker whose package is missing before anything runs;
:func:`start_trackers` starts them with the run's hyperparameters
(``accelerator.init_trackers``) under a run name of their own (:func:`run_name`; each run
writes files to its own folder ``project_dir/<run name>/``), :func:`log_epoch` logs one epoch's
record (``accelerator.log(..., step=epoch)``) and :func:`finish_trackers` closes them, also when
the run fails.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import torch

from cotprompt.config import config_record
from cotprompt.errors import ConfigError, TrainingError
from cotprompt.io import check_writable
from cotprompt.training.config import (
    ALL_TRACKERS,
    PROJECT_NAME,
    TRACKER_PACKAGES,
    TrainingConfig,
    env_int,
)

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = ["PROJECT_NAME", "accumulation_steps", "check_trackers", "finish_trackers",
           "hyperparameters", "log_epoch", "make_accelerator", "run_name", "start_trackers",
           "tracker_options"]

logger = logging.getLogger("cotprompt.training.trainer")  # the logger name users configure

#: Options that say how a run is carried out, not what it trains (left out of the
#: hyperparameters a tracker records).
_RUN_OPTIONS = frozenset({"progress", "log_every", "num_workers", "checkpoint_every",
                          "keep_checkpoints"})


#: ``accelerate launch --mixed_precision`` values (its ``ACCELERATE_MIXED_PRECISION``) by precision.
_LAUNCHED_PRECISION = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}
#: The precision options of accelerate's ``mixed_precision`` values.
_PRECISION_NAMES = {"no": "fp32", "bf16": "bf16", "fp16": "fp16", "fp8": "fp8"}


def make_accelerator(options: str | TrainingConfig) -> Accelerator:
    """An ``accelerate.Accelerator`` for a precision (``auto``, ``fp32``, ``bf16``, ``fp16``), or
    for all the accelerate settings of training options (precision, gradient accumulation,
    trackers).

    ``auto`` takes the precision ``accelerate launch --mixed_precision`` chose (it sets
    ``ACCELERATE_MIXED_PRECISION``), else bf16 on a GPU that supports it, else fp32; an explicit
    precision wins over the launcher. Likewise ``gradient_accumulation_steps`` (``None``: see
    :func:`accumulation_steps`). Runs on CUDA when available, else on Apple's MPS, else on the
    CPU.

    Raises:
        TrainingError: fp16 without a GPU.
        ConfigError: A tracker whose package is missing, one that writes files without
            ``project_dir``, or ``ACCELERATE_GRADIENT_ACCUMULATION_STEPS`` that is not a
            positive integer.
    """
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin

    config = options if isinstance(options, TrainingConfig) else None
    precision = config.precision if config is not None else str(options)
    steps = accumulation_steps(config.gradient_accumulation_steps if config else None)
    trackers = tracker_options(config) if config is not None else {}
    cuda = torch.cuda.is_available()
    mps = not cuda and torch.backends.mps.is_available()
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "").strip().lower()
    if precision == "auto" and launched in _LAUNCHED_PRECISION:
        precision = _LAUNCHED_PRECISION[launched]
    elif precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not (cuda or mps):
        raise TrainingError("precision='fp16' needs a GPU; use 'fp32' or 'bf16' on the CPU")
    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    # the plugin, unlike the gradient_accumulation_steps argument, is not overridden by the
    # launcher's environment: the options' explicit value wins
    plugin = GradientAccumulationPlugin(num_steps=steps, sync_with_dataloader=False)
    return Accelerator(cpu=not (cuda or mps), mixed_precision=mixed,
                       gradient_accumulation_plugin=plugin, **trackers)


def accumulation_steps(configured: int | None) -> int:
    """The gradient accumulation steps of a run: ``configured``, else
    ``ACCELERATE_GRADIENT_ACCUMULATION_STEPS``, else 1.

    accelerate's launcher sets that variable only for DeepSpeed (``accelerate launch
    --use_deepspeed --gradient_accumulation_steps k``); its plain, multi-GPU and FSDP launches
    do not pass ``--gradient_accumulation_steps`` on (accelerate's
    ``prepare_simple_launcher_cmd_env``): set ``gradient_accumulation_steps`` instead.

    Raises:
        ConfigError: The variable is set but not a positive integer.
    """
    if configured is not None:
        return configured
    return env_int("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", default=1)


def tracker_options(config: TrainingConfig) -> dict[str, Any]:
    """The ``Accelerator`` arguments of ``config.log_with`` and ``config.project_dir``
    (empty without trackers); checked before any work.

    Raises:
        ConfigError: A named tracker's package is not installed (naming it), a tracker that
            writes files without ``project_dir``, or a ``tracker_config`` key that names a
            training option the trackers record (see :func:`hyperparameters`).
    """
    if not config.log_with:
        return {}
    hyperparameters(config)  # tracker_config's keys; the components' are checked at the start
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    available = {str(tracker) for tracker in get_available_trackers()}
    log_with: list[Any] = []
    for item in config.log_with:
        if item == ALL_TRACKERS:
            found = sorted(available & set(TRACKER_PACKAGES))
            if not found:
                logger.warning("log_with: all, but no tracker package is installed (e.g. pip "
                               "install tensorboard); nothing is logged")
            log_with.extend(name for name in found if name not in log_with)
            continue
        if isinstance(item, str) and item not in available:
            raise ConfigError(f"log_with names {item!r}, whose package is not installed: "
                              f"pip install {TRACKER_PACKAGES[item]}")
        log_with.append(item)
    files = [name for name in log_with
             if isinstance(name, str) and LOGGER_TYPE_TO_CLASS[name].requires_logging_directory]
    if files and config.project_dir is None:
        raise ConfigError(f"log_with {', '.join(files)} writes files: set project_dir to the "
                          "folder they go to")
    return {"log_with": log_with, "project_dir": config.project_dir} if log_with else {}


def check_trackers(config: TrainingConfig) -> None:
    """Check the tracker options before any slow work: the packages of ``log_with``
    (:func:`tracker_options`) and that ``project_dir`` can be written.

    Raises:
        ConfigError: A missing tracker package, a file tracker without ``project_dir``, a
            ``tracker_config`` key that names a training option, or a ``project_dir`` that
            cannot be written (naming it and why).
    """
    if tracker_options(config) and config.project_dir is not None:
        check_writable(config.project_dir, what="tracker folder")


def hyperparameters(
    config: TrainingConfig, *, components: Mapping[str, Any] | None = None,
    precision: str | None = None,
) -> dict[str, int | float | str | bool]:
    """The values a tracker records for a run, flat (nested mappings as dotted keys): the
    options that change its result (no run settings, no places on this machine), each
    component's name and options (``components``: ``{kind: {"name": ..., "config": {...}}}``,
    as :meth:`CoTPipeline.component_records` gives; ``tuner``, ``tuner.n_ctx``...), the
    precision actually used (``precision``, instead of ``auto``) and ``tracker_config``.

    TensorBoard's hyperparameters take numbers, strings and booleans only: lists are JSON text
    and ``None`` values are left out.

    Raises:
        ConfigError: A ``tracker_config`` key that names one of the run's own values (``lr``,
            ``tuner.n_ctx``...), which it would replace in the record.
    """
    values: dict[str, Any] = {key: value for key, value in config_record(config).items()
                              if key not in _RUN_OPTIONS}
    if precision is not None:
        values["precision"] = precision
    for kind, record in (components or {}).items():
        if isinstance(record, Mapping):
            values[kind] = record.get("name")
            _flatten(record.get("config") or {}, kind, values)
    extra: dict[str, Any] = {}
    _flatten(config.tracker_config or {}, "", extra)
    taken = sorted(set(extra) & set(values))
    if taken:
        raise ConfigError(f"tracker_config: {', '.join(map(repr, taken))} would replace the "
                          "run's own value(s) in the trackers' record; rename the key(s)")
    values.update(extra)
    return {key: value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
            for key, value in values.items() if value is not None}


def _flatten(mapping: Mapping[str, Any], prefix: str, into: dict[str, Any]) -> None:
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            _flatten(value, name, into)
        elif not isinstance(value, Mapping):  # an empty mapping records nothing
            into[name] = value


def run_name(config: TrainingConfig, now: datetime | None = None, *,
             resumed: str | None = None) -> str:
    """The name of a run in its trackers: ``config.run_name`` when set, else ``resumed`` (the
    name of the run a checkpoint was written by: a resumed run goes on under its name and in
    its folder), else ``<UTC time>-seed<seed>`` (``20261130-094512-seed1``) with ``-2``,
    ``-3``... added when ``project_dir`` already holds a run of that name, so that each run has
    a folder of its own."""
    if config.run_name is not None:
        return config.run_name
    if resumed is not None:
        return resumed
    now = now or datetime.now(timezone.utc)
    name = f"{now:%Y%m%d-%H%M%S}-seed{config.seed}"
    if config.project_dir is None:
        return name
    unique, n = name, 1
    while os.path.exists(os.path.join(config.project_dir, unique)):
        n += 1
        unique = f"{name}-{n}"
    return unique


def start_trackers(accelerator: Accelerator, config: TrainingConfig, *,
                   components: Mapping[str, Any] | None = None,
                   resumed: str | None = None) -> str | None:
    """Start the accelerator's trackers (if any) with the run's :func:`hyperparameters` (with
    ``components``' names and options, the precision and accumulation steps in use), under
    the run's :func:`run_name` (``resumed``: the name a resumed checkpoint's run had) in the
    project ``config.tracker_project``: trackers that write files write them to
    ``project_dir/<run name>/`` (TensorBoard: ``project_dir/<run name>/<project>/``), W&B and
    MLflow name the run so. On the main process only, as accelerate does.

    Raises:
        ConfigError: A ``tracker_config`` key that names one of the run's values.

    Returns:
        The run's name, ``None`` without trackers.
    """
    if not accelerator.log_with:
        return None
    name = run_name(config, resumed=resumed)
    if config.project_dir is not None:
        # accelerate gives file trackers one folder: this run's own
        accelerator.project_configuration.logging_dir = os.path.join(config.project_dir, name)
    values = hyperparameters(config, components=components,
                             precision=_PRECISION_NAMES.get(str(accelerator.mixed_precision)))
    values["gradient_accumulation_steps"] = accelerator.gradient_accumulation_steps
    accelerator.init_trackers(config.tracker_project, config=values,
                              init_kwargs={"wandb": {"name": name}, "mlflow": {"run_name": name}})
    logger.info("logging the run to its trackers as %s", name)
    return name


def log_epoch(accelerator: Accelerator, record: dict[str, Any]) -> None:
    """Log one epoch's history record (its numbers) at ``step=epoch`` to the trackers."""
    if accelerator.trackers:
        values = {key: value for key, value in record.items()
                  if key != "epoch" and isinstance(value, (int, float))
                  and not isinstance(value, bool)}
        accelerator.log(values, step=int(record["epoch"]))


def finish_trackers(accelerator: Accelerator) -> None:
    """Close the trackers a run started (flush files, end the W&B run...).

    ``accelerator.end_training()`` would do it too, but it also destroys the process group,
    which the same processes still need after ``fit`` (evaluation, saving).
    """
    trackers, accelerator.trackers = list(accelerator.trackers), []
    for tracker in trackers:
        try:
            tracker.finish()
        except Exception as exc:  # a tracker's failure to close must not hide the run's result
            logger.warning("could not close the %s tracker: %s", tracker.name, exc)
