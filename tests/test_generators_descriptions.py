"""Generator ``descriptions`` on the shared CuPL and classification-by-description files."""

from __future__ import annotations

import collections
import json
import logging
from pathlib import Path

import pytest

from cotprompt.errors import ConfigError
from cotprompt.generators.descriptions import (
    DescriptionsConfig,
    DescriptionsGenerator,
    DescriptionStep,
    descriptor_clause,
    load_descriptions,
    looks_like_sentences,
)
from cotprompt.generators.postprocess import normalise_name
from cotprompt.plugins.registry import get_registry
from cotprompt.types import Task


@pytest.fixture(scope="module")
def prompts(shared_data: Path) -> Path:
    folder = shared_data / "prompts"
    if not folder.is_dir():
        pytest.skip(f"shared description files not found at {folder}")
    return folder


@pytest.fixture(scope="module")
def imagenet_labels(shared_data: Path) -> list[str]:
    """The 1000 ImageNet class names of classes.tsv, in index order; the two names that occur
    twice ("crane", "maillot") get their WordNet id so that labels are unique."""
    rows = [line.split("\t") for line in
            (shared_data / "imagenet-samples" / "classes.tsv").read_text().splitlines() if line]
    counts = collections.Counter(name for _, name in rows)
    return [f"{name} ({wnid})" if counts[name] > 1 else name for wnid, name in rows]


def generator(**options: object) -> DescriptionsGenerator:
    return DescriptionsGenerator(DescriptionsConfig.model_validate(options))


def test_every_shared_file_loads_and_maps_onto_its_own_classes(prompts: Path, tiny_backbone,
                                                               caplog) -> None:
    files = sorted(prompts.glob("*.json"))
    assert {f.name.split("_")[0] for f in files} == {"cupl", "descriptors"} and len(files) == 15
    for path in files:
        data = load_descriptions(path)
        assert looks_like_sentences(data) == path.name.startswith("cupl_"), path.name
        task = Task.classification(list(data))
        empty = {normalise_name(k) for k, v in data.items() if not v}
        if empty:  # a few descriptor files have classes with an empty list: reported, not dropped
            with pytest.raises(ConfigError, match="is empty"):
                generator(files=[str(path)]).generate(task)
        # CLIP's tokenizer takes ~0.2 ms a text: measure exactly on two files, estimate elsewhere.
        exact = path.name in ("cupl_cifar10.json", "descriptors_pets.json")
        gen = generator(files=[str(path)], on_missing="fallback")
        with caplog.at_level(logging.WARNING):
            chain = gen.generate(task, tiny_backbone if exact else None)
        assert chain.num_labels == len(data) and chain.num_steps == 2
        assert {normalise_name(label) for label, _ in gen.stats.missing} == empty
        kind = "description" if path.name.startswith("cupl_") else "descriptor"
        assert [s.name for s in chain.steps] == ["class", kind]
        budget = 77 - 2 - 16
        for c, (label, texts) in enumerate(zip(chain.labels, chain.steps[1].texts, strict=True)):
            assert texts
            if exact or c % 10 == 0:
                assert all(tiny_backbone.count_tokens(t) <= budget for t in texts)
            if (label, kind) in gen.stats.fallbacks:
                assert texts == (f"{label}.",)
            elif kind == "descriptor":
                assert all(t.startswith(f"{label}, which ") for t in texts)
            else:
                assert set(texts) <= set(data[list(data)[c]])


def test_cupl_sentences_are_whole_texts_and_descriptors_become_clauses(prompts: Path) -> None:
    cupl_path, desc_path = prompts / "cupl_cifar10.json", prompts / "descriptors_imagenet.json"
    cupl, desc = load_descriptions(cupl_path), load_descriptions(desc_path)
    task = Task.classification(["airplane", "tench"])  # each is in one file only
    files = [str(cupl_path), str(desc_path)]
    with pytest.raises(ConfigError, match=r"2 class\(es\)") as err:
        generator(files=files).generate(task)
    assert "'tench': not in" in str(err.value) and "'airplane': not in" in str(err.value)
    gen = generator(files=files, on_missing="fallback")
    chain = gen.generate(task)
    assert [s.name for s in chain.steps] == ["class", "description", "descriptor"]
    sentences = chain.steps[1].texts[0]
    assert len(sentences) > 10
    assert list(sentences) == [t for t in dict.fromkeys(cupl["airplane"]) if t in sentences]
    assert chain.steps[2].texts[1] == tuple(
        f"tench, which {descriptor_clause(d)}." for d in desc["tench"])
    assert chain.steps[1].texts[1] == ("tench.",) and chain.steps[2].texts[0] == ("airplane.",)
    assert sorted(gen.stats.fallbacks) == [("airplane", "descriptor"), ("tench", "description")]


def test_missing_class_is_reported_with_close_matches(prompts: Path) -> None:
    path = str(prompts / "cupl_cifar10.json")
    task = Task.classification(["airplan", "automobile", "Bird", "cat"])
    with pytest.raises(ConfigError) as err:
        generator(files=[path]).generate(task)
    message = str(err.value)
    assert "1 class(es)" in message and "'airplan'" in message
    assert "did you mean 'airplane'" in message and "aliases" in message
    # an alias fixes it; names are matched case-insensitively ("Bird")
    chain = generator(files=[path], aliases={"airplan": "airplane"}).generate(task)
    cupl = load_descriptions(path)
    assert chain.steps[1].texts[0] and set(chain.steps[1].texts[0]) <= set(cupl["airplane"])
    assert chain.steps[1].texts[2] and set(chain.steps[1].texts[2]) <= set(cupl["bird"])


