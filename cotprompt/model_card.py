"""The ``README.md`` model card of a saved pipeline, built with huggingface_hub's card tools.

The generated part sits between two HTML comments; when a card already exists (text a user wrote
around it on the Hub or locally), only that part and the metadata header are replaced.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

START = "<!-- cotprompt:generated:start -->"
END = "<!-- cotprompt:generated:end -->"
_MAX_LISTED_LABELS = 50


def _generated_body(config: Mapping[str, Any], repo_id: str | None) -> str:
    tuner = config["tuner"]["name"]
    backbone = config["backbone"]["config"]
    labels = config["chain"]["labels"]
    steps = config["chain"]["steps"]
    shown = ", ".join(labels[:_MAX_LISTED_LABELS])
    if len(labels) > _MAX_LISTED_LABELS:
        shown += f", ... ({len(labels)} in all)"
    lines = [
        START,
        f"# cotprompt `{tuner}` prompts for {backbone.get('model_name')}",
        "",
        f"Learned prompts for a frozen `{backbone.get('model_name')}` "
        f"(pretrained: `{backbone.get('pretrained')}`) made with "
        "[cotprompt](https://pypi.org/project/cotprompt/): generator "
        f"`{config['generator']['name']}`, tuner `{tuner}`, aggregator "
        f"`{config['aggregator']['name']}`, {len(steps)} chain step(s): "
        + ", ".join(f"`{s['name']}`" for s in steps) + ".",
        "",
        f"**Labels ({len(labels)}):** {shown}",
        "",
    ]
    training = config.get("training_data")
    if training:
        lines += ["## Training data", "", f"```json\n{json.dumps(training, indent=1)}\n```", ""]
    metrics = config.get("metrics") or {}
    if metrics:
        lines += ["## Evaluation", "", "| split | metric | value |", "| --- | --- | --- |"]
        for split, values in metrics.items():
            for metric, value in values.items():
                if isinstance(value, (int, float)):
                    lines.append(f"| {split} | {metric} | {value:.2f} |")
        lines.append("")
    source = repo_id or "path/to/this/folder"
    lines += [
        "## Use",
        "",
        "```python",
        "from cotprompt import CoTPipeline",
        "",
        f'pipeline = CoTPipeline.from_pretrained("{source}")',
        'print(pipeline.predict(["image.jpg"]))',
        "```",
        "",
        "The prompts are a few kilobytes of safetensors; the backbone is loaded from its own "
        "source (open_clip) and stays frozen.",
        END,
    ]
    return "\n".join(lines)


def render_card(
    config: Mapping[str, Any], existing: str | None = None, repo_id: str | None = None
) -> str:
    """The card text for ``config``, keeping any custom text of ``existing``.

    Args:
        config: The artifact config (as written to ``cotprompt_config.json``).
        existing: The current ``README.md``, if any.
        repo_id: The Hub repository the card is for (used in the loading snippet).
    """
    tuner = config["tuner"]["name"]
    metrics = config.get("metrics") or {}
    data = ModelCardData(
        library_name="cotprompt",
        tags=["cotprompt", "prompt-tuning", "clip", tuner, "image-classification"],
        pipeline_tag="zero-shot-image-classification",
    )
    if metrics:
        data.cotprompt_metrics = metrics
    body = _generated_body(config, repo_id)
    if existing:
        old = ModelCard(existing)
        text = old.text
        if START in text and END in text:
            before, rest = text.split(START, 1)
            after = rest.split(END, 1)[1]
            text = before + body + after
        else:
            text = body + "\n\n" + text.lstrip()
        merged = old.data.to_dict()
        merged.update({k: v for k, v in data.to_dict().items() if v is not None})
        data = ModelCardData(**merged)
    else:
        text = body + "\n"
    return f"---\n{data.to_yaml()}\n---\n{text if text.startswith(chr(10)) else chr(10) + text}"
