"""The ``README.md`` model card of a saved pipeline, built with huggingface_hub's card tools.

The metadata header (``library_name: cotprompt``, the base model when it can be derived with
``base_model_relation: adapter``, a license, datasets, tags, the evaluation results as a
``model-index``) is written with :class:`huggingface_hub.ModelCardData`. The text describes the
prompts, the training data and hyperparameters, the per-epoch results of a training run made in
this process, the evaluation, framework versions, how to install cotprompt and load the prompts,
and the papers to cite.
The generated text sits between two HTML comments; when a card already exists (text a user wrote
around it on the Hub or locally), only that part is replaced and the existing metadata is kept,
ours merged into it (tags are added to the user's, not substituted for them).

Everything the text shows from a config or history read from a file (labels, names, metric
names, table keys and values, versions) is untrusted: it goes through :func:`markdown_text`
(or, for names shown as code or links, a form that falls back to it), so that it shows as the
text it is and never as markup: no HTML (the generated block's own markers included), links,
emphasis, table cells or lines of its own.
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from huggingface_hub import CardData, EvalResult, ModelCard, ModelCardData

from cotprompt.errors import is_control

logger = logging.getLogger("cotprompt.model_card")  # the logger name users configure

START = "<!-- cotprompt:generated:start -->"
END = "<!-- cotprompt:generated:end -->"
_MAX_LISTED_LABELS = 50
_BASE_TAGS = ("cotprompt", "prompt-tuning", "clip")
#: task kind -> (Hub tag / eval-result task type, pipeline tag)
_TASK_TAGS: dict[str, tuple[str, str]] = {
    "classification": ("image-classification", "zero-shot-image-classification"),
    "retrieval": ("image-text-retrieval", "zero-shot-image-classification"),
    "vqa": ("visual-question-answering", "visual-question-answering"),
}

#: open_clip ``(architecture, pretrained tag)`` -> the transformers CLIP repository of the same
#: OpenAI weights (what people search the Hub for).
OPENAI_CLIP_REPOS: dict[str, str] = {
    "ViT-B-32": "openai/clip-vit-base-patch32",
    "ViT-B-16": "openai/clip-vit-base-patch16",
    "ViT-L-14": "openai/clip-vit-large-patch14",
    "ViT-L-14-336": "openai/clip-vit-large-patch14-336",
}


#: open_clip pretrained tags whose weights are OpenAI's CLIP weights (released under MIT).
_OPENAI_TAGS = ("openai",)
#: Settings of a training run that are not hyperparameters (left out of the card's table).
_RUN_OPTIONS = frozenset({"progress", "log_every", "num_workers", "checkpoint_every",
                          "keep_checkpoints", "cache_features", "output_dir", "checkpoint_dir"})
#: Per-epoch history keys not shown in the card's results table.
_HISTORY_SKIPPED = frozenset({"seconds"})
#: ``model_card_kwargs`` keys with a meaning of their own; any other key is front matter as is.
CARD_KWARGS = ("license", "tags", "datasets")
#: Markdown punctuation that starts inline markup anywhere in a line (emphasis, links, code,
#: strikethrough, math, table cells, escapes); ``_`` only where it can start emphasis.
_MARKUP = re.compile(r"[\\`*\[\]|~$]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
#: Names shown as inline code as they are (anything else is shown as escaped text).
_CODE_SAFE = re.compile(r"[\w.:/@+=,() -]+")
#: A Hub repository id, linked as is.
_REPO_ID = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?")

CITATIONS = """\
```bibtex
@article{zhou2022coop,
  title   = {Learning to Prompt for Vision-Language Models},
  author  = {Zhou, Kaiyang and Yang, Jingkang and Loy, Chen Change and Liu, Ziwei},
  journal = {International Journal of Computer Vision},
  volume  = {130},
  number  = {9},
  pages   = {2337--2348},
  year    = {2022}
}

@inproceedings{zhou2022cocoop,
  title     = {Conditional Prompt Learning for Vision-Language Models},
  author    = {Zhou, Kaiyang and Yang, Jingkang and Loy, Chen Change and Liu, Ziwei},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern
               Recognition (CVPR)},
  pages     = {16816--16825},
  year      = {2022}
}

@article{ge2023cotpt,
  title   = {Chain of Thought Prompt Tuning in Vision Language Models},
  author  = {Ge, Jiaxin and Luo, Hongyin and Qian, Siyuan and Gan, Yulu and Fu, Jie and
             Zhang, Shanghang},
  journal = {arXiv preprint arXiv:2304.07919},
  year    = {2023}
}
```"""


@dataclass(frozen=True)
class CardOptions:
    """What a save adds to the card beyond the artifact config.

    Attributes:
        card_kwargs: The caller's ``model_card_kwargs`` (checked by :func:`check_card_kwargs`).
        history: The per-epoch records of a training run made in this process (what
            ``fit`` returned); ``None`` for prompts loaded from an artifact.
        versions: Framework versions to list besides cotprompt's (torch, open_clip), given
            only with ``history``: the versions the prompts were trained with.
    """

    card_kwargs: Mapping[str, Any] = field(default_factory=dict)
    history: Sequence[Mapping[str, Any]] | None = None
    versions: Mapping[str, str] = field(default_factory=dict)


def check_card_kwargs(card_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """``model_card_kwargs`` checked: ``license`` a string, ``tags`` and ``datasets`` strings or
    lists of strings; other keys are extra front matter (YAML-serialisable values).

    Raises:
        ConfigError: A value of the wrong type.
    """
    from cotprompt.errors import ConfigError

    if card_kwargs is None:
        return {}
    if not isinstance(card_kwargs, Mapping):
        raise ConfigError(f"model_card_kwargs must be a mapping, not {type(card_kwargs).__name__}")
    checked: dict[str, Any] = {}
    for key, value in card_kwargs.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"model_card_kwargs keys must be non-empty strings, not {key!r}")
        if key == "license":
            if not isinstance(value, str) or not value.strip():
                raise ConfigError("model_card_kwargs['license'] must be a license id such as 'mit'")
            value = value.strip()
        elif key in ("tags", "datasets"):
            value = [value] if isinstance(value, str) else value
            if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, str) and v.strip() for v in value
            ):
                raise ConfigError(f"model_card_kwargs[{key!r}] must be a string or a list of "
                                  "strings")
            value = list(dict.fromkeys(v.strip() for v in value))
        checked[key] = value
    return checked


def license_for(backbone_config: Mapping[str, Any], base_model: str | None) -> str | None:
    """The license of the base model where known: OpenAI's CLIP weights are MIT."""
    if backbone_config.get("pretrained") in _OPENAI_TAGS:
        return "mit"
    if base_model and (base_model.startswith("openai/clip-") or base_model.endswith(".openai")):
        return "mit"
    return None