def test_fallback_warns_and_never_drops(prompts: Path, caplog) -> None:
    path = str(prompts / "cupl_cifar10.json")
    task = Task.classification(["airplane", "unicorn"])
    gen = generator(files=[path], on_missing="fallback", fallback_template="a photo of {class}.")
    with caplog.at_level(logging.WARNING):
        chain = gen.generate(task)
    assert chain.steps[1].texts[1] == ("a photo of unicorn.",)
    assert gen.stats.missing == [("unicorn", "description")]
    assert "unicorn" in caplog.text


def test_imagenet_descriptors_map_onto_all_1000_classes(prompts: Path, imagenet_labels,
                                                        tiny_backbone) -> None:
    path = str(prompts / "descriptors_imagenet.json")
    data = load_descriptions(path)
    task = Task.classification(imagenet_labels)
    assert task.num_labels == 1000
    # By name, 711 names agree; the others (OpenAI's cleaned names) are reported with hints.
    hint = r"'hammerhead': not in .*did you mean 'hammerhead shark'"
    with pytest.raises(ConfigError, match=hint):
        generator(files=[path]).generate(task)
    # The file lists the same 1000 classes in index order: match by position.
    gen = generator(files=[path], match="order")
    chain = gen.generate(task, tiny_backbone)
    assert chain.num_labels == 1000 and not gen.stats.fallbacks and not gen.stats.missing
    keys = list(data)
    positional = dict(gen.stats.matched_by_position)
    assert positional["hammerhead"] == "hammerhead shark" and len(positional) == 290
    for i, (label, texts) in enumerate(zip(chain.labels, chain.steps[1].texts, strict=True)):
        clauses = {f"{label}, which {descriptor_clause(d)}." for d in data[keys[i]]}
        assert texts and set(texts) <= clauses, label
    # "Cardigan" (the corgi, 264) and "cardigan" (the sweater, 474) differ only in case:
    # each gets its own entry, never the other's.
    assert chain.labels[264] == "Cardigan" and chain.labels[474] == "cardigan"
    assert chain.steps[1].texts[264] != chain.steps[1].texts[474]
    assert "dog" in " ".join(chain.steps[1].texts[264])


def test_order_mode_refuses_a_reordered_file(prompts: Path) -> None:
    path = str(prompts / "cupl_cifar10.json")
    names = list(load_descriptions(path))
    with pytest.raises(ConfigError, match="another order"):
        generator(files=[path], match="order").generate(Task.classification(names[::-1]))
    with pytest.raises(ConfigError, match="one entry per class"):
        generator(files=[path], match="order").generate(Task.classification(names[:3]))


def test_explicit_steps_ensemble_and_zero_shot(prompts: Path) -> None:
    cupl, desc = str(prompts / "cupl_pets.json"), str(prompts / "descriptors_pets.json")
    steps = [
        DescriptionStep(name="class", template="{class}."),
        DescriptionStep(name="has", template="{class}, which has {text}.", source=desc,
                        max_texts=3),
        DescriptionStep(name="sentence", template="{text}", source=cupl),
    ]
    gen = generator(steps=steps, zero_shot_from="descriptions")
    task = Task.classification(["Abyssinian", "great pyrenees"])
    chain = gen.generate(task)
    assert [len(t) for t in chain.steps[1].texts] == [3, 3]
    assert chain.steps[1].texts[0][0].startswith("Abyssinian, which has ")
    assert chain.zero_shot == chain.steps[2].texts
    assert len(chain.steps[2].texts[1]) > 3


def test_descriptor_clause() -> None:
    assert descriptor_clause("a seabird") == "is a seabird"
    assert descriptor_clause("has a long neck.") == "has a long neck"
    assert descriptor_clause("black and white") == "has black and white"
    assert descriptor_clause("used for cutting") == "is used for cutting"
    assert descriptor_clause("typically made of wool") == "is typically made of wool"
    assert descriptor_clause("often found near water") == "is often found near water"
    assert descriptor_clause("can fly") == "can fly"


def test_config_and_file_errors(tmp_path: Path) -> None:
    registry = get_registry()
    with pytest.raises(ConfigError, match="files"):
        registry.create("generator", "descriptions")
    with pytest.raises(ConfigError, match="not both"):
        registry.create("generator", "descriptions",
                        {"files": ["a.json"], "steps": [{"name": "class"}]})
    with pytest.raises(ValueError, match="text"):
        DescriptionStep(name="x", template="{class}.", source="a.json")
    task = Task.classification(["cat"])
    with pytest.raises(ConfigError, match="not found"):
        generator(files=[str(tmp_path / "missing.json")]).generate(task)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cat": [1, 2]}))
    with pytest.raises(ConfigError, match="list of strings"):
        generator(files=[str(bad)]).generate(task)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        generator(files=[str(bad)]).generate(task)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"Cat": "a small feline", "dog": []}))
    chain = generator(files=[str(good)]).generate(task)
    assert chain.steps[1].texts == (("cat, which is a small feline.",),)
