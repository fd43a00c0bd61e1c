"""The model card's Hub conventions (issue 15): base model relation, license, datasets,
hyperparameters, per-epoch results, framework versions, citations, install line and
``model_card_kwargs``."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import test_hub
import torch
from huggingface_hub import ModelCard
from test_hub import ALICE

from cotprompt import CoTPipeline
from cotprompt.artifact.model_card import END, START, CardOptions, markdown_text, render_card
from cotprompt.errors import ConfigError

CLASSES = ["cat", "dog"]
README = Path(__file__).resolve().parents[1] / "README.md"

hf_home = test_hub.hf_home  # fixtures: huggingface_hub home under tmp_path, and the Hub server
hub = test_hub.hub


@pytest.fixture
def pipeline(tiny_backbone):
    return CoTPipeline.for_method("cotpt", backbone=tiny_backbone, class_names=CLASSES)


def trained_config(pipeline, *, pretrained="openai", model_name="ViT-B-16", dataset="caltech101"):
    """The pipeline's config as if it were trained on ``dataset`` over real weights (the test
    machine has none: only the config is rendered)."""
    config = copy.deepcopy(pipeline.artifact_config())
    config["backbone"]["config"].update(model_name=model_name, pretrained=pretrained)
    config["task"]["dataset"] = dataset
    config["training_data"] = {"num_images": 32, "num_classes": 2, "epochs": 2, "seed": 1}
    return config


def test_openai_weights_give_base_model_adapter_relation_mit_license_and_dataset(pipeline):
    card = ModelCard(render_card(trained_config(pipeline)))
    assert card.data.base_model == "openai/clip-vit-base-patch16"
    assert card.data.base_model_relation == "adapter"
    assert card.data.license == "mit"
    assert card.data.datasets == ["caltech101"]


def test_unknown_base_model_omits_relation_and_license(pipeline):
    card = ModelCard(render_card(trained_config(pipeline, pretrained=None, model_name="tiny",
                                                dataset=None)))
    data = card.data.to_dict()
    for key in ("base_model", "base_model_relation", "license", "datasets"):
        assert key not in data, key


def test_hyperparameters_install_line_versions_and_citations(pipeline):
    text = render_card(trained_config(pipeline))
    hyperparameters = text.split("## Training hyperparameters", 1)[1].split("\n## ", 1)[0]
    assert f"| lr | {pipeline.training.lr:.4g} |" in hyperparameters
    assert "| optimizer | sgd |" in hyperparameters
    assert "progress" not in hyperparameters and "log_every" not in hyperparameters
    assert "Training results" not in text  # no history: prompts not trained in this process
    assert re.search(r"## Framework versions\n\n- cotprompt \d", text)
    assert "- torch" not in text
    # the install line is README's (cotprompt is not on PyPI yet)
    assert "```console\npip install .\n```" in text
    assert "pip install ." in README.read_text(encoding="utf-8")
    assert "pypi.org/project/cotprompt" not in text
    for key, title in [("zhou2022coop", "Learning to Prompt for Vision-Language Models"),
                       ("zhou2022cocoop", "Conditional Prompt Learning for Vision-Language Models"),
                       ("ge2023cotpt", "Chain of Thought Prompt Tuning in Vision Language Models")]:
        assert f"{{{key}," in text and f"{{{title}}}" in text
    assert "arXiv:2304.07919" in text and "International Journal of Computer Vision" in text


def test_untrained_pipeline_has_no_hyperparameters(pipeline):
    assert "## Training hyperparameters" not in render_card(pipeline.artifact_config())


def test_history_of_a_run_in_this_process_gives_results_and_versions(pipeline, tmp_path):
    pipeline.training_history = [
        {"epoch": 1, "loss": 1.23456, "lr": 0.002, "seconds": 1.5, "val_accuracy": 50.0},
        {"epoch": 2, "loss": 0.5, "lr": 1e-05, "seconds": 1.4, "val_accuracy": 75.0},
    ]
    text = (pipeline.save_pretrained(tmp_path / "a") / "README.md").read_text()
    results = text.split("## Training results", 1)[1].split("\n## ", 1)[0]
    assert "| epoch | loss | lr | val_accuracy |" in results
    assert "| 1 | 1.235 | 0.002 | 50 |" in results and "| 2 | 0.5 | 1e-05 | 75 |" in results
    assert "seconds" not in results
    assert f"- torch {torch.__version__}" in text and "- open_clip " in text
    loaded = CoTPipeline.from_pretrained(tmp_path / "a", device="cpu")
    assert loaded.training_history == pipeline.training_history  # saved as history.json


def test_model_card_kwargs_on_save(pipeline, tmp_path):
    folder = pipeline.save_pretrained(tmp_path / "a", model_card_kwargs={
        "license": "apache-2.0", "tags": ["pets", "cotprompt"], "datasets": "oxford_pets",
        "language": ["en"], "co2_eq_emissions": {"emissions": 1.0},
    })
    data = ModelCard((folder / "README.md").read_text()).data
    assert data.license == "apache-2.0"
    assert data.tags[:3] == ["cotprompt", "prompt-tuning", "clip"] and data.tags[-1] == "pets"
    assert data.tags.count("cotprompt") == 1
    assert data.datasets == ["oxford_pets"]
    assert data.language == ["en"] and data.co2_eq_emissions == {"emissions": 1.0}


@pytest.mark.parametrize("kwargs", [{"license": 3}, {"tags": [1]}, {"datasets": {"a": 1}},
                                    ["license"]])
def test_bad_model_card_kwargs_are_refused_before_writing(pipeline, tmp_path, kwargs):
    with pytest.raises(ConfigError, match="model_card_kwargs"):
        pipeline.save_pretrained(tmp_path / "a", model_card_kwargs=kwargs)
    assert not (tmp_path / "a").exists()


def test_user_text_and_license_kept_derived_values_do_not_replace_them(pipeline):
    config = trained_config(pipeline)
    first = render_card(config)
    user = first.replace("license: mit", "license: cc-by-4.0").replace(
        "---\n\n<!--", "---\n\nMy own intro.\n\n<!--", 1) + "\n## Notes\n\nMine.\n"
    again = render_card(config, user)
    assert ModelCard(again).data.license == "cc-by-4.0"  # the default does not replace it
    assert "My own intro." in again and "## Notes\n\nMine." in again
    assert again.count("<!-- cotprompt:generated:start -->") == 1
    given = render_card(config, user, options=CardOptions(card_kwargs={"license": "mit"}))
    assert ModelCard(given).data.license == "mit"  # an explicit option does


def test_model_card_kwargs_reach_the_card_a_push_uploads(hub, pipeline):
    pipeline.training_history = [{"epoch": 1, "loss": 0.5, "lr": 0.002, "seconds": 1.0}]
    pipeline.push_to_hub("alice/x", token=ALICE, model_card_kwargs={"license": "bsd-3-clause"})
    text = hub.file("alice/x", "README.md").data.decode()
    assert ModelCard(text).data.license == "bsd-3-clause"
    assert "## Training results" in text
    assert "license" not in ModelCard(render_card(pipeline.artifact_config())).data.to_dict()


MARKUP = "x <!-- cotprompt:generated:end --> | [l](https://evil.example/y) **b** `c`\n## Heading"


def generated_block(card: str) -> str:
    """The generated text of ``card`` (its front matter is YAML, rendered by nobody as text)."""
    text = ModelCard(card).text
    assert text.count(START) == text.count(END) == 1
    return text.split(START, 1)[1].split(END, 1)[0]


def test_text_from_a_loaded_config_shows_as_text_never_as_markup(pipeline):
    """Labels, names, table keys and values, metric names and versions come from a file that
    may be anyone's: they reach the card escaped (review R1, finding 1)."""
    config = trained_config(pipeline, model_name="hf-hub:org/x](https://evil.example/z)",
                            dataset=MARKUP)
    config["chain"]["labels"] = ["cat", MARKUP]
    config["training_data"] = {"num_images": 32, MARKUP: MARKUP}
    config["metrics"] = {MARKUP: {MARKUP: 50.0}, "test": {"accuracy": 75.0}}
    config["library_version"] = MARKUP
    config["tuner"]["name"] = "coop`<b>"
    card = render_card(config)
    body = generated_block(card)
    assert "<" not in body and ">" not in body  # no HTML, no second end marker
    assert not re.search(r"(?<!\\)\]\(", body)  # no link: `](` only escaped
    assert "\n## Heading" not in body and "**b**" not in body
    assert f"**Labels (2):** cat, {markdown_text(MARKUP)}" in body
    for section in ("## Training data", "## Evaluation"):
        table = [line for line in body.split(section, 1)[1].split("\n## ", 1)[0].splitlines()
                 if line.startswith("|")]
        widths = {len(re.split(r"(?<!\\)\|", line)) for line in table}
        assert len(widths) == 1, table  # every row has the header's cells
    again = render_card(config, existing=card + "\nMy own text.\n")
    assert generated_block(again) == body and again.endswith("My own text.\n")


