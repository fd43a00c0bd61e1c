"""``CoTPipeline``: backbone + generator + tuner + aggregator, trained and used as one object.

This module holds the pipeline's construction, training and inference. Saving and loading
artifacts live in :mod:`cotprompt.pipeline.serialization`; the config model and method presets in
:mod:`cotprompt.pipeline.config` (re-exported here).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import Tensor

from cotprompt.data.records import ImageClassificationDataset
from cotprompt.errors import ConfigError, DataError, NumericalError
from cotprompt.evaluation.metrics import EvaluationResult
from cotprompt.model import PromptModel
from cotprompt.pipeline import serialization as pipeline_io
from cotprompt.pipeline.config import (
    PipelineConfig,
    Prediction,
    build_components,
    config_create_kwargs,
    method_create_kwargs,
)
from cotprompt.pipeline.inputs import ImagesInput, as_image_list, pixel_batches
from cotprompt.training.config import TrainingConfig, merge_training
from cotprompt.training.seeding import InitRecord, bind_components, record_init, redraw_untrained
from cotprompt.training.trainer import StepInfo, Trainer, TrainingResult
from cotprompt.types import PromptChain, Task

if TYPE_CHECKING:
    from cotprompt.tasks import TaskDataset, TaskResult

__all__ = ["CoTPipeline", "check_finite_scores"]


class CoTPipeline:
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
        backbone: Any,
        generator: Any,
        tuner: Any,
        aggregator: Any,
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
        backbone: str | Any = "open_clip",
        generator: str | Any = "rule-based",
        tuner: str | Any = "coop",
        aggregator: str | Any = "mean",
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
        backbone: Any = None,
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
        bind_components(self, chain, self.training.seed)
        self.model.to(self.device)
        self.task, self.chain = task, chain
        record_init(self, self.training.seed, names_before)
        return chain

    def _check_dataset_classes(self, dataset: ImageClassificationDataset) -> None:
        names = [n.replace("_", " ") for n in dataset.class_names]
        if self.task is None:
            self.set_classes(dataset.class_names)
        elif names != list(self.task.labels):
            extra = sorted(set(names) - set(self.task.labels))[:5]
            missing = sorted(set(self.task.labels) - set(names))[:5]
            raise DataError(
                "the dataset's classes do not match the pipeline's "
                f"({len(names)} vs {len(self.task.labels)}; only in the dataset: {extra}, only in "
                f"the pipeline: {missing}, or a different order). Call "
                "pipeline.set_classes(dataset.class_names) to use the prompts on these classes"
            )

    # -- training -----------------------------------------------------------------------------

    def fit(
        self,
        train: ImageClassificationDataset | TaskDataset,
        *,
        val: ImageClassificationDataset | TaskDataset | None = None,
        training: TrainingConfig | Mapping[str, Any] | None = None,
        resume_from: str | Path | None = None,
        callbacks: Sequence[Callable[[StepInfo], None]] = (),
    ) -> TrainingResult:
        """Train the tuner and aggregator on ``train`` (binding its classes if none are bound).

        Args:
            train: Labelled images, typically :func:`~cotprompt.data.few_shot` of a dataset.
            val: Optional validation set evaluated after every epoch.
            training: Options for this call: a mapping updates the pipeline's options with the
                keys it gives (and they stay the pipeline's); a ``TrainingConfig`` replaces them.
                Parameters not trained yet are drawn again when its ``seed`` differs from the
                one they were drawn with, so that the run is the seed's run.
            resume_from: A checkpoint folder, a folder of checkpoints, or ``"latest"``.
            callbacks: Called with a :class:`StepInfo` after every step.

        Returns:
            A :class:`TrainingResult` with per-epoch history.

        Raises:
            DataError: Empty classes or a class list that does not match the bound one.
            TrainingError: NaN loss, or an incompatible checkpoint.
        """
        from cotprompt.tasks import fit_task, is_task_dataset

        if is_task_dataset(train):  # retrieval / VQA: see cotprompt.tasks
            return fit_task(self, train, val=val, training=training,  # type: ignore[arg-type]
                            resume_from=resume_from, callbacks=callbacks)
        config = merge_training(self.training, training)  # given keys update the pipeline's
        train.check_nonempty_classes()
        self._check_dataset_classes(train)
        if val is not None:
            self._check_dataset_classes(val)
        if resume_from is None:  # a resumed run takes its parameters from the checkpoint
            redraw_untrained(self, config.seed)
        trainer = Trainer(self.model, config)
        self._move(trainer.accelerator.device)
        validate = None
        if val is not None:
            val_set = val.with_transform(self.backbone.image_transform())
            # features of a tuned image encoder change every step: encode them at each validation
            frozen_features = None
            if not self.tuner.tunes_image_encoder:
                frozen_features = trainer.encode_dataset(val_set)
            val_labels = torch.tensor(val.labels)

            def validate() -> dict[str, float]:
                features = frozen_features
                if features is None:
                    features = trainer.encode_dataset(val_set)
                preds = self._logits_from_features(features).argmax(-1).cpu()
                return {"val_accuracy": float((preds == val_labels).float().mean() * 100)}

        result = trainer.fit(
            train,
            eval_transform=self.backbone.image_transform(train=False),
            train_transform=self.backbone.image_transform(train=True),
            validate=validate,
            resume_from=resume_from,
            callbacks=callbacks,
            fingerprint_extra={"labels": list(self.class_names),
                               "components": self._component_records()},
        )
        self.training = config
        self.training_data = {"num_images": len(train), "num_classes": train.num_classes,
                              "epochs": config.epochs, "seed": config.seed}
        self._zero_shot_cache = None
        return result

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
    def _logits_from_features(self, features: Tensor, chunk: int = 256) -> Tensor:
        self.model.eval()
        return torch.cat([self.model(part.to(self.device)) for part in features.split(chunk)])

    @torch.no_grad()
    def zero_shot_logits(self, features: Tensor) -> Tensor:
        """Logits ``[B, C]`` of the untuned classifier (the chain's zero-shot sentences)."""
        if self.chain is None:
            raise ConfigError("no classes yet: call set_classes() first")
        if self._zero_shot_cache is None or self._zero_shot_cache[0] is not self.chain:
            texts = [t for label_texts in self.chain.zero_shot for t in label_texts]
            owner = torch.tensor([c for c, ts in enumerate(self.chain.zero_shot) for _ in ts])
            encoded = F.normalize(self.backbone.encode_texts(texts).float(), dim=-1)
            summed = torch.zeros(self.chain.num_labels, encoded.shape[-1], device=encoded.device)
            summed.index_add_(0, owner.to(encoded.device), encoded)
            self._zero_shot_cache = (self.chain, F.normalize(summed, dim=-1))
        text = self._zero_shot_cache[1]
        return self.backbone.logit_scale.float() * features.to(text.device) @ text.t()

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
        return self._logits_from_features(features)

    @overload
    def predict(self, images: ImagesInput, *, top_k: int = ..., batch_size: int = ...,
                zero_shot: bool = ..., on_bad_image: Literal["error"] = ...
                ) -> list[Prediction]: ...

    @overload
    def predict(self, images: ImagesInput, *, top_k: int = ..., batch_size: int = ...,
                zero_shot: bool = ..., on_bad_image: Literal["skip"]
                ) -> list[Prediction | None]: ...

    def predict(self, images: ImagesInput, *, top_k: int = 1, batch_size: int = 64,
                zero_shot: bool = False, on_bad_image: Literal["error", "skip"] = "error"
                ) -> list[Prediction] | list[Prediction | None]:
        """Predict labels for images.

        Images are read as an image viewer shows them (:func:`cotprompt.data.images.load_image`:
        EXIF orientation, 16-bit and float pixels, ICC profiles, transparency on white...), one
        batch at a time.

        Args:
            images: Paths, PIL images, or preprocessed pixels ``[B, 3, H, W]``.
            top_k: How many labels to return per image.
            zero_shot: Use the untuned classifier instead of the learned prompts.
            on_bad_image: What an image that cannot be read (missing, corrupt, not an image,
                NaN pixels) does: ``"error"`` raises a :class:`~cotprompt.errors.DataError`
                naming it; ``"skip"`` logs a warning naming it and puts ``None`` in its place
                in the result (an error all the same when no image can be read).

        Returns:
            One :class:`Prediction` per image, in the order given (``None`` for the images
            skipped with ``on_bad_image="skip"``).

        Raises:
            DataError: An image cannot be read (``on_bad_image="error"``), or none can.
            NumericalError: When a logit is NaN or infinite (prompt weights, backbone or image
                producing NaN/Inf); the message names the images.
        """
        import logging

        from cotprompt.pipeline.inputs import read_image

        if on_bad_image not in ("error", "skip"):
            raise ConfigError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        labels = self.class_names
        items = as_image_list(images)
        kept = list(range(len(items)))
        if isinstance(items, Tensor):
            logits = self.logits(items, zero_shot=zero_shot, batch_size=batch_size)
        else:
            if self.task is not None and self.task.kind != "classification":
                self.logits(items[:1], zero_shot=zero_shot)  # refuses, saying what to use
            log = logging.getLogger("cotprompt.pipeline")
            transform = self.backbone.image_transform(train=False)
            kept, parts = [], []
            for start in range(0, len(items), batch_size):  # one batch of images in memory
                batch = []
                for index in range(start, min(start + batch_size, len(items))):
                    try:
                        image = read_image(items[index])  # decoded and shown once, as evaluate
                    except DataError as exc:
                        if on_bad_image == "error":
                            raise
                        log.warning("skipping image %d: %s", index, exc)
                        continue
                    batch.append(transform(image))
                    kept.append(index)
                if batch:
                    pixels = torch.stack(batch)
                    parts.append(self.image_features(pixels, batch_size, frozen=zero_shot))
            if not parts:
                raise DataError(f"none of the {len(items)} image(s) could be read")
            if len(kept) < len(items):
                log.warning("skipped %d of %d image(s) that could not be read",
                            len(items) - len(kept), len(items))
            features = torch.cat(parts)
            logits = (self.zero_shot_logits(features) if zero_shot
                      else self._logits_from_features(features))

        def describe(i: int) -> str | None:
            item = None if isinstance(items, Tensor) else items[kept[i]]
            if isinstance(item, (str, os.PathLike)):
                return os.fspath(item)
            return getattr(item, "filename", None) or None  # a PIL image read from a file

        check_finite_scores(logits, describe, total=len(logits), zero_shot=zero_shot)
        probs = logits.softmax(-1)
        k = max(1, min(top_k, len(labels)))
        values, indices = probs.topk(k, dim=-1)
        out: list[Prediction | None] = [None] * len(items)
        for row, (vals, idxs) in enumerate(zip(values.tolist(), indices.tolist(), strict=True)):
            ranked = tuple((labels[i], float(v)) for i, v in zip(idxs, vals, strict=True))
            out[kept[row]] = Prediction(label=labels[idxs[0]], index=idxs[0], score=vals[0],
                                        top_k=ranked)
        return out

    def evaluate(self, dataset: ImageClassificationDataset | TaskDataset, *, batch_size: int = 64,
                 zero_shot: bool = False, split: str | None = None
                 ) -> EvaluationResult | TaskResult:
        """Accuracy, mean per-class accuracy and per-class accuracy on ``dataset``.

        Args:
            dataset: Labelled images over the pipeline's classes (same names, same order).
            zero_shot: Evaluate the untuned classifier instead.
            split: If given, the metrics are recorded under this name for the model card.

        A :class:`~cotprompt.tasks.RetrievalDataset` or :class:`~cotprompt.tasks.VQADataset`
        is evaluated by :func:`cotprompt.tasks.evaluate_task` instead (recall@k both ways, or
        VQA accuracy with out-of-vocabulary counts).

        Raises:
            NumericalError: When a logit is NaN or infinite (prompt weights, backbone or image
                producing NaN/Inf), instead of reporting an accuracy; the message names the
                images.
        """
        from cotprompt.tasks import evaluate_task, is_task_dataset

        if is_task_dataset(dataset):
            return evaluate_task(self, dataset, batch_size=batch_size,  # type: ignore[arg-type]
                                 zero_shot=zero_shot, split=split)
        self._check_dataset_classes(dataset)
        transform = self.backbone.image_transform(train=False)
        loader = torch.utils.data.DataLoader(dataset.with_transform(transform),
                                             batch_size=batch_size, shuffle=False)
        preds = []
        seen = 0
        self.model.eval()
        with torch.no_grad():
            for pixels, _ in loader:
                features = self._encode_pixels(pixels, frozen=zero_shot)
                logits = (self.zero_shot_logits(features) if zero_shot
                          else self._logits_from_features(features))
                check_finite_scores(
                    logits, lambda i, start=seen: dataset.records[start + i].describe(),
                    total=len(dataset), zero_shot=zero_shot, offset=seen,
                    consequence="; no accuracy can be computed",
                )
                preds.append(logits.argmax(-1).cpu())
                seen += len(logits)
        result = EvaluationResult.from_predictions(torch.cat(preds), dataset.labels,
                                                   self.class_names)
        if split is not None:
            self.metrics[split] = {"accuracy": result.accuracy,
                                   "mean_per_class_accuracy": result.mean_per_class_accuracy}
        return result

    # -- saving and loading -------------------------------------------------------------------

    def _component_records(self) -> dict[str, dict[str, Any]]:
        return pipeline_io.component_records(self)

    def artifact_config(self) -> dict[str, Any]:
        """The JSON config describing this pipeline (without the weights entry)."""
        return pipeline_io.pipeline_config(self)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config, weights (trainable tensors only) and model card to ``directory``.

        Files are replaced atomically; custom text in an existing ``README.md`` is kept.

        Returns:
            The folder.
        """
        return pipeline_io.save_pipeline(self, directory)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        private: bool | None = None,
        revision: str | None = None,
        commit_message: str | None = None,
        create_pr: bool = False,
    ) -> Any:
        """Upload config, weights and model card to a Hub repository in one commit.

        Creates the repository (and the ``revision`` branch) if needed; keeps the custom text of
        the repository's model card. See :func:`cotprompt.hub.push_to_hub`.

        Args:
            repo_id: ``namespace/name``.
            token: Hub token with write access; default the usual huggingface_hub settings.
            private: Visibility of a repository this push creates: ``True`` private, ``False``
                public, ``None`` (default) the Hub's default for the namespace. An existing
                repository keeps its visibility.
            revision: Branch to commit to (default ``main``).
            commit_message: Default: a summary of the pipeline.
            create_pr: Open a pull request instead of committing to the branch.

        Returns:
            The ``huggingface_hub.CommitInfo`` (``commit_url``, ``oid``, ``pr_url``).
        """
        from cotprompt.hub import push_to_hub

        return push_to_hub(self, repo_id, token=token, private=private, revision=revision,
                           commit_message=commit_message, create_pr=create_pr)

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | Path,
        *,
        revision: str | None = None,
        token: str | None = None,
        backbone: Any = None,
        device: str | torch.device | None = None,
        allow_pickle: bool = False,
    ) -> CoTPipeline:
        """Load a saved pipeline from a folder or a Hugging Face Hub repository.

        The artifact is untrusted: its config is validated before anything is fetched or built
        (no caller-only opt-ins, no free-form loader arguments, backbone weights only from a
        known open_clip tag or safetensors), the weights checksum is required, and NaN/Inf
        weights are refused. A save that was interrupted is recovered first (logged).

        Args:
            path_or_repo_id: A local folder, or a Hub repository id (``user/name``).
            revision: Hub branch, tag or commit.
            token: Hub token (default: the usual huggingface_hub settings).
            backbone: An already built backbone to reuse; it must match the saved spec.
            device: Where to run.
            allow_pickle: The caller's opt-in to backbone or language-model weights that are
                pickle-based (``torch.save`` files, TorchScript archives other than OpenAI's
                published CLIP files); such files can run code. A loaded file can never set it.

        Raises:
            ArtifactError: Missing/corrupt/tampered files, newer format, mismatching or
                non-finite weights, malformed records.
            UnsafeSettingError: The artifact carries a setting only the caller may make.
            ConfigError: The backbone's weights need ``allow_pickle`` (one line saying so).
            UnknownComponentError: A component's plugin is not installed (names the package).
        """
        return pipeline_io.load_pipeline(cls, path_or_repo_id, revision=revision, token=token,
                                         backbone=backbone, device=device,
                                         allow_pickle=allow_pickle)


def check_finite_scores(
    logits: Tensor,
    describe: Callable[[int], str | None],
    *,
    total: int,
    zero_shot: bool,
    offset: int = 0,
    consequence: str = "",
) -> None:
    """Refuse NaN/Inf logits ``[B, C]`` rather than turn them into a label or an accuracy.

    Args:
        logits: The scores of a batch.
        describe: Batch row -> a name for the image (a path), or ``None``.
        total: The number of images in the whole request (named in the message).
        zero_shot: Whether the untuned classifier produced them (names the cause).
        offset: Index of the batch's first image in the request.
        consequence: Appended to the message.

    Raises:
        NumericalError: Naming up to three images whose scores are not finite.
    """
    bad = (~torch.isfinite(logits).all(dim=-1)).nonzero().flatten().tolist()
    if not bad:
        return
    shown = []
    for i in bad[:3]:
        name = describe(i)
        shown.append(f"image {offset + i} ({name})" if name else f"image {offset + i}")
    more = f" and {len(bad) - len(shown)} more" if len(bad) > len(shown) else ""
    cause = "the backbone produces" if zero_shot else "the prompts or the backbone produce"
    raise NumericalError(
        f"non-finite scores for {', '.join(shown)}{more} (of {total} images): {cause} NaN/Inf"
        f"{consequence}"
    )
