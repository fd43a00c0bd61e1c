"""The methods a sweep runs: presets that follow the published configs (each names its source)
and a user's method described in a YAML/JSON file.

A :class:`Method` is the components (generator, tuner, aggregator) and the training recipe of
one method; the sweep's backbone is shared by every method (:mod:`cotprompt.experiments.runner`).
Presets (:data:`METHOD_PRESETS`; every trained one drops the last incomplete batch of an
epoch, as Dassl's data manager does: ``drop_last=is_train and len(data_source) >= batch_size``,
which is :class:`~cotprompt.training.TrainingConfig`'s ``drop_last``, keeping a lone incomplete
batch; precision: the research configs run the model in fp16 (``PREC fp16``), cotprompt in
fp32 on a CPU and with bf16 autocast on a GPU by default, and each result records the one used):

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

What a run records of its method (:class:`RunRecords`: the resolved components and training
options, the precision actually used) and its fingerprint (:func:`run_fingerprint`) are known
before anything is built, so that a resumed sweep can check its finished runs first.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotprompt.config import ComponentSpec
from cotprompt.errors import ConfigError, UnknownComponentError, one_line
from cotprompt.experiments.results import FORMAT, RunSpec, read_result
from cotprompt.training.config import TrainingConfig, merge_training

if TYPE_CHECKING:
    import torch

    from cotprompt.pipeline import CoTPipeline
    from cotprompt.protocols import Backbone

__all__ = [
    "METHOD_PRESETS",
    "Method",
    "RunRecords",
    "backbone_record",
    "method_from_file",
    "resolve_methods",
    "run_fingerprint",
    "used_precision",
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
        training={"epochs": 200, "batch_size": 32, "lr": 0.002, "augment": True,
                  "drop_last": True},
        epochs_on={"imagenet": 50}, epochs_by_shots={1: 50, 2: 100, 4: 100},
    ),
    "coop_ctxv1": Method(
        name="coop_ctxv1",
        source=f"{_COOP_SOURCE} configs/trainers/CoOp/vit_b16_ctxv1.yaml, "
        "vit_b16_ep50_ctxv1.yaml (ImageNet): CoCoOp's CoOp baseline "
        "(scripts/cocoop/base2new_train.sh)",
        tuner=_spec("coop", ctx_init="a photo of a"),
        training={"epochs": 200, "batch_size": 32, "lr": 0.002, "augment": True,
                  "drop_last": True},
        epochs_on={"imagenet": 50},
    ),
    "cocoop": Method(
        name="cocoop",
        source=f"{_COOP_SOURCE} configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml",
        tuner=_spec("cocoop", ctx_init="a photo of a"),
        training={"epochs": 10, "batch_size": 1, "lr": 0.002, "augment": True,
                  "drop_last": True},
    ),
    "cotpt": Method(
        name="cotpt",
        source="cotprompt's reconstruction of CoT-PT (Ge et al., arXiv 2304.07919; no code "
        "published): cot chain, chained meta-nets, adaptive aggregator, CoCoOp's recipe with "
        "batch 32",
        generator=_spec("rule-based", preset="cot"),
        tuner=_spec("cotpt"),
        aggregator=_spec("adaptive"),
        training={"epochs": 10, "batch_size": 32, "lr": 0.002, "augment": True,
                  "drop_last": True},
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
    from cotprompt.plugins.registry import get_registry

    for kind in ("generator", "tuner", "aggregator"):  # found now, not after other runs
        try:
            get_registry().get(kind, getattr(config, kind).name)
        except UnknownComponentError as exc:
            raise UnknownComponentError(f"{path}: {one_line(exc)}") from exc
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


# -- what a run records of its method and backbone, and its fingerprint ------------------------

#: Options a sweep sets on every run's training (one process, its own progress bar).
_FORCED = {"checkpoint_dir": None, "checkpoint_every": None, "progress": False}
#: Run settings left out of a run's record and fingerprint besides the places on this machine
#: (``config_record`` leaves out those: folders, trackers).
_NOT_RECORDED = {"checkpoint_every", "keep_checkpoints", "progress", "log_every", "num_workers"}
#: Method record entries outside the fingerprint (a function of the run's datasets).
_NOT_FINGERPRINTED = {"zero_shot_templates"}
#: accelerate's ``mixed_precision`` -> cotprompt's ``precision``.
_PRECISION = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}


def run_fingerprint(method: Mapping[str, Any], backbone: Mapping[str, Any], *,
                    share_features: bool) -> str:
    """What decides a run's numbers besides its spec, as a sha256 (``results.json``'s
    ``fingerprint``).

    The training seed is left out (it is the spec's): the seeds of one method's runs share a
    fingerprint, which is what a report checks before averaging them.

    Args:
        method: The method's record in ``results.json`` (its ``zero_shot_templates`` left out:
            they follow from the run's datasets).
        backbone: The backbone's spec (``backbone.spec()``).
        share_features: Whether frozen image features were shared.
    """
    record = {k: v for k, v in method.items() if k not in _NOT_FINGERPRINTED}
    if isinstance(record.get("training"), Mapping):
        record["training"] = {k: v for k, v in record["training"].items() if k != "seed"}
    payload = {"format": FORMAT, "share_features": share_features, "method": record,
               "backbone": dict(backbone)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _json_ready(value: Any) -> Any:
    """``value`` as ``results.json`` reads it back (lists for tuples, strings for paths)."""
    return json.loads(json.dumps(value, default=str))


def used_precision(precision: str) -> str:
    """The precision a training of ``precision`` runs in (``auto`` resolved as accelerate is
    set up for it on this machine: ``fp32``, ``bf16`` or ``fp16``)."""
    from cotprompt.training.loop import make_accelerator

    return _PRECISION.get(str(make_accelerator(precision).mixed_precision), precision)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 3) -> list[str]:
    """``"key old vs new"`` of the entries that differ (dotted keys, at most ``limit``)."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    missing = object()
    keys = [k for k in dict.fromkeys([*flat_old, *flat_new])
            if flat_old.get(k, missing) != flat_new.get(k, missing)]
    shown = [f"{k} {_show(flat_old.get(k, '(none)'))} vs {_show(flat_new.get(k, '(none)'))}"
             for k in keys[:limit]]
    if len(keys) > limit:
        shown.append(f"{len(keys) - limit} more")
    return shown


class RunRecords:
    """What each run of a sweep records besides its measurements, known before the backbone
    is built: the method's record, the backbone's spec and the fingerprint.

    Args:
        methods: The sweep's methods by name.
        training: Training options over every method's recipe (``{"epochs": 2}``).
        backbone_record: :func:`backbone_record`'s record.
        share: Whether the sweep shares frozen image features.
    """

    def __init__(self, methods: Mapping[str, Method], training: Mapping[str, Any],
                 backbone_record: dict[str, Any], share: bool) -> None:
        self.methods = methods
        self.training = dict(training)
        self.backbone_record = backbone_record
        self.share = share
        self._precisions: dict[str, str] = {}

    def config(self, spec: RunSpec) -> TrainingConfig:
        """The run's training options: its method's recipe, the overrides, its seed, the
        sweep's forced options, and the precision and gradient accumulation steps resolved (as
        this machine and ``accelerate launch`` set them up)."""
        from cotprompt.training.accelerator import accumulation_steps

        method = self.methods[spec.method]
        config = method.training_config(dataset=spec.dataset, shots=spec.shots, seed=spec.seed,
                                        overrides=self.training)
        if config.precision not in self._precisions:
            self._precisions[config.precision] = used_precision(config.precision)
        return config.model_copy(update={
            **_FORCED, "precision": self._precisions[config.precision],
            "gradient_accumulation_steps": accumulation_steps(config.gradient_accumulation_steps),
        })

    def record(self, spec: RunSpec) -> dict[str, Any]:
        """The method's record of the run in ``results.json`` (without the zero-shot
        templates, added when the run is done).

        Its ``training`` is what changes the run's numbers: the options without run settings
        and places on this machine (folders, trackers: ``config_record``), with the
        accumulation steps used when there are more than one (absent: 1, as records made
        before the option)."""
        from cotprompt.config import config_record

        method = self.methods[spec.method]
        record = method.record()
        if not method.zero_shot:
            training = {key: value for key, value in config_record(self.config(spec)).items()
                        if key not in _NOT_RECORDED}
            if training.get("gradient_accumulation_steps") == 1:
                del training["gradient_accumulation_steps"]
            record["training"] = training
        return _json_ready(record)

    def fingerprint(self, record: Mapping[str, Any], *, share: bool | None = None) -> str:
        return run_fingerprint(record, self.backbone_record.get("spec", self.backbone_record),
                               share_features=self.share if share is None else share)

    def check_finished(self, path: Path, spec: RunSpec) -> str | None:
        """``None`` when the finished result at ``path`` is the run this sweep would do; else
        what differs (existing vs this sweep's)."""
        old = read_result(path)
        record = self.record(spec)
        if old.run == spec and old.fingerprint == self.fingerprint(record):
            return None
        old_method = {k: v for k, v in old.method.items() if k not in _NOT_FINGERPRINTED}
        diffs = _differences(
            {"run": old.run.to_dict(), "method": old_method, "backbone": old.backbone},
            {"run": spec.to_dict(), "method": record, "backbone": self.backbone_record})
        diffs = [d.removeprefix("method.") for d in diffs]
        if not diffs:
            if not old.fingerprint:
                diffs = ["no fingerprint (written by an older cotprompt) vs one"]
            elif old.fingerprint == self.fingerprint(record, share=not self.share):
                diffs = ["features shared " + ("no vs yes" if self.share else "yes vs no")]
            else:
                diffs = [f"fingerprint {old.fingerprint[:12]} vs {self.fingerprint(record)[:12]}"]
        return "; ".join(diffs)


def backbone_record(backbone: Backbone | None, options: Mapping[str, Any]
                    ) -> tuple[Any, dict[str, Any]]:
    """``(config to build the backbone with or None, backbone record)``: the record is
    ``{"model_name", "pretrained", "spec"}``, ``spec`` as ``backbone.spec()`` gives it, known
    without building the backbone (from ``options`` of ``open_clip`` when ``backbone`` is
    ``None``).

    Raises:
        ConfigError: Invalid backbone options.
    """
    from cotprompt.config import config_record

    if backbone is not None:
        config = getattr(backbone, "config", None)
        spec = backbone.spec() if callable(getattr(backbone, "spec", None)) else {
            "name": type(backbone).__qualname__}
        return None, _json_ready({"model_name": getattr(config, "model_name", None),
                                  "pretrained": getattr(config, "pretrained", None),
                                  "spec": spec})
    from pydantic import ValidationError

    from cotprompt.plugins.messages import validation_message
    from cotprompt.plugins.registry import get_registry

    cls = get_registry().get("backbone", "open_clip")
    try:
        config = cls.Config.model_validate(dict(options))
    except ValidationError as exc:
        raise ConfigError(validation_message("backbone 'open_clip'", cls.Config, exc)) from exc
    spec = {"name": getattr(cls, "name", "open_clip"), "config": config_record(config)}
    return config, _json_ready({"model_name": config.model_name,
                                "pretrained": config.pretrained, "spec": spec})
