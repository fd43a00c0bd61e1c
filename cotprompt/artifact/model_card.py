"""The ``README.md`` model card of a saved pipeline, built with huggingface_hub's card tools.

The metadata header (``library_name: cotprompt``, the base model when it can be derived, tags,
the evaluation results as a ``model-index``) is written with :class:`huggingface_hub.ModelCardData`.
The generated text sits between two HTML comments; when a card already exists (text a user wrote
around it on the Hub or locally), only that part is replaced and the existing metadata is kept,
ours merged into it (tags are added to the user's, not substituted for them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

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
        lines.append(f"| {labels.get(key, key)} | {value} |")
    return lines


def _generated_body(
    config: Mapping[str, Any], repo_id: str | None, revision: str | None, base_model: str | None
) -> str:
    tuner = config["tuner"]["name"]
    backbone = config["backbone"]["config"]
    labels = config["chain"]["labels"]
    steps = config["chain"]["steps"]
    dataset = (config.get("task") or {}).get("dataset")
    shown = ", ".join(labels[:_MAX_LISTED_LABELS])
    if len(labels) > _MAX_LISTED_LABELS:
        shown += f", ... ({len(labels)} in all)"
    base = f", base model [{base_model}](https://huggingface.co/{base_model})" if base_model else ""
    lines = [
        START,
        f"# cotprompt `{tuner}` prompts for {backbone.get('model_name')}",
        "",
        f"Learned prompts for a frozen open_clip `{backbone.get('model_name')}` "
        f"(pretrained: `{backbone.get('pretrained')}`{base}), made with "
        "[cotprompt](https://pypi.org/project/cotprompt/): generator "
        f"`{config['generator']['name']}`, tuner `{tuner}`, aggregator "
        f"`{config['aggregator']['name']}`, {len(steps)} chain step(s): "
        + ", ".join(f"`{s['name']}`" for s in steps)
        + ".",
        "",
        f"**Labels ({len(labels)}):** {shown}",
        "",
    ]
    training = config.get("training_data")
    if training or dataset:
        lines += ["## Training data", ""]
        if dataset:
            lines += [f"Dataset: `{dataset}`.", ""]
        if isinstance(training, Mapping) and training:
            lines += [*_training_rows(training), ""]
    rows = _metric_rows(config.get("metrics") or {})
    if rows:
        lines += ["## Evaluation", "", "| split | metric | value |", "| --- | --- | --- |"]
        lines += [f"| {split} | {metric} | {value:.2f} |" for split, metric, value in rows]
        lines.append("")
    source = repo_id or "path/to/this/folder"
    call = f'"{source}"' + (f', revision="{revision}"' if revision else "")
    lines += [
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
        END,
    ]
    return "\n".join(lines)


def _card_data(
    config: Mapping[str, Any], repo_id: str | None, base_model: str | None
) -> ModelCardData:
    tuner = config["tuner"]["name"]
    task = config.get("task") or {}
    dataset = task.get("dataset")
    task_tag, pipeline_tag = _TASK_TAGS.get(task.get("kind", "classification"),
                                            _TASK_TAGS["classification"])
    rows = _metric_rows(config.get("metrics") or {})
    data = ModelCardData(
        library_name="cotprompt",
        tags=[*_BASE_TAGS, task_tag, tuner],
        pipeline_tag=pipeline_tag,
        base_model=base_model,
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


def _merge_data(old: ModelCardData, new: ModelCardData) -> ModelCardData:
    merged = old.to_dict()
    fresh = new.to_dict()
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
) -> str:
    """The card text for ``config``, keeping any custom text of ``existing``.

    Args:
        config: The artifact config (as written to ``cotprompt_config.json``).
        existing: The current ``README.md``, if any: its text outside the generated block and
            its metadata are kept.
        repo_id: The Hub repository the card is for (used in the loading snippet).
        revision: The branch the card is pushed to, when not ``main`` (used in the snippet).
    """
    base_model = base_model_for(config["backbone"].get("config") or {})
    data = _card_data(config, repo_id, base_model)
    body = _generated_body(config, repo_id, revision if revision != "main" else None, base_model)
    if existing:
        old = ModelCard(existing, ignore_metadata_errors=True)
        text = old.text
        if START in text and END in text:
            before, rest = text.split(START, 1)
            after = rest.split(END, 1)[1]
            text = before + body + after
        else:
            text = body + "\n\n" + text.lstrip()
        data = _merge_data(old.data, data)
    else:
        text = body + "\n"
    if not text.startswith("\n"):
        text = "\n" + text
    return f"---\n{data.to_yaml()}\n---\n{text}"