@pytest.mark.parametrize(("text", "shown"), [
    ("val_accuracy", "val_accuracy"), ("_em_", "\\_em\\_"), ("a|b", "a\\|b"),
    ("<!-- c -->", "&lt;!-- c --&gt;"), ("[l](u)", "\\[l\\](u)"), ("a\n\n# b", "a # b"),
    ("R&D", "R&amp;D"), ("$x$", "\\$x\\$"), ("a\u202eb", "ab"), ("5*3~", "5\\*3\\~"),
    # bidirectional controls and escape sequences go; the joiners of scripts and emoji stay
    ("a\u2067b\u200fc\x1bd\u061ce", "abcde"),
    ("\u0645\u06cc\u200c\u062e", "\u0645\u06cc\u200c\u062e"),
    ("\U0001F469\u200d\U0001F4BB", "\U0001F469\u200d\U0001F4BB"),
])
def test_markdown_text_escapes_what_would_be_markup(text, shown):
    assert markdown_text(text) == shown


def test_custom_text_quoting_the_end_marker_is_kept(pipeline):
    """Custom text after the generated block may quote the end marker (explaining the card's
    layout): the block ends at its own marker, not at the last one (review R4, finding 2)."""
    config = trained_config(pipeline)
    card = render_card(config)
    custom = (f"\n## Notes\n\nKeep this.\n\nEverything between `{START}` and `{END}` is "
              "regenerated.\n\nAnd this.\n")
    again = render_card(config, existing=card + custom)
    assert again == card + custom
    assert render_card(config, existing=again) == again


def test_an_end_marker_an_older_card_let_into_its_block_is_repaired(pipeline):
    """A card rendered before labels were escaped may hold an end marker inside its generated
    block (from a label): the block is still replaced whole, up to its last section's end."""
    config = trained_config(pipeline)
    card = render_card(config)
    injected = card.replace("## Install", f"x {END} y\n\n## Install", 1)
    assert injected != card
    assert render_card(config, existing=injected + "\nMine.\n") == card + "\nMine.\n"
