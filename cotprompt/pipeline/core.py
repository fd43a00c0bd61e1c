"""``CoTPipeline``: backbone + generator + tuner + aggregator, trained and used as one object.

This module holds the pipeline's construction, training and inference. Saving and loading
artifacts live in :mod:`cotprompt.pipeline.serialization` (the Hub in
:class:`~cotprompt.hub.HubMixin`);
the config model and method presets in :mod:`cotprompt.pipeline.config`; how each kind of
dataset trains and evaluates in the task heads (:mod:`cotprompt.pipeline.heads`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import Tensor

from cotprompt.backbones.zero_shot import zero_shot_classifier, zero_shot_logits
from cotprompt.data.converters import convert_if_foreign
from cotprompt.data.records import ImageClassificationDataset
from cotprompt.errors import ConfigError, DataError, TrainingError
from cotprompt.evaluation.finite import check_finite_scores
from cotprompt.evaluation.metrics import EvaluationResult
from cotprompt.model import PromptModel
from cotprompt.pipeline.artifacts import ArtifactMixin
from cotprompt.pipeline.config import (
    PipelineConfig,
    build_components,
    method_create_kwargs,
)
from cotprompt.pipeline.config_files import config_create_kwargs
from cotprompt.pipeline.heads import (
    TaskHead,
    article,
    check_accepts,
    check_evaluation,
    check_task_head,
    task_head_for,
)
from cotprompt.pipeline.inputs import ImagesInput, as_image_list, pixel_batches
from cotprompt.pipeline.predictions import (
    Prediction,
    check_predict_options,
    describe_item,
    rank_predictions,
    readable_features,
)
from cotprompt.protocols import Aggregator, Backbone, PromptGenerator, PromptTuner
from cotprompt.training.config import TrainingConfig, merge_training
from cotprompt.training.loop import (
    StepInfo,
    TrainingResult,
    check_output_folders,
    make_accelerator,
    run_training,
)
from cotprompt.training.seeding import InitRecord, bind_components, record_init, redraw_untrained
from cotprompt.types import PromptChain, Task

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from cotprompt.data.retrieval import RetrievalDataset
    from cotprompt.data.vqa import VQADataset
    from cotprompt.evaluation.task_metrics import RetrievalResult, VQAResult
    from cotprompt.pipeline.heads import EvaluateOptions, HasMetrics

    TaskDataset = RetrievalDataset | VQADataset

__all__ = ["CoTPipeline"]

logger = logging.getLogger("cotprompt.pipeline")  # the logger name users configure


class CoTPipeline(ArtifactMixin):
    """Few-shot prompt tuning of a frozen vision-language model, end to end.

    Build one with :meth:`create` (names or objects), :meth:`from_config` (a config file),
    :meth:`for_method` (``coop``, ``cocoop``, ``cotpt``) or :meth:`from_pretrained`; then
    :meth:`fit`, :meth:`evaluate`, :meth:`predict`, :meth:`save_pretrained`.

    Args:
        backbone: A backbone object (``open_clip``...).
        generator: A :class:`~cotprompt.protocols.PromptGenerator`.
        tuner: A :class:`~cotprompt.protocols.PromptTuner`.
        aggregator: An :class:`~cotprompt.protocols.Aggregator`.
        training: Default training options for :meth:`fit`; its ``seed`` also draws the
            trainable parameters when classes are bound.
        class_names: Labels to bind right away (else the first :meth:`fit` binds its dataset's).
        device: Where to run; default CUDA when available, else CPU.
    """

    def __init__(
        self,
        backbone: Backbone,
        generator: PromptGenerator,
        tuner: PromptTuner,
        aggregator: Aggregator,
        *,
        training: TrainingConfig | None = None,
        class_names: Sequence[str] | Task | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        self.backbone = backbone
        self.generator = generator
        self.tuner = tuner
        self.aggregator = aggregator
        self.training = training or TrainingConfig()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.backbone.to(self.device)
        self.model = PromptModel(backbone, tuner, aggregator)
        self.task: Task | None = None
        self.chain: PromptChain | None = None
        self.metrics: dict[str, dict[str, float]] = {}
        self.training_data: dict[str, Any] | None = None
        self.training_history: list[dict[str, Any]] | None = None
        self.source: dict[str, Any] | None = None
        self._zero_shot_cache: tuple[PromptChain, Tensor] | None = None
        self._init_record: InitRecord | None = None  # the seed untrained parameters hold
        if class_names is not None:
            self.set_classes(class_names)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        *,
        backbone: str | Backbone = "open_clip",
        generator: str | PromptGenerator = "rule-based",
        tuner: str | PromptTuner = "coop",
        aggregator: str | Aggregator = "mean",
        backbone_config: Mapping[str, Any] | BaseModel | None = None,
        generator_config: Mapping[str, Any] | BaseModel | None = None,
        tuner_config: Mapping[str, Any] | BaseModel | None = None,
        aggregator_config: Mapping[str, Any] | BaseModel | None = None,
        training: TrainingConfig | Mapping[str, Any] | None = None,
        class_names: Sequence[str] | Task | None = None,
        device: str | torch.device | None = None,
    ) -> CoTPipeline:
        """Compose a pipeline from registered names (plus options) or ready objects.

        Raises:
            UnknownComponentError: A name is not registered (the message lists close matches).
            ConfigError: Options do not validate.
        """
        built = build_components({
            "backbone": (backbone, backbone_config),
            "generator": (generator, generator_config),
            "tuner": (tuner, tuner_config),
            "aggregator": (aggregator, aggregator_config),
        })
        if isinstance(training, Mapping):  # the defaults updated by the given keys
            training = merge_training(TrainingConfig(), training)
        return cls(**built, training=training, class_names=class_names, device=device)

    @classmethod
    def from_config(
        cls,
        config: PipelineConfig | Mapping[str, Any] | str | Path,
        *,
        class_names: Sequence[str] | Task | None = None,
        device: str | torch.device | None = None,
        allow_pickle: bool = False,
    ) -> CoTPipeline:
        """Build from a :class:`PipelineConfig`, a mapping, or a YAML/JSON file path.

        A file is untrusted: it may not set caller-only options (``allow_pickle``,
        ``trust_remote_code``) nor the backbone's free-form ``extra`` (``UnsafeSettingError``).
        ``allow_pickle=True`` is the caller's opt-in to pickle-based checkpoints it names.
        """
        caller_options = {"allow_pickle": True} if allow_pickle else None
        return cls.create(**config_create_kwargs(config, caller_options=caller_options),
                          class_names=class_names, device=device)

    @classmethod
    def for_method(
        cls,
        method: str,
        *,
        model_name: str = "ViT-B-16",
        pretrained: str | None = "openai",
        backbone: Backbone | None = None,
        tuner_config: Mapping[str, Any] | None = None,
        training: TrainingConfig | Mapping[str, Any] | None = None,
        class_names: Sequence[str] | Task | None = None,
        device: str | torch.device | None = None,
        allow_pickle: bool = False,
    ) -> CoTPipeline:
        """CoOp, CoCoOp or CoT-PT with their published defaults on an open_clip model.

        Args:
            method: ``"coop"``, ``"cocoop"`` or ``"cotpt"``.
            model_name: open_clip architecture (ignored when ``backbone`` is given).
            pretrained: open_clip pretrained tag or checkpoint file; ``None`` for random weights.
            backbone: An already built backbone to share between pipelines.
            tuner_config: Overrides of the tuner's options.
            allow_pickle: Your opt-in to a pickle-based ``pretrained`` file (it can run code).
        """
        kwargs = method_create_kwargs(method, model_name=model_name, pretrained=pretrained,
                                      backbone=backbone, tuner_config=tuner_config)
        if allow_pickle and kwargs["backbone_config"] is not None:
            kwargs["backbone_config"] = {**kwargs["backbone_config"], "allow_pickle": True}
        return cls.create(**kwargs, training=training, class_names=class_names, device=device)

    # -- labels -------------------------------------------------------------------------------

    @property
    def class_names(self) -> list[str]:
        """The labels the pipeline currently predicts over."""
        if self.task is None:
            raise ConfigError("no classes yet: call set_classes() or fit()")
        return list(self.task.labels)

    def set_classes(self, classes: Sequence[str] | Task, chain: PromptChain | None = None
                    ) -> PromptChain:
        """Bind the pipeline to a label set (generating its prompt chain).

        Prompts with unified context transfer to new classes; class-specific ones refuse.
        Parameters created by this call are drawn from ``training.seed`` (see
        :mod:`cotprompt.training.seeding`), whatever ran before in the process.

        Args:
            classes: Class names (underscores read as spaces) or a :class:`Task`.
            chain: A ready chain to use instead of running the generator.

        Returns:
            The chain now in use.
        """
        task = classes if isinstance(classes, Task) else Task.classification(list(classes))
        if chain is None:
            chain = self.generator.generate(task, self.backbone)
        if chain.labels != task.labels:
            raise DataError("the prompt chain's labels differ from the task's labels")
        names_before = set(self.model.trainable_state())
        bind_components(self.model, chain, self.training.seed)
        self.model.to(self.device)
        self.task, self.chain = task, chain
        self._init_record = record_init(self.model, self.training.seed, names_before,
                                        self._init_record)
        return chain

    # -- training -----------------------------------------------------------------------------

    def fit(
        self,
        train: ImageClassificationDataset | TaskDataset,
        *,
        val: ImageClassificationDataset | TaskDataset | None = None,
        training: TrainingConfig | Mapping[str, Any] | None = None,
        resume_from: str | Path | None = None,
        callbacks: Sequence[Callable[[StepInfo], None]] = (),
        task_head: TaskHead | None = None,
    ) -> TrainingResult:
        """Train the tuner and aggregator on ``train`` (binding its classes if none are bound).

        Args:
            train: Labelled images, typically :func:`~cotprompt.data.few_shot` of a dataset; or
                a :class:`~cotprompt.tasks.RetrievalDataset` / :class:`~cotprompt.tasks.VQADataset`.
            val: Optional validation set (of the same kind) evaluated after every epoch.
            training: Options for this call: a mapping updates the pipeline's options with the
                keys it gives (and they stay the pipeline's); a ``TrainingConfig`` replaces them.
                Parameters not trained yet are drawn again when its ``seed`` differs from the
                one they were drawn with, so that the run is the seed's run.
            resume_from: A checkpoint folder, a folder of checkpoints, or ``"latest"``.
            callbacks: Called with a :class:`StepInfo` after every step.
            task_head: How to train on ``train`` (default: the registered head that accepts it,
                see :mod:`cotprompt.pipeline.heads`).

        Returns:
            A :class:`TrainingResult` with per-epoch history.

        Raises:
            DataError: Empty classes, a class list that does not match the bound one, or data no
                task accepts.
            ConfigError: ``val`` is of another kind than ``train``.
            TrainingError: NaN loss, or an incompatible checkpoint.
        """
        train, val = convert_if_foreign(train), convert_if_foreign(val)  # HF, torchvision, pairs
        started = time.perf_counter()
        head = task_head_for(train) if task_head is None else check_task_head(task_head)
        check_accepts(head, train, "training data")
        if val is not None and not head.accepts(val):
            raise ConfigError(f"train is {article(type(train).__name__)} but val "
                              f"{article(type(val).__name__)}")
        config = merge_training(self.training, training)  # given keys update the pipeline's
        accelerator = make_accelerator(config)  # precision, accumulation, trackers
        if not head.data_parallel and accelerator.num_processes > 1:
            raise TrainingError(f"{head.kind} training runs in one process; launch without "
                                "accelerate's multi-process mode")
        check_output_folders(config)
        self._move(accelerator.device)
        head.prepare(self, train, val, config)
        if resume_from is None:  # a resumed run takes its parameters from the checkpoint
            self._redraw_untrained(config.seed)
        plan = head.plan(self, train, val, config, accelerator)
        with head.training_scope(self):
            result = run_training(self.model, config, accelerator, plan,
                                  resume_from=resume_from, callbacks=callbacks,
                                  fingerprint_extra={"components": self.component_records()},
                                  started=started)
        self.training = config
        self.training_data = head.training_record(train, config, plan)
        self.training_history = list(result.history)  # the model card's per-epoch table
        self._zero_shot_cache = None
        if self.metrics:  # measured on the prompts this run replaced
            logger.info("dropping the metrics recorded before this training (%s)",
                        ", ".join(self.metrics))
            self.metrics = {}
        return result

    def _redraw_untrained(self, seed: int) -> None:
        record = redraw_untrained(self.model, self.chain, self._init_record, seed)
        if record is not None:
            self._init_record = record

    def _move(self, device: torch.device) -> None:
        if device != self.device:
            self.device = device
            self.backbone.to(device)
            if self.task is not None and self.chain is not None:
                self.set_classes(self.task, self.chain)  # rebuilds buffers on the new device
            self.model.to(device)

    def to(self, device: str | torch.device) -> CoTPipeline:
        """Move the pipeline to ``device``; returns itself."""
        self._move(torch.device(device))
        return self

    # -- inference ----------------------------------------------------------------------------

    @torch.no_grad()
    def image_features(
        self, images: ImagesInput, batch_size: int = 64, *, frozen: bool = False
    ) -> Tensor:
        """Normalised image features ``[B, E]`` of paths, PIL images or a pixel tensor.

        Args:
            frozen: Use the frozen image encoder even when the tuner prompts it (zero-shot).
        """
        transform = self.backbone.image_transform(train=False)
        self.model.eval()
        parts = [
            self._encode_pixels(pixels, frozen)
            for pixels in pixel_batches(as_image_list(images), transform, batch_size)
        ]
        return torch.cat(parts)

    def _encode_pixels(self, pixels: Tensor, frozen: bool) -> Tensor:
        pixels = pixels.to(self.device)
        if frozen:
            return F.normalize(self.backbone.encode_images(pixels).float(), dim=-1)
        return self.model.image_features(pixels)

    @torch.no_grad()
    def logits_from_features(self, features: Tensor, chunk: int = 256) -> Tensor:
        """Logits ``[B, C]`` of the learned prompts for normalised image features ``[B, E]``
        (in chunks of ``chunk`` images)."""
        self.model.eval()
        return torch.cat([self.model(part.to(self.device)) for part in features.split(chunk)])

    @torch.no_grad()
    def zero_shot_logits(self, features: Tensor) -> Tensor:
        """Logits ``[B, C]`` of the untuned classifier (the chain's zero-shot sentences)."""
        if self.chain is None:
            raise ConfigError("no classes yet: call set_classes() first")
        if self._zero_shot_cache is None or self._zero_shot_cache[0] is not self.chain:
            classifier = zero_shot_classifier(self.backbone, self.chain.zero_shot)
            self._zero_shot_cache = (self.chain, classifier)
        return zero_shot_logits(self.backbone, features, self._zero_shot_cache[1])

    def logits(self, images: ImagesInput, *, zero_shot: bool = False, batch_size: int = 64
               ) -> Tensor:
        """Logits ``[B, C]`` for images (paths, PIL images or a ``[B, 3, H, W]`` tensor)."""
        if self.task is not None and self.task.kind != "classification":
            raise ConfigError(
                f"logits/predict classify images; this pipeline's task is {self.task.kind!r}: "
                "use pipeline.evaluate(dataset), or cotprompt.tasks (e.g. predict_answers for VQA)"
            )
        features = self.image_features(images, batch_size, frozen=zero_shot)
        if zero_shot:
            return self.zero_shot_logits(features)
        return self.logits_from_features(features)

    @overload
    def predict(self, images: ImagesInput, *, top_k: int = ..., batch_size: int = ...,
                zero_shot: bool = ..., on_bad_image: Literal["error"] = ...,
                num_workers: int = ..., pin_memory: bool | None = ...) -> list[Prediction]: ...

    @overload
    def predict(self, images: ImagesInput, *, top_k: int = ..., batch_size: int = ...,
                zero_shot: bool = ..., on_bad_image: Literal["skip"], num_workers: int = ...,
                pin_memory: bool | None = ...) -> list[Prediction | None]: ...

    def predict(self, images: ImagesInput, *, top_k: int = 1, batch_size: int = 64,
                zero_shot: bool = False, on_bad_image: Literal["error", "skip"] = "error",
                num_workers: int = 0, pin_memory: bool | None = None
                ) -> list[Prediction] | list[Prediction | None]:
        """Predict labels for images.

        Images are read as an image viewer shows them (:func:`cotprompt.data.images.load_image`:
        EXIF orientation, 16-bit and float pixels, ICC profiles, transparency on white...), one
        batch at a time; a progress bar on stderr over many (``TQDM_DISABLE=1``: none).

        Args:
            images: Paths, PIL images, or preprocessed pixels ``[B, 3, H, W]``.
            top_k: How many labels to return per image.
            zero_shot: Use the untuned classifier instead of the learned prompts.
            on_bad_image: What an image that cannot be read (missing, corrupt, not an image,
                NaN pixels) does: ``"error"`` raises a :class:`~cotprompt.errors.DataError`
                naming it; ``"skip"`` logs a warning naming it and puts ``None`` in its place
                in the result (an error all the same when no image can be read).
            num_workers: Processes reading images while the model runs (``0``: this one).
            pin_memory: Pinned-memory batches (``None``: on CUDA).

        Returns:
            One :class:`Prediction` per image, in the order given (``None`` for the images
            skipped with ``on_bad_image="skip"``).

        Raises:
            DataError: An image cannot be read (``on_bad_image="error"``), or none can.
            NumericalError: When a logit is NaN or infinite (prompt weights, backbone or image
                producing NaN/Inf); the message names the images.
        """
        check_predict_options(on_bad_image, batch_size, num_workers, pin_memory)
        labels = self.class_names
        items = as_image_list(images)
        kept = list(range(len(items)))
        if isinstance(items, Tensor):
            logits = self.logits(items, zero_shot=zero_shot, batch_size=batch_size)
        else:
            if self.task is not None and self.task.kind != "classification":
                self.logits(items[:1], zero_shot=zero_shot)  # refuses, saying what to use
            transform = self.backbone.image_transform(train=False)
            kept, features = readable_features(
                items, transform, lambda px: self.image_features(px, batch_size, frozen=zero_shot),
                batch_size, on_bad_image, num_workers, pin_memory, self.device)
            logits = (self.zero_shot_logits(features) if zero_shot
                      else self.logits_from_features(features))

        def describe(i: int) -> str | None:
            return None if isinstance(items, Tensor) else describe_item(items[kept[i]])

        check_finite_scores(logits, describe, total=len(logits), zero_shot=zero_shot)
        return rank_predictions(logits.softmax(-1), labels, top_k, kept, len(items))

    @overload
    def evaluate(self, dataset: ImageClassificationDataset, **options: Unpack[EvaluateOptions]
                 ) -> EvaluationResult: ...
    @overload
    def evaluate(self, dataset: RetrievalDataset, **options: Unpack[EvaluateOptions]
                 ) -> RetrievalResult: ...
    @overload
    def evaluate(self, dataset: VQADataset, **options: Unpack[EvaluateOptions]) -> VQAResult: ...

    def evaluate(self, dataset: object, *, batch_size: int = 64, zero_shot: bool = False,
                 split: str | None = None, task_head: TaskHead | None = None,
                 num_workers: int = 0, pin_memory: bool | None = None) -> HasMetrics:
        """Accuracy, mean per-class accuracy and per-class accuracy on ``dataset``.

        Args:
            dataset: Labelled images over the pipeline's classes (same names, same order).
            batch_size: Images per image-encoder batch.
            zero_shot: Evaluate the untuned classifier instead.
            split: If given, the metrics are recorded under this name for the model card.
            task_head: How to evaluate ``dataset`` (default: the registered head that accepts
                it).
            num_workers: Processes loading images while the model runs (``0``: this one).
            pin_memory: Pinned-memory batches (``None``: on CUDA), for heads that take it.

        ``dataset`` may also be a Hugging Face or torchvision dataset or a list of (image,
        label) pairs (see :func:`cotprompt.data.as_classification_dataset`).

        A :class:`~cotprompt.tasks.RetrievalDataset` or :class:`~cotprompt.tasks.VQADataset`
        is evaluated by its task's head instead (recall@k both ways, or VQA accuracy with
        out-of-vocabulary counts; see :func:`cotprompt.tasks.evaluate_retrieval` and
        :func:`cotprompt.tasks.evaluate_vqa` for their options).

        Raises:
            NumericalError: When a logit is NaN or infinite (prompt weights, backbone or image
                producing NaN/Inf), instead of reporting an accuracy; the message names the
                images.
        """
        dataset = convert_if_foreign(dataset)  # HF, torchvision, (image, label) pairs
        head = task_head_for(dataset) if task_head is None else check_task_head(task_head)
        check_evaluation(head, dataset, bound=self.task, split=split, batch_size=batch_size,
                         num_workers=num_workers, pin_memory=pin_memory)
        self.model.eval()
        result = head.evaluate(self, dataset, batch_size=batch_size, zero_shot=zero_shot,
                               num_workers=num_workers, pin_memory=pin_memory)
        if split is not None:
            self.metrics[split] = dict(result.metrics())
        return result
