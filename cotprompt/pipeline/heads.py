"""Task heads: how :meth:`CoTPipeline.fit` and :meth:`CoTPipeline.evaluate` treat one kind of
dataset (classification, retrieval, VQA...), and the registry that finds the head of a dataset.

A head prepares the pipeline for its data (binds labels, checks the generator), describes a
training run as a :class:`~cotprompt.training.loop.TrainingPlan` (items, loss, validation, what
identifies the run), evaluates, and says what the artifact records about the training data. The
pipeline drives every head through one training template
(:func:`~cotprompt.training.loop.run_training`) and is the only writer of its own fields
(``training``, ``training_data``, ``metrics``). The built-in heads live in
:mod:`cotprompt.tasks`, which registers them when it is imported; this registry imports it by
module path (:data:`BUILTIN_HEADS_MODULE`, like an entry point: the pipeline layer may not import
the tasks layer) before its first lookup or registration, so the built-in heads are always
registered first and found whichever of ``cotprompt``, ``cotprompt.pipeline`` or
``cotprompt.tasks`` was imported. A plugin adds its own with :func:`register_task_head`.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, TypeVar, runtime_checkable

import torch
from torch import Tensor

from cotprompt.errors import ConfigError, DataError
from cotprompt.protocols import Aggregator, PromptGenerator, PromptTuner
from cotprompt.training.config import TrainingConfig
from cotprompt.training.loading import check_loader_options
from cotprompt.types import PromptChain, Task

if TYPE_CHECKING:
    from accelerate import Accelerator

    from cotprompt.backbones.base import Backbone
    from cotprompt.model import PromptModel
    from cotprompt.training.loop import TrainingPlan


class TunablePipeline(Protocol):
    """What a task head may use of the pipeline it serves (:class:`CoTPipeline` satisfies it)."""

    backbone: Backbone
    generator: PromptGenerator
    tuner: PromptTuner
    aggregator: Aggregator
    model: PromptModel
    device: torch.device
    task: Task | None
    chain: PromptChain | None
    training: TrainingConfig

    def set_classes(self, classes: Sequence[str] | Task, chain: PromptChain | None = None
                    ) -> PromptChain: ...

    def image_features(self, images: Any, batch_size: int = 64, *, frozen: bool = False
                       ) -> Tensor: ...

    def logits_from_features(self, features: Tensor) -> Tensor: ...

    def zero_shot_logits(self, features: Tensor) -> Tensor: ...


class HasMetrics(Protocol):
    """An evaluation result: ``metrics()`` is what the artifact records under a split."""

    def metrics(self) -> dict[str, float]: ...


#: The pipeline a head serves: ``TaskHead[CoTPipeline]`` for the built-in heads, which use more of
#: it than :class:`TunablePipeline` says; a bare ``TaskHead`` is a head of any pipeline.
PipelineT_contra = TypeVar("PipelineT_contra", bound=TunablePipeline, contravariant=True)


@runtime_checkable
class TaskHead(Protocol[PipelineT_contra]):
    """One kind of task, as the pipeline trains and evaluates it.

    A head binds the pipeline (in :meth:`prepare`, with ``pipeline.set_classes``) to a
    :class:`~cotprompt.types.Task` of its own ``kind``, and its :meth:`evaluate` returns a result
    with a ``metrics()`` method (a flat ``{name: float}`` mapping the artifact records).

    Attributes:
        kind: The task kind it binds (``Task.kind``): ``classification``, ``retrieval``,
            ``vqa``...
        data_parallel: Whether its training shards over accelerate processes (else a launch on
            several processes is refused).
    """

    kind: str
    data_parallel: bool

    def accepts(self, dataset: object) -> bool:
        """Whether ``dataset`` is this head's kind of data."""
        ...

    def prepare(self, pipeline: PipelineT_contra, train: Any, val: Any | None,
                config: TrainingConfig) -> None:
        """Check the data and components and bind the pipeline to the task, before training
        (raising the head's one-line errors)."""
        ...

    def plan(self, pipeline: PipelineT_contra, train: Any, val: Any | None,
             config: TrainingConfig, accelerator: Accelerator) -> TrainingPlan:
        """The run: items, loss per batch, validation and what identifies it."""
        ...

    def training_scope(self, pipeline: PipelineT_contra) -> contextlib.AbstractContextManager[Any]:
        """Entered around the epochs (e.g. to restore the pipeline's own binding after)."""
        ...

    def training_record(self, train: Any, config: TrainingConfig, plan: TrainingPlan
                        ) -> dict[str, Any]:
        """What the artifact records about the training data (``training_data``)."""
        ...

    def evaluate(self, pipeline: PipelineT_contra, dataset: Any, *, batch_size: int,
                 zero_shot: bool, num_workers: int, pin_memory: bool | None) -> HasMetrics:
        """The head's metrics on ``dataset`` (tuned, or the untuned model's); ``num_workers``
        worker processes load its images, into pinned memory when ``pin_memory`` (``None``:
        when the pipeline's device is CUDA)."""
        ...