def base_model_for(backbone_config: Mapping[str, Any]) -> str | None:
    """The Hub id of the model the prompts adapt, when it can be derived from the backbone spec.

    Derived from, in order: an open_clip ``hf-hub:org/name`` model (or pretrained) id; the
    OpenAI CLIP weights (``ViT-B-16`` + ``openai`` -> ``openai/clip-vit-base-patch16``...); the
    Hub repository open_clip itself lists for the pretrained tag. ``None`` for random weights,
    local checkpoints and unknown tags.

    Args:
        backbone_config: The backbone's ``config`` entry (``model_name``, ``pretrained``).
    """
    model_name = str(backbone_config.get("model_name") or "")
    pretrained = backbone_config.get("pretrained")
    for value in (model_name, pretrained):
        if isinstance(value, str) and value.startswith("hf-hub:"):
            return value[len("hf-hub:") :].split("@", 1)[0].strip("/") or None
    if not pretrained:
        return None
    if pretrained == "openai":
        return OPENAI_CLIP_REPOS.get(model_name.removesuffix("-quickgelu"))
    try:
        import open_clip

        hub_id = open_clip.get_pretrained_cfg(model_name, pretrained).get("hf_hub")
    except Exception:  # any failure only means "not derivable"
        logger.debug("no open_clip pretrained config for %s/%s", model_name, pretrained)
        return None
    if not isinstance(hub_id, str) or not hub_id.strip("/"):
        return None
    return hub_id.strip("/")


