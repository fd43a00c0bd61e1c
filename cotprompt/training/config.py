"""Training options (CoOp / CoCoOp's recipe by default)."""

from __future__ import annotations

import difflib
import logging
import multiprocessing
import os
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator

from cotprompt.config import ComponentConfig, machine_local
from cotprompt.errors import ConfigError

logger = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16"]
#: ``num_workers``: a number of DataLoader worker processes, or ``"auto"``.
Workers = Annotated[int, Field(ge=0)] | Literal["auto"]

#: The default ``tracker_project``.
PROJECT_NAME = "cotprompt"
#: The most worker processes ``"auto"`` starts: more rarely help a prompt-tuning step and each
#: holds a copy of the dataset's records.
MAX_AUTO_WORKERS = 8


class TrainingConfig(ComponentConfig):
    """How :meth:`CoTPipeline.fit` trains.

    Defaults follow CoCoOp's published recipe (SGD, lr 0.002, momentum 0.9, weight decay 5e-4,
    one warm-up epoch at a constant 1e-5, cosine decay over the epochs, 10 epochs, random resized
    crop and flip), except the batch size: CoCoOp uses 1 because of its memory use, cotprompt's
    batched encoder affords CoOp's 32.

    Args:
        epochs: Passes over the training set.
        batch_size: Images per batch (over all processes); an optimisation step takes
            ``gradient_accumulation_steps`` batches.
        optimizer: ``sgd`` (CoOp / CoCoOp) or ``adamw``.
        lr: Base learning rate.
        momentum: SGD momentum (ignored by AdamW).
        weight_decay: Weight decay.
        warmup_epochs: Epochs at the constant ``warmup_lr`` before the schedule starts.
        warmup_lr: Learning rate during warm-up.
        scheduler: ``cosine`` (annealed per epoch to 0 over ``epochs``) or ``constant``.
        max_grad_norm: Clip the gradient norm (``None``: no clipping).
        seed: The one seed of a run (``0 <= seed < 2**63``): parameter initialisation,
            shuffling, augmentation (classification: a function of seed, epoch and sample;
            retrieval and VQA: of seed and step), dropout and DataLoader workers (see
            :mod:`cotprompt.training.seeding`); ``cotprompt train`` also samples the few-shot
            images with it unless the data section sets its own ``seed``.
        precision: ``auto`` is bf16 autocast on a GPU that supports it and fp32 elsewhere.
        augment: CoOp's random resized crop and flip; ``False`` uses the deterministic
            evaluation transform, which lets frozen image features be computed once.
        cache_features: Compute frozen image features once per run when the transform is
            deterministic and the image encoder is not tuned.
        feature_cache_dir: Also keep those features on disk in this folder, keyed by backbone,
            transform and image contents, and reuse them across runs and methods (see
            :mod:`cotprompt.training.feature_cache`); ``None``: in memory for one run only.
        drop_last: Drop the last incomplete batch of each epoch.
        num_workers: DataLoader worker processes decoding and augmenting images (training and
            its feature-encoding pass), so that loading hides behind compute; ``"auto"``:
            :func:`default_num_workers` (one less than the usable CPUs per local training
            process, at most 8; 0 on one CPU, and 0 where processes start by ``spawn`` or
            ``forkserver``: macOS, Windows); ``0``: in the main process; an explicit number
            starts at most :func:`usable_cpus` (logged). Results do not depend on it.
        checkpoint_dir: Where checkpoints go (``None``: no checkpoints). This folder,
            ``feature_cache_dir`` and ``project_dir`` refuse an empty path.
        checkpoint_every: Save a checkpoint every N optimisation steps (and at the end).
        keep_checkpoints: How many recent checkpoints to keep.
        progress: Show a tqdm progress bar.
        log_every: Log the running loss every N steps.
        gradient_accumulation_steps: Batches whose gradients are averaged before one optimiser
            step (accelerate's gradient accumulation): a step then sees ``batch_size *
            gradient_accumulation_steps`` images; ``None``: 1, or the DeepSpeed launcher's
            value (``accelerate launch --use_deepspeed --gradient_accumulation_steps``, which
            sets ``ACCELERATE_GRADIENT_ACCUMULATION_STEPS``; without DeepSpeed accelerate's
            flag sets nothing: set this option). Steps (``checkpoint_every``, ``log_every``,
            callbacks) count optimiser steps.
        log_with: Experiment trackers accelerate logs the hyperparameters and every epoch's
            record to: names (``tensorboard``, ``wandb``, ``mlflow``, ``comet_ml``, ``aim``,
            ``clearml``, ``dvclive``, ``swanlab``, ``trackio``, or ``all`` installed), and in
            code also ``accelerate.tracking.GeneralTracker`` instances; ``None``: none. Not
            saved with an artifact.
        project_dir: Where trackers that write files (TensorBoard, Aim...) write them;
            relative paths in a config file start from its folder. Not saved with an artifact.
        tracker_project: The project runs are logged to: the W&B project, the MLflow
            experiment, TensorBoard's sub-folder of a run's folder (accelerate passes it to
            every tracker, so it wins over ``WANDB_PROJECT``). Not saved with an artifact.
        run_name: The run's name in its trackers and its folder under ``project_dir``;
            ``None``: ``<UTC time>-seed<seed>`` (``-2``, ``-3``... added when ``project_dir``
            already holds one of that name), or on a resume the name of the run the checkpoint
            was written by, so that the run goes on logging under it. A name set here is used as
            it is: a run logged again under it adds to its folder. This and ``tracker_project``
            are names of ASCII letters, digits, ``.``, ``_`` and ``-`` (:func:`check_tracker_name`).
            Not saved with an artifact.
        tracker_config: More values the trackers record with the run's hyperparameters
            (``cotprompt train`` adds its data section); nested mappings are flattened to
            dotted keys; a key that names one of the run's own values (``lr``, ``tuner``...) is
            refused. Not saved with an artifact.
    """

    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=32, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.002, gt=0)
    momentum: float = Field(default=0.9, ge=0)
    weight_decay: float = Field(default=5e-4, ge=0)
    warmup_epochs: int = Field(default=1, ge=0)
    warmup_lr: float = Field(default=1e-5, gt=0)
    scheduler: Literal["cosine", "constant"] = "cosine"
    max_grad_norm: float | None = Field(default=None, gt=0)
    seed: int = Field(default=1, ge=0, lt=2**63)
    precision: Precision = "auto"
    augment: bool = True
    cache_features: bool = True
    feature_cache_dir: str | None = machine_local(None, description="feature cache folder")
    drop_last: bool = False
    num_workers: Workers = Field(default="auto", union_mode="left_to_right")
    checkpoint_dir: str | None = machine_local(None, description="checkpoint folder")
    checkpoint_every: int | None = Field(default=None, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    progress: bool = True
    log_every: int = Field(default=10, ge=1)
    gradient_accumulation_steps: int | None = Field(default=None, ge=1)
    log_with: list[Any] | None = machine_local(None, description="experiment trackers")
    project_dir: str | None = machine_local(None, description="tracker folder")
    tracker_project: str = machine_local("cotprompt", description="tracker project")
    run_name: str | None = machine_local(None, description="tracker run name")
    tracker_config: dict[str, Any] | None = machine_local(None, description="tracker values")

    @field_validator("feature_cache_dir", "checkpoint_dir", "project_dir")
    @classmethod
    def _check_folder(cls, value: str | None) -> str | None:
        # "" would be the working folder (whose cotprompt/ then shadows the package)
        if value is not None and not value.strip():
            raise ValueError("must be a folder path, not an empty string (None: no folder)")
        return value

    @field_validator("tracker_project", "run_name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        return None if value is None else check_tracker_name(value)

    @field_validator("log_with", mode="before")
    @classmethod
    def _check_trackers(cls, value: Any) -> Any:
        return check_tracker_names(value)

    @field_validator("num_workers", mode="before")
    @classmethod
    def _check_workers(cls, value: Any) -> Any:
        # one message for every bad value, not one per member of the union
        if isinstance(value, str) and value.strip().isdecimal():
            value = int(value)
        if value != "auto" and (isinstance(value, bool) or not isinstance(value, int)
                                or value < 0):
            raise ValueError(f"must be an integer >= 0 or 'auto', got {value!r}")
        return value

    def loader_workers(self) -> int:
        """``num_workers`` as a number (``"auto"`` resolved by :func:`default_num_workers`)."""
        return resolve_num_workers(self.num_workers)


#: The longest ``tracker_project`` / ``run_name`` (a folder name under ``project_dir``).
MAX_NAME_LENGTH = 128
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def check_tracker_name(value: str) -> str:
    """``value`` if it can name a tracker project or run: ASCII letters, digits, ``.``, ``_``
    and ``-``, not starting with ``.``, at most :data:`MAX_NAME_LENGTH` characters. It becomes a
    folder under ``project_dir``: this refuses ``..``, ``.``, slashes, hidden folders and the
    surrounding spaces that a file manager hides.

    Raises:
        ValueError: Naming the value and what a name may hold.
    """
    if (not isinstance(value, str) or len(value) > MAX_NAME_LENGTH
            or not _NAME.fullmatch(value)):
        raise ValueError(f"must be a name of at most {MAX_NAME_LENGTH} ASCII letters, digits, "
                         f"'.', '_' and '-', not starting with '.', got {value!r}")
    return value


def default_num_workers() -> int:
    """What ``num_workers="auto"`` starts: one worker per CPU this process may run on, less one
    for the main process (which runs the model), at most :data:`MAX_AUTO_WORKERS`; 0 (load in
    the main process) on a single CPU. The CPUs are ``os.sched_getaffinity`` where the system
    has it (a container's or ``taskset``'s share), else ``os.cpu_count()``, divided among the
    training processes of this machine (``LOCAL_WORLD_SIZE``, set by ``accelerate launch`` /
    ``torchrun``).

    0 also where worker processes would not start by ``fork`` (macOS and Windows, whose
    default is ``spawn``; ``forkserver``, Linux's default from Python 3.14): such a worker
    imports the user's ``__main__`` again, and a script without an ``if __name__ ==
    "__main__":`` guard then fails (PyTorch's DataLoader notes); logged once. An explicit
    ``num_workers`` still starts workers there."""
    method = start_method()
    if method != "fork":
        if method not in _LOGGED_START_METHODS:
            _LOGGED_START_METHODS.add(method)
            logger.info("num_workers='auto': images load in the main process, as worker "
                        "processes start by %r here; set num_workers explicitly to use workers "
                        "(in a script, under if __name__ == '__main__':)", method)
        return 0
    processes = env_int("LOCAL_WORLD_SIZE", default=1)
    return max(0, min(MAX_AUTO_WORKERS, usable_cpus() // processes - 1))


def usable_cpus() -> int:
    """The CPUs this process may run on: ``os.sched_getaffinity`` where the system has it (a
    container's or ``taskset``'s share), else ``os.cpu_count()``; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def env_int(name: str, *, default: int, minimum: int = 1) -> int:
    """The integer environment variable ``name`` (set by a launcher: ``LOCAL_WORLD_SIZE``,
    ``ACCELERATE_GRADIENT_ACCUMULATION_STEPS``...); ``default`` when unset or blank.

    Raises:
        ConfigError: A value that is not an ASCII integer ``>= minimum``, naming the variable.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < minimum:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer >= {minimum}")
    return int(raw)


#: The start methods :func:`default_num_workers` has logged about (once each).
_LOGGED_START_METHODS: set[str] = set()


def start_method() -> str:
    """How ``multiprocessing`` starts processes here (``fork``, ``spawn``, ``forkserver``): the
    method set, else the platform's default, read without fixing it (a later
    ``multiprocessing.set_start_method`` still works)."""
    return (multiprocessing.get_start_method(allow_none=True)
            or multiprocessing.get_all_start_methods()[0])


def resolve_num_workers(value: Workers) -> int:
    """A ``num_workers`` option as a number of worker processes.

    Raises:
        ConfigError: Neither ``"auto"`` nor an integer >= 0.
    """
    if value == "auto":
        return default_num_workers()
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"num_workers must be an integer >= 0 or 'auto', got {value!r}")
    return value


#: The tracker names of ``log_with`` (accelerate's ``LoggerType``) and the package each needs.
TRACKER_PACKAGES = {
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "mlflow": "mlflow",
    "comet_ml": "comet-ml",
    "aim": "aim",
    "clearml": "clearml",
    "dvclive": "dvclive",
    "swanlab": "swanlab",
    "trackio": "trackio",
}
#: ``log_with: all``: every tracker whose package is installed.
ALL_TRACKERS = "all"


def check_tracker_names(value: Any) -> list[Any] | None:
    """``log_with`` as a list: tracker names (see :data:`TRACKER_PACKAGES`, or ``all``) and, given
    in code, ``accelerate.tracking.GeneralTracker`` instances; ``None`` stays ``None``.

    Raises:
        ValueError: Anything else, or an unknown name (with the closest known one).
    """
    if value is None:
        return None
    items = [value] if isinstance(value, str) or not isinstance(value, (list, tuple)) else value
    known = [*TRACKER_PACKAGES, ALL_TRACKERS]
    checked: list[Any] = []
    for item in items:
        if isinstance(item, str):
            name = item.strip().lower()
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(f"unknown tracker {item!r} ({hint}known: {', '.join(known)})")
            item = name
        elif not _is_tracker(item):
            raise ValueError(f"must be tracker names (such as 'tensorboard') or accelerate "
                             f"GeneralTracker instances, not {type(item).__name__}")
        if item not in checked:
            checked.append(item)
    return checked


def _is_tracker(item: Any) -> bool:
    from accelerate.tracking import GeneralTracker

    return isinstance(item, GeneralTracker)


def merge_training(
    base: TrainingConfig, training: TrainingConfig | Mapping[str, Any] | None
) -> TrainingConfig:
    """The options of one ``fit`` call: ``base`` (the pipeline's) updated by ``training``.

    A mapping updates only the options it names (``{"epochs": 1}`` keeps the pipeline's
    optimiser, learning rate, seed...); a :class:`TrainingConfig` replaces ``base`` whole;
    ``None`` keeps ``base``.

    Raises:
        ConfigError: The mapping names an unknown option or an invalid value.
    """
    if training is None:
        return base
    if isinstance(training, TrainingConfig):
        return training
    if not isinstance(training, Mapping):
        raise ConfigError(
            f"training options must be a TrainingConfig or a mapping, got {type(training).__name__}"
        )
    merged = {**base.model_dump(), **dict(training)}
    try:
        return TrainingConfig.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())) or 'options'}: "
            f"{'unknown option' if e.get('type') == 'extra_forbidden' else _message(e)}"
            for e in exc.errors()
        )
        raise ConfigError(f"invalid training options: {problems}") from exc


def _message(error: Any) -> str:
    return str(error.get("msg")).removeprefix("Value error, ")