#: The module whose import registers the built-in heads (classification, retrieval, VQA).
BUILTIN_HEADS_MODULE = "cotprompt.tasks"

_HEADS: list[TaskHead] = []


def _load_builtin_heads() -> None:
    """Import :data:`BUILTIN_HEADS_MODULE` (registering the built-in heads) unless it is.

    Every lookup calls it, relying on Python's import locks: another thread's lookup during the
    first import waits for it to finish (it never sees a partial list of heads), while the
    importing thread's own registrations, which call back here, get the partly imported module
    at once. A failed import is retried by the next lookup: an error, never no heads.
    """
    importlib.import_module(BUILTIN_HEADS_MODULE)


def check_task_head(head: object) -> TaskHead:
    """``head`` if it is a task head instance.

    Raises:
        ConfigError: A class instead of an instance, or an object without the ``TaskHead``
            attributes (naming the missing ones).
    """
    if isinstance(head, type):
        raise ConfigError(f"pass a task head instance, not the class {head.__name__} "
                          f"(e.g. {head.__name__}())")
    missing = [name for name in ("kind", "data_parallel", "accepts", "prepare", "plan",
                                 "training_scope", "training_record", "evaluate")
               if not hasattr(head, name)]
    if missing or not isinstance(getattr(head, "kind", None), str):
        raise ConfigError(f"{type(head).__name__} is not a task head: it lacks "
                          f"{', '.join(missing) or 'a str kind'} (see cotprompt.pipeline.heads)")
    return head  # type: ignore[return-value]


def check_accepts(head: TaskHead, dataset: object, what: str) -> None:
    """Refuse a dataset the head does not handle, before any work.

    Raises:
        DataError: Naming the head's task and the dataset's type.
    """
    if not head.accepts(dataset):
        raise DataError(f"the {head.kind} task does not take {article(type(dataset).__name__)} "
                        f"as {what}; pass the head of its task or leave task_head out")


def article(noun: str) -> str:
    """``noun`` with its indefinite article (``an ImageClassificationDataset``)."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def check_split_name(split: object) -> str:
    """A split name as the artifact records it (a key of ``metrics`` and a row of the model card).

    Raises:
        ConfigError: Not a non-empty string of printable characters without ``|``.
    """
    if not isinstance(split, str) or not split.strip() or not split.isprintable() \
            or "|" in split:
        raise ConfigError(f"split must be a non-empty name of printable characters without '|' "
                          f"(a key of the recorded metrics and a row of the model card), got "
                          f"{split!r}")
    return split


def check_evaluation(head: TaskHead, dataset: object, *, bound: Task | None,
                     split: object, batch_size: object, num_workers: object,
                     pin_memory: object = None) -> None:
    """What ``CoTPipeline.evaluate`` checks before any work.

    Raises:
        DataError: The head does not take ``dataset``.
        ConfigError: A split name the model card cannot show, a batch size below 1, a
            negative number of workers, a ``pin_memory`` that is not ``True``, ``False`` or
            ``None``, or a pipeline bound to another task (evaluating would
            rebind it).
    """
    check_accepts(head, dataset, "evaluation data")
    if split is not None:
        check_split_name(split)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    check_loader_options(num_workers, pin_memory)
    if bound is not None and bound.kind != head.kind:
        raise ConfigError(
            f"this pipeline is bound to the {bound.kind} task; evaluating {head.kind} data "
            "would bind it to that task instead: use a pipeline made for it "
            "(CoTPipeline.for_method, cotprompt.tasks.for_task) or trained on it"
        )


class EvaluateOptions(TypedDict, total=False):
    """The keyword options of ``CoTPipeline.evaluate``, as its overloads (one per dataset type,
    each with its result type) take them."""

    batch_size: int
    zero_shot: bool
    split: str | None
    task_head: TaskHead | None
    num_workers: int
    pin_memory: bool | None


def register_task_head(head: TaskHead) -> None:
    """Make ``head`` the one :func:`task_head_for` returns for the datasets it accepts (a head
    registered later is asked first; one of the same ``kind`` and class is replaced).

    Raises:
        ConfigError: ``head`` is not a task head instance (see :func:`check_task_head`).
    """
    check_task_head(head)
    _load_builtin_heads()
    _HEADS[:] = [h for h in _HEADS if not (h.kind == head.kind and type(h) is type(head))]
    _HEADS.append(head)


def task_heads() -> list[TaskHead]:
    """The registered heads, most recently registered first (the built-in ones loaded on the
    first call, see :data:`BUILTIN_HEADS_MODULE`)."""
    _load_builtin_heads()
    return list(reversed(_HEADS))


def task_head_for(dataset: object) -> TaskHead:
    """The registered head that accepts ``dataset``.

    Raises:
        DataError: No head accepts it (the message names its type and the registered kinds).
    """
    for head in task_heads():
        if head.accepts(dataset):
            return head
    kinds = sorted({h.kind for h in _HEADS})
    raise DataError(f"no task accepts {article(type(dataset).__name__)} (registered tasks: "
                    f"{kinds}); "
                    "pass an ImageClassificationDataset, RetrievalDataset or VQADataset")