def markdown_text(value: Any) -> str:
    """``value`` as inline Markdown that shows exactly its text on one line: whitespace runs
    (newlines included) become one space, other control characters and bidirectional controls
    are dropped (:func:`~cotprompt.errors.is_control`; zero-width joiners are kept),
    ``&``, ``<`` and ``>`` become HTML entities, and Markdown punctuation that would start
    markup (``\\ ` * [ ] | ~ $``, ``_`` at a word's edge) is backslash-escaped. Safe in a table
    cell and in running text.
    """
    text = " ".join(str(value).split())
    text = "".join(c for c in text if not is_control(c))
    return _MARKUP.sub(lambda m: "\\" + m.group(0), html.escape(text, quote=False))


def _code(value: Any) -> str:
    """``value`` as inline code when it is a plain name (letters, digits, ``.:/@+=,()-``,
    spaces), else as :func:`markdown_text` (code spans cannot escape a backtick or ``<``)."""
    text = str(value)
    return f"`{text}`" if _CODE_SAFE.fullmatch(text) else markdown_text(text)


def _metric_rows(metrics: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    rows = []
    for split, values in metrics.items():
        if not isinstance(values, Mapping):
            continue
        for metric, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append((str(split), str(metric), float(value)))
    return rows


def _training_rows(training: Mapping[str, Any]) -> list[str]:
    labels = {"num_images": "images", "num_classes": "classes", "epochs": "epochs", "seed": "seed"}
    lines = ["| | |", "| --- | --- |"]
    for key, value in training.items():
        lines.append(f"| {markdown_text(labels.get(key, key))} | {_cell(value)} |")
    return lines


def _dataset_of(config: Mapping[str, Any]) -> str | None:
    training = config.get("training_data")
    name = training.get("dataset") if isinstance(training, Mapping) else None
    name = name or (config.get("task") or {}).get("dataset")
    return str(name) if name else None


def _value(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v) for v in value) or "-"
    return "-" if value is None else str(value)


def _cell(value: Any) -> str:
    return markdown_text(_value(value))


def _hyperparameter_rows(training: Mapping[str, Any]) -> list[str]:
    lines = ["| option | value |", "| --- | --- |"]
    for key, value in training.items():
        if key in _RUN_OPTIONS or isinstance(value, Mapping):
            continue
        lines.append(f"| {markdown_text(key)} | {_cell(value)} |")
    return lines


