"""The accelerate side of a training run: the ``Accelerator`` (:func:`make_accelerator`:
precision, gradient accumulation, trackers, each as the training options or the launcher say)
and the experiment trackers (TensorBoard, W&B, MLflow...) of ``log_with``.

:func:`tracker_options` turns the training options into the ``Accelerator``'s ``log_with`` and
``project_dir`` arguments, refusing a tracker whose package is missing before anything runs;
:func:`start_trackers` starts them with the run's hyperparameters
(``accelerator.init_trackers``), :func:`log_epoch` logs one epoch's record
(``accelerator.log(..., step=epoch)``) and :func:`finish_trackers` closes them, also when the
run fails.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import torch

from cotprompt.config import config_record
from cotprompt.errors import ConfigError, TrainingError
from cotprompt.training.config import ALL_TRACKERS, TRACKER_PACKAGES, TrainingConfig

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = ["PROJECT_NAME", "accumulation_steps", "finish_trackers", "hyperparameters", "log_epoch",
           "make_accelerator", "start_trackers", "tracker_options"]

logger = logging.getLogger("cotprompt.training.trainer")  # the logger name users configure

#: The project (W&B project, TensorBoard sub-folder of ``project_dir``...) runs are logged to.
PROJECT_NAME = "cotprompt"
#: Options that say how a run is carried out, not what it trains (left out of the
#: hyperparameters a tracker records).
_RUN_OPTIONS = frozenset({"progress", "log_every", "num_workers", "checkpoint_every",
                          "keep_checkpoints"})


#: ``accelerate launch --mixed_precision`` values (its ``ACCELERATE_MIXED_PRECISION``) by precision.
_LAUNCHED_PRECISION = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}


def make_accelerator(precision: str | TrainingConfig) -> Accelerator:
    """An ``accelerate.Accelerator`` for the precision, or for all the accelerate settings of
    training options (precision, gradient accumulation, trackers).

    ``auto`` takes the precision ``accelerate launch --mixed_precision`` chose (it sets
    ``ACCELERATE_MIXED_PRECISION``), else bf16 on a GPU that supports it, else fp32; an explicit
    precision wins over the launcher. Likewise ``gradient_accumulation_steps`` (``None``: the
    launcher's ``--gradient_accumulation_steps``, else 1). Runs on CUDA when available, else on
    Apple's MPS, else on the CPU.

    Raises:
        TrainingError: fp16 without a GPU.
        ConfigError: A tracker whose package is missing, one that writes files without
            ``project_dir``, or a launcher's accumulation steps that are not a positive integer.
    """
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin

    config = precision if isinstance(precision, TrainingConfig) else None
    precision = config.precision if config is not None else str(precision)
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
    """The gradient accumulation steps of a run: ``configured``, else what ``accelerate launch
    --gradient_accumulation_steps`` set (``ACCELERATE_GRADIENT_ACCUMULATION_STEPS``), else 1.

    Raises:
        ConfigError: The launcher's value is not a positive integer.
    """
    if configured is not None:
        return configured
    launched = os.environ.get("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "").strip()
    if not launched:
        return 1
    if not launched.isdigit() or int(launched) < 1:
        raise ConfigError(f"ACCELERATE_GRADIENT_ACCUMULATION_STEPS={launched!r} (from accelerate "
                          "launch) is not a positive integer")
    return int(launched)


def tracker_options(config: TrainingConfig) -> dict[str, Any]:
    """The ``Accelerator`` arguments of ``config.log_with`` and ``config.project_dir``
    (empty without trackers); checked before any work.

    Raises:
        ConfigError: A named tracker's package is not installed (naming it), or a tracker that
            writes files without ``project_dir``.
    """
    if not config.log_with:
        return {}
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


def hyperparameters(config: TrainingConfig) -> dict[str, int | float | str | bool]:
    """The options a tracker records for a run: what changes its result (no run settings, no
    places on this machine), flat, values that are not numbers, strings or booleans as text
    (TensorBoard's hyperparameters take no ``None`` nor lists)."""
    record = config_record(config)
    return {key: value if isinstance(value, (bool, int, float, str)) else str(value)
            for key, value in record.items() if key not in _RUN_OPTIONS}


def start_trackers(accelerator: Accelerator, config: TrainingConfig) -> None:
    """Start the accelerator's trackers (if any) with the run's :func:`hyperparameters`; on the
    main process only, as accelerate does."""
    if accelerator.log_with:
        values = hyperparameters(config)  # with the accumulation the launcher may have chosen
        values["gradient_accumulation_steps"] = accelerator.gradient_accumulation_steps
        accelerator.init_trackers(PROJECT_NAME, config=values)


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
