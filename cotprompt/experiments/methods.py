"""The methods a sweep runs: presets that follow the published configs (each names its source)
and a user's method described in a YAML/JSON file.

A :class:`Method` is the components (generator, tuner, aggregator) and the training recipe of
one method; the sweep's backbone is shared by every method (:mod:`cotprompt.experiments.runner`).
Presets (:data:`METHOD_PRESETS`):

- ``zsclip``: zero-shot CLIP with each dataset's hand-written template, no training (CoOp's
  ``trainers/zsclip.py``, ``CUSTOM_TEMPLATES``; ``scripts/coop/zeroshot.sh``).
- ``coop``: CoOp (Zhou et al., IJCV 2022) as ``scripts/coop/main.sh`` runs it: 16 context
  vectors drawn at random, shared by all classes, class token at the end;
  ``configs/trainers/CoOp/vit_b16.yaml``: batch 32, SGD lr 0.002, 200 epochs, cosine, one
  warm-up epoch at a constant 1e-5, random resized crop and flip; ImageNet 50 epochs
  (``vit_b16_ep50.yaml``, "for ImageNet, we use *_ep50.yaml for all settings", COOP.md); the
  few-shot protocol trains 1 shot for 50 epochs and 2 or 4 shots for 100 (COOP.md's commands).
- ``coop_ctxv1``: the CoOp baseline of CoCoOp's paper (``scripts/cocoop/base2new_train.sh``):
  CoOp with 4 vectors from "a photo of a" (``vit_b16_ctxv1.yaml``, ImageNet
  ``vit_b16_ep50_ctxv1.yaml``).
- ``cocoop``: CoCoOp (Zhou et al., CVPR 2022),
  ``configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml``: 4 vectors from "a photo of a",
  meta-net, batch 1, 10 epochs, SGD lr 0.002, cosine, warm-up 1 epoch at 1e-5 (every dataset).
- ``cotpt``: cotprompt's reconstruction of CoT-PT (Ge et al., arXiv 2304.07919; the paper's
  code is not published): the three-step ``cot`` chain, chained meta-nets, the adaptive
  aggregator, CoCoOp's recipe with batch 32 (:class:`~cotprompt.training.TrainingConfig`'s
  defaults).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotprompt.config import ComponentSpec
from cotprompt.errors import ConfigError
from cotprompt.training.config import TrainingConfig, merge_training

if TYPE_CHECKING:
    import torch

    from cotprompt.pipeline import CoTPipeline
    from cotprompt.protocols import Backbone

__all__ = [
    "METHOD_PRESETS",
    "Method",
    "method_from_file",
    "resolve_methods",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def _spec(name: str, **config: Any) -> ComponentSpec:
    return ComponentSpec(name=name, config=dict(config))


@dataclass(frozen=True)
class Method:
    """One method of a sweep: its components and training recipe.

    Attributes:
        name: Its name in run ids and tables (letters, digits, ``.``, ``_``, ``-``).
        source: Where its settings come from (a published config, or the user's file).
        generator: The prompt generator (``rule-based``, ``lm``...).
        tuner: The prompt tuner (``coop``, ``cocoop``, ``cotpt``...).
        aggregator: The aggregator (``mean``, ``adaptive``...).
        training: Training options, as updates of :class:`~cotprompt.training.TrainingConfig`'s
            defaults.
        zero_shot: No training: evaluated with the untuned classifier of each dataset's
            hand-written template.
        epochs_on: Epochs by training dataset (``{"imagenet": 50}``); before ``epochs_by_shots``.
        epochs_by_shots: Epochs by shots (``{1: 50, 2: 100, 4: 100}``).
    """

    name: str
    source: str
    generator: ComponentSpec = field(default_factory=lambda: _spec("rule-based"))
    tuner: ComponentSpec = field(default_factory=lambda: _spec("coop"))
    aggregator: ComponentSpec = field(default_factory=lambda: _spec("mean"))
    training: Mapping[str, Any] = field(default_factory=dict)
    zero_shot: bool = False
    epochs_on: Mapping[str, int] = field(default_factory=dict)
    epochs_by_shots: Mapping[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"method name {self.name!r} must be letters, digits, '.', '_' or "
                              "'-' (it names folders)")

    def training_config(
        self,
        *,
        dataset: str,
        shots: int,
        seed: int,
        overrides: Mapping[str, Any] | None = None,
    ) -> TrainingConfig:
        """The training options of one run: the recipe, its epochs for ``dataset`` and
        ``shots``, then ``overrides`` (``{"epochs": 2}`` for a quick run), then ``seed``.

        Raises:
            ConfigError: An override names an unknown option or an invalid value.
        """
        updates: dict[str, Any] = dict(self.training)
        if dataset in self.epochs_on:
            updates["epochs"] = self.epochs_on[dataset]
        elif shots in self.epochs_by_shots:
            updates["epochs"] = self.epochs_by_shots[shots]
        updates.update(overrides or {})
        updates["seed"] = seed
        return merge_training(TrainingConfig(), updates)

    def create_pipeline(
        self,
        backbone: Backbone,
        *,
        training: TrainingConfig | None = None,
        device: str | torch.device | None = None,
        generator_config: Mapping[str, Any] | None = None,
    ) -> CoTPipeline:
        """A fresh pipeline of this method over the shared ``backbone`` (no classes bound).

        Args:
            generator_config: Updates of the generator's options (the zero-shot template).
        """
        from cotprompt.pipeline import CoTPipeline

        return CoTPipeline.create(
            backbone=backbone,
            generator=self.generator.name,
            generator_config={**self.generator.config, **(generator_config or {})},
            tuner=self.tuner.name, tuner_config=dict(self.tuner.config),
            aggregator=self.aggregator.name, aggregator_config=dict(self.aggregator.config),
            training=training, device=device,
        )

    def record(self) -> dict[str, Any]:
        """What a ``results.json`` records of the method (its run's training options are added
        by the runner)."""
        record: dict[str, Any] = {"name": self.name, "source": self.source,
                                  "zero_shot": self.zero_shot,
                                  "generator": self.generator.model_dump()}
        if not self.zero_shot:  # the untuned classifier has no tuner or aggregator
            record["tuner"] = self.tuner.model_dump()
            record["aggregator"] = self.aggregator.model_dump()
        return record


_COOP_SOURCE = "https://github.com/KaiyangZhou/CoOp"

#: The methods every sweep knows, by name (see the module's docstring for their sources).
METHOD_PRESETS: dict[str, Method] = {
    "zsclip": Method(
        name="zsclip", zero_shot=True,
        source=f"{_COOP_SOURCE} trainers/zsclip.py (ZeroshotCLIP, CUSTOM_TEMPLATES), "
        "scripts/coop/zeroshot.sh",
    ),
    "coop": Method(
        name="coop",
        source=f"{_COOP_SOURCE} configs/trainers/CoOp/vit_b16.yaml, vit_b16_ep50.yaml "
        "(ImageNet), scripts/coop/main.sh (N_CTX 16, CSC False, end), COOP.md (1 shot: 50 "
        "epochs, 2-4 shots: 100)",
        tuner=_spec("coop", n_ctx=16, class_token_position="end"),
        training={"epochs": 200, "batch_size": 32, "lr": 0.002, "augment": True},
        epochs_on={"imagenet": 50}, epochs_by_shots={1: 50, 2: 100, 4: 100},
    ),
    "coop_ctxv1": Method(
        name="coop_ctxv1",
        source=f"{_COOP_SOURCE} configs/trainers/CoOp/vit_b16_ctxv1.yaml, "
        "vit_b16_ep50_ctxv1.yaml (ImageNet): CoCoOp's CoOp baseline "
        "(scripts/cocoop/base2new_train.sh)",
        tuner=_spec("coop", ctx_init="a photo of a"),
        training={"epochs": 200, "batch_size": 32, "lr": 0.002, "augment": True},
        epochs_on={"imagenet": 50},
    ),
    "cocoop": Method(
        name="cocoop",
        source=f"{_COOP_SOURCE} configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml",
        tuner=_spec("cocoop", ctx_init="a photo of a"),
        training={"epochs": 10, "batch_size": 1, "lr": 0.002, "augment": True},
    ),
    "cotpt": Method(
        name="cotpt",
        source="cotprompt's reconstruction of CoT-PT (Ge et al., arXiv 2304.07919; no code "
        "published): cot chain, chained meta-nets, adaptive aggregator, CoCoOp's recipe with "
        "batch 32",
        generator=_spec("rule-based", preset="cot"),
        tuner=_spec("cotpt"),
        aggregator=_spec("adaptive"),
        training={"epochs": 10, "batch_size": 32, "lr": 0.002, "augment": True},
    ),
}


def method_from_file(path: str | Path) -> Method:
    """A user's method from a YAML/JSON file (untrusted: validated as a pipeline config file).

    The file holds the pipeline sections of a config file except ``backbone`` (a sweep shares
    one backbone): ``generator``, ``tuner``, ``aggregator``, ``training`` (any registered
    component and options), plus optional ``name`` (default: the file's stem), ``source`` and
    ``zero_shot`` (evaluate the untuned classifier, no training)::

        name: coop-m8
        tuner: {name: coop, config: {n_ctx: 8}}
        training: {epochs: 50, batch_size: 32}

    Raises:
        ConfigError: Unreadable file, invalid options, a ``backbone`` section, a bad name or
            the name of a preset.
        UnsafeSettingError: The file sets what only the caller may set.
    """
    from cotprompt.pipeline.config_files import load_pipeline_config, read_mapping

    path = Path(path)
    data = read_mapping(path)
    name = data.pop("name", path.stem)
    source = data.pop("source", f"user method file {path.name}")
    zero_shot = data.pop("zero_shot", False)
    if not isinstance(name, str) or not isinstance(source, str) or not isinstance(zero_shot,
                                                                                  bool):
        raise ConfigError(f"{path}: `name` and `source` must be strings, `zero_shot` true/false")
    if "backbone" in data:
        raise ConfigError(f"{path} sets a backbone; a sweep shares one backbone "
                          "(--model-name / --pretrained): remove the backbone section")
    if name in METHOD_PRESETS:
        raise ConfigError(f"method file {path} is named {name!r} like a preset; set `name:` to "
                          "another name")
    config = load_pipeline_config(data, file_source=str(path))
    training = {key: getattr(config.training, key) for key in config.training.model_fields_set}
    return Method(name=name, source=source, generator=config.generator, tuner=config.tuner,
                  aggregator=config.aggregator, training=training, zero_shot=zero_shot)


def resolve_methods(names: list[str] | tuple[str, ...]) -> dict[str, Method]:
    """Methods by name from presets and method files (a name ending in ``.yaml``, ``.yml`` or
    ``.json`` is a file), in the order given.

    Raises:
        ConfigError: An unknown preset (with the closest name), a bad file, or two methods of
            the same name.
    """
    from cotprompt.pipeline.config import choose_preset

    methods: dict[str, Method] = {}
    for given in names:
        if given.lower().endswith(_FILE_SUFFIXES):
            method = method_from_file(given)
        else:
            choose_preset("method", given, METHOD_PRESETS)
            method = METHOD_PRESETS[given]
        if method.name in methods:
            raise ConfigError(f"two methods are named {method.name!r}")
        methods[method.name] = method
    return methods