def _history_rows(history: Sequence[Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    for record in history:
        columns += [k for k in record if k not in columns and k not in _HISTORY_SKIPPED]
    lines = ["| " + " | ".join(markdown_text(c) for c in columns) + " |",
             "|" + " --- |" * len(columns)]
    for record in history:
        lines.append("| " + " | ".join(_cell(record.get(c)) for c in columns) + " |")
    return lines


def _versions(config: Mapping[str, Any], versions: Mapping[str, str]) -> dict[str, str]:
    from cotprompt._version import __version__

    return {"cotprompt": str(config.get("library_version") or __version__), **versions}


def _generated_body(
    config: Mapping[str, Any], repo_id: str | None, revision: str | None, base_model: str | None,
    options: CardOptions | None = None,
) -> str:
    options = options or CardOptions()
    tuner = config["tuner"]["name"]
    backbone = config["backbone"]["config"]
    labels = config["chain"]["labels"]
    steps = config["chain"]["steps"]
    dataset = _dataset_of(config)
    shown = ", ".join(markdown_text(label) for label in labels[:_MAX_LISTED_LABELS])
    if len(labels) > _MAX_LISTED_LABELS:
        shown += f", ... ({len(labels)} in all)"
    base = ""
    if base_model:
        base = ", base model " + (
            f"[{base_model}](https://huggingface.co/{base_model})"
            if _REPO_ID.fullmatch(base_model) else markdown_text(base_model))
    model_name = backbone.get("model_name")
    lines = [
        START,
        f"# cotprompt {_code(tuner)} prompts for {markdown_text(model_name)}",
        "",
        f"Learned prompts for a frozen open_clip {_code(model_name)} "
        f"(pretrained: {_code(backbone.get('pretrained'))}{base}), made with "
        "cotprompt: generator "
        f"{_code(config['generator']['name'])}, tuner {_code(tuner)}, aggregator "
        f"{_code(config['aggregator']['name'])}, {len(steps)} chain step(s): "
        + ", ".join(_code(s["name"]) for s in steps)
        + ".",
        "",
        f"**Labels ({len(labels)}):** {shown}",
        "",
    ]
    training = config.get("training_data")
    if training or dataset:
        lines += ["## Training data", ""]
        if dataset:
            lines += [f"Dataset: {_code(dataset)}.", ""]
        if isinstance(training, Mapping) and training:
            lines += [*_training_rows(training), ""]
    hyperparameters = config.get("training")
    if training and isinstance(hyperparameters, Mapping) and hyperparameters:
        lines += ["## Training hyperparameters", "", *_hyperparameter_rows(hyperparameters), ""]
    if options.history:
        lines += ["## Training results", "", *_history_rows(options.history), ""]
    rows = _metric_rows(config.get("metrics") or {})
    if rows:
        lines += ["## Evaluation", "", "| split | metric | value |", "| --- | --- | --- |"]
        lines += [f"| {markdown_text(split)} | {markdown_text(metric)} | {value:.2f} |"
                  for split, metric, value in rows]
        lines.append("")
    source = repo_id or "path/to/this/folder"
    call = json.dumps(source) + (f", revision={json.dumps(revision)}" if revision else "")
    lines += [
        "## Install",
        "",
        "cotprompt is not on PyPI yet: install it from a checkout of its repository, in a "
        "virtual environment:",
        "",
        "```console",
        "pip install .",
        "```",
        "",
        "## Use",
        "",
        "```python",
        "from cotprompt import CoTPipeline",
        "",
        f"pipeline = CoTPipeline.from_pretrained({call})",
        'print(pipeline.predict(["image.jpg"]))',
        "```",
        "",
        "The prompts are a few kilobytes of safetensors (`prompt_weights.safetensors`), described "
        "by `cotprompt_config.json`; the backbone is rebuilt from its own source (open_clip) and "
        "stays frozen. Loading validates tensor names, shapes, dtypes and the checksum, and never "
        "runs code from the repository.",
        "",
        "## Framework versions",
        "",
        *(f"- {markdown_text(name)} {markdown_text(version)}"
          for name, version in _versions(config, options.versions).items()),
        "",
        "## Citation",
        "",
        "The prompt-learning methods cotprompt implements: CoOp, CoCoOp and CoT-PT (chain of "
        "thought prompt tuning).",
        "",
        CITATIONS,
        END,
    ]
    return "\n".join(lines)


def _after_block(rest: str) -> str:
    """The text after the generated block, from ``rest`` (the card after its start marker):
    after the first end marker that follows the block's last section (``## Citation``), else
    after the first one. An end marker before that section is one a card rendered by an older
    cotprompt let in from a label or history text; one after the block's end (custom text
    quoting it) is the user's and kept."""
    last_section = rest.find("\n## Citation\n")
    end = rest.find(END, last_section) if last_section >= 0 else -1
    if end < 0:
        end = rest.find(END)
    return rest[end + len(END):]


def _card_data(
    config: Mapping[str, Any], repo_id: str | None, base_model: str | None,
    card_kwargs: Mapping[str, Any] | None = None,
) -> ModelCardData:
    card_kwargs = dict(card_kwargs or {})
    tuner = config["tuner"]["name"]
    task = config.get("task") or {}
    dataset = _dataset_of(config)
    task_tag, pipeline_tag = _TASK_TAGS.get(task.get("kind", "classification"),
                                            _TASK_TAGS["classification"])
    rows = _metric_rows(config.get("metrics") or {})
    tags = [*_BASE_TAGS, task_tag, tuner]
    tags += [t for t in card_kwargs.pop("tags", []) if t not in tags]
    datasets = card_kwargs.pop("datasets", None) or ([dataset] if dataset else None)
    license_ = card_kwargs.pop("license", None) or license_for(
        config["backbone"].get("config") or {}, base_model)
    data = ModelCardData(
        library_name="cotprompt",
        license=license_,
        tags=tags,
        pipeline_tag=pipeline_tag,
        base_model=base_model,
        base_model_relation="adapter" if base_model else None,
        datasets=datasets,
        **card_kwargs,
    )
    if rows:
        data.model_name = (repo_id or f"cotprompt-{tuner}").split("/")[-1]
        data.eval_results = [
            EvalResult(
                task_type=task_tag,
                dataset_type=str(dataset or "custom"),
                dataset_name=str(dataset or "custom"),
                dataset_split=split,
                metric_type=metric,
                metric_value=value,
            )
            for split, metric, value in rows
        ]
    return data


def _merge_data(old: CardData, new: ModelCardData,
                keep_old: Sequence[str] = ()) -> ModelCardData:
    """``new`` over ``old``; tags are added to the old ones; the keys of ``keep_old`` (values we
    only derived, not ones the caller gave) do not replace a value the old card has."""
    merged = old.to_dict()
    fresh = new.to_dict()
    for key in keep_old:
        if merged.get(key) is not None:
            fresh.pop(key, None)
    tags = list(merged.get("tags") or [])
    tags += [t for t in fresh.get("tags") or [] if t not in tags]
    merged.update({k: v for k, v in fresh.items() if v is not None})
    merged["tags"] = tags
    return ModelCardData(**merged)


def render_card(
    config: Mapping[str, Any],
    existing: str | None = None,
    repo_id: str | None = None,
    revision: str | None = None,
    options: CardOptions | None = None,
) -> str:
    """The card text for ``config``, keeping any custom text of ``existing``.

    Args:
        config: The artifact config (as written to ``cotprompt_config.json``).
        existing: The current ``README.md``, if any: its text outside the generated block and
            its metadata are kept.
        repo_id: The Hub repository the card is for (used in the loading snippet).
        revision: The branch the card is pushed to, when not ``main`` (used in the snippet).
        options: ``model_card_kwargs``, training history and versions (default: none).
    """
    options = options or CardOptions()
    base_model = base_model_for(config["backbone"].get("config") or {})
    card_kwargs = check_card_kwargs(options.card_kwargs)
    data = _card_data(config, repo_id, base_model, card_kwargs)
    body = _generated_body(config, repo_id, revision if revision != "main" else None, base_model,
                           options)
    if existing:
        old = ModelCard(existing, ignore_metadata_errors=True)
        text = old.text
        if START in text and END in text.split(START, 1)[1]:
            before, rest = text.split(START, 1)
            text = before + body + _after_block(rest)
        else:
            text = body + "\n\n" + text.lstrip()
        derived = [key for key in ("license", "datasets") if key not in card_kwargs]
        data = _merge_data(old.data, data, derived)
    else:
        text = body + "\n"
    if not text.startswith("\n"):
        text = "\n" + text
    return f"---\n{data.to_yaml()}\n---\n{text}"
