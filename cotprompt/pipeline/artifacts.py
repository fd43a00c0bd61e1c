"""Saving, loading and sharing a pipeline: the artifact methods of
:class:`~cotprompt.CoTPipeline` (:meth:`save_pretrained`, :meth:`from_pretrained`,
:meth:`push_to_hub`), over :mod:`cotprompt.pipeline.serialization` and
:class:`~cotprompt.hub.HubMixin`."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from cotprompt.artifact.history import check_history
from cotprompt.artifact.model_card import CardOptions, check_card_kwargs
from cotprompt.errors import ConfigError
from cotprompt.hub.mixin import HubMixin
from cotprompt.pipeline import serialization
from cotprompt.pipeline.config import KINDS
from cotprompt.protocols import Backbone
from cotprompt.training.config import TrainingConfig
from cotprompt.types import PromptChain, Task

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

    from cotprompt.model import PromptModel

PipelineT = TypeVar("PipelineT", bound="ArtifactMixin")


class ArtifactMixin(HubMixin):
    """The artifact methods of :class:`~cotprompt.CoTPipeline`, which provides the attributes
    declared here, ``set_classes`` and the constructor ``_from_artifact_folder`` calls."""

    model: PromptModel
    task: Task | None
    chain: PromptChain | None
    training: TrainingConfig
    training_data: dict[str, Any] | None
    metrics: dict[str, dict[str, float]]
    source: dict[str, Any] | None
    #: The per-epoch records of the run that trained the prompts (``TrainingResult.history`` of
    #: the last ``fit``, or the ``history.json`` of a loaded artifact), saved as ``history.json``
    #: and shown in the model card's "Training results"; ``None`` when unknown.
    training_history: list[dict[str, Any]] | None = None
    #: The history as loaded, to tell it from one of a run made in this process (only that one
    #: was made with this process's torch and open_clip versions).
    _loaded_history: list[dict[str, Any]] | None = None

    if TYPE_CHECKING:  # what CoTPipeline provides: its constructor and set_classes
        def __init__(self, *, training: TrainingConfig | None = None,
                     device: str | torch.device | None = None, **components: Any) -> None: ...

        def set_classes(self, classes: Sequence[str] | Task, chain: PromptChain | None = None
                        ) -> PromptChain: ...

    def _card_options(self, model_card_kwargs: Mapping[str, Any] | None = None) -> CardOptions:
        """What the model card adds to the artifact config: ``model_card_kwargs`` (checked), the
        per-epoch training history when known, and for prompts trained in this process the
        torch and open_clip versions they were trained with.

        Raises:
            ConfigError: A ``model_card_kwargs`` value of the wrong type; a
                :attr:`training_history` a save would not write (see
                :func:`~cotprompt.artifact.history.encode_history`).
        """
        history = self.training_history
        versions: dict[str, str] = {}
        if history and history is not self._loaded_history:
            versions["torch"] = torch.__version__
            with contextlib.suppress(metadata.PackageNotFoundError):
                versions["open_clip"] = metadata.version("open_clip_torch")
        return CardOptions(card_kwargs=check_card_kwargs(model_card_kwargs),
                           history=check_history(history) if history else None,
                           versions=versions)

    def component_records(self) -> dict[str, dict[str, Any]]:
        """The saved record (name, package, config) of each component, by kind."""
        return serialization.component_records({kind: getattr(self, kind) for kind in KINDS})

    def artifact_config(self) -> dict[str, Any]:
        """The JSON config describing this pipeline (without the weights entry).

        Raises:
            ConfigError: No classes are bound yet.
        """
        if self.task is None or self.chain is None:
            raise ConfigError("nothing to save: the pipeline has no classes yet")
        return serialization.artifact_config(
            components=self.component_records(), task=self.task, chain=self.chain,
            training=self.training, training_data=self.training_data, metrics=self.metrics,
        )

    def save_pretrained(self, directory: str | Path, *,
                        model_card_kwargs: Mapping[str, Any] | None = None) -> Path:
        """Write config, weights (trainable tensors only), model card and, when known, the
        per-epoch training history (``history.json``, see :attr:`training_history`) to
        ``directory``.

        Files are replaced all or nothing (a save interrupted at any point leaves the previous
        artifact loadable); custom text in an existing ``README.md`` is kept.

        Args:
            directory: The folder.
            model_card_kwargs: Model card metadata: ``license`` (default: the base model's
                where known, ``mit`` for OpenAI's CLIP weights), ``tags`` (added to
                cotprompt's), ``datasets`` (default: the training data's dataset); any other
                key is written to the card's front matter as is.

        Returns:
            The folder.

        Raises:
            ConfigError: No classes are bound yet; a ``model_card_kwargs`` value of the wrong
                type; a :attr:`training_history` that is not a list of flat per-epoch records
                loading would accept (names ``training_history``; nothing is written).
            ArtifactError: ``directory`` holds a ``history.json`` its artifact does not record
                (a file of yours), and there is a training history to save.
        """
        options = self._card_options(model_card_kwargs)
        return serialization.save_artifact(directory, self.artifact_config(),
                                           self.model.trainable_state(), options)

    # the pipeline's own options in place of HubMixin's generic ones (card_options, **kwargs),
    # as subclasses of huggingface_hub's ModelHubMixin do: deliberate, hence the ignores
    def push_to_hub(  # type: ignore[override]
        self,
        repo_id: str,
        *,
        token: str | bool | None = None,
        private: bool | None = None,
        revision: str | None = None,
        commit_message: str | None = None,
        create_pr: bool = False,
        model_card_kwargs: Mapping[str, Any] | None = None,
    ) -> CommitInfo:
        """Upload config, weights, model card and training history to a Hub repository in one
        commit.

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
            model_card_kwargs: Model card metadata, as in :meth:`save_pretrained`.

        Returns:
            The ``huggingface_hub.CommitInfo`` (``commit_url``, ``oid``, ``pr_url``).
        """
        return super().push_to_hub(repo_id, token=token, private=private, revision=revision,
                                   commit_message=commit_message, create_pr=create_pr,
                                   card_options=self._card_options(model_card_kwargs))

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls: type[PipelineT],
        path_or_repo_id: str | Path,
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        backbone: Backbone | None = None,
        device: str | torch.device | None = None,
        allow_pickle: bool = False,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
        subfolder: str | None = None,
        precision: str | None = None,
    ) -> PipelineT:
        """Load a saved pipeline from a folder or a Hugging Face Hub repository.

        The artifact is untrusted: its config is validated before anything is fetched or built
        (no caller-only opt-ins, no free-form loader arguments, backbone weights only from a
        known open_clip tag or safetensors), the weights checksum is required, and NaN/Inf
        weights are refused. A save that was interrupted is recovered first (logged). Only the
        config, weights, model card and training history are fetched from a repository. The
        artifact's ``history.json`` becomes :attr:`training_history` (a bad one is left out
        with a warning: it changes no prediction).

        Args:
            path_or_repo_id: A local folder, or a Hub repository id (``user/name``).
            revision: Hub branch, tag or commit.
            token: Hub token (default: the usual huggingface_hub settings).
            backbone: An already built backbone to reuse; it must match the saved spec in what
                changes the model (``model_name``, ``pretrained``, ``init_seed``...). Options
                local to a machine (``cache_dir``) are not compared; another ``precision`` is
                accepted (the prompts then run at that precision; logged at INFO).
            device: Where to run.
            allow_pickle: The caller's opt-in to backbone or language-model weights that are
                pickle-based (``torch.save`` files, TorchScript archives other than OpenAI's
                published CLIP files); such files can run code. A loaded file can never set it.
            cache_dir: The Hugging Face Hub cache folder to download into and read from
                (default ``HF_HUB_CACHE``), as in huggingface_hub. Not the backbone's open_clip
                ``cache_dir``.
            local_files_only: Make no network request at all: a Hub id is read from the cache
                only (as with ``HF_HUB_OFFLINE=1``); an artifact not cached is an error.
            force_download: Download the artifact's files again even when they are cached
                (not together with ``local_files_only`` or ``HF_HUB_OFFLINE``).
            subfolder: The folder holding the artifact inside the Hub repository, or inside the
                local folder (``path/subfolder``).
            precision: Build the saved backbone at this precision instead of the saved one (the
                backbone's option: open_clip's ``fp32``, ``bf16``, ``pure_bf16``...), e.g. to
                run the prompts on a bf16 backbone. With ``backbone``, it must be that
                backbone's precision.

        Raises:
            ArtifactError: Missing/corrupt/tampered files, newer format, mismatching or
                non-finite weights, malformed records; not cached with ``local_files_only``.
            UnsafeSettingError: The artifact carries a setting only the caller may make.
            ConfigError: The backbone's weights need ``allow_pickle`` (one line saying so); a
                ``precision`` the backbone does not accept.
            UnknownComponentError: A component's plugin is not installed (names the package).
        """
        serialization.check_load_options(backbone, precision)  # before anything is fetched
        return super().from_pretrained(path_or_repo_id, revision=revision, token=token,
                                       cache_dir=cache_dir, local_files_only=local_files_only,
                                       force_download=force_download, subfolder=subfolder,
                                       backbone=backbone, device=device,
                                       allow_pickle=allow_pickle, precision=precision)

    @classmethod
    def _from_artifact_folder(  # type: ignore[override]
            cls: type[PipelineT], directory: Path, *, origin: dict[str, Any],
            backbone: Backbone | None = None, device: str | torch.device | None = None,
            allow_pickle: bool = False, precision: str | None = None) -> PipelineT:
        opened = serialization.open_artifact(directory, origin, backbone=backbone,
                                             allow_pickle=allow_pickle, precision=precision)
        records = opened.checked.records
        pipeline = cls(**opened.components, training=records.training, device=device)
        pipeline.set_classes(records.task, records.chain)
        serialization.restore_weights(directory, opened.checked.tensors,
                                      pipeline.model.trainable_state())
        pipeline.metrics = records.metrics
        pipeline.training_data = records.training_data
        pipeline.training_history = pipeline._loaded_history = opened.checked.history
        pipeline.source = dict(origin)
        return pipeline
