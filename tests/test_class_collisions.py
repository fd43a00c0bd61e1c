"""Classes the text encoder cannot tell apart are refused when they are bound (issue 12, item 6).

``Cardigan`` (the dog) and ``cardigan`` (the sweater) are both ImageNet classes; CLIP's tokenizer
lower-cases, so every prompt of one is the other's and one class is never predicted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cotprompt import CoTPipeline
from cotprompt.errors import DataError
from cotprompt.tasks import for_task
from cotprompt.tasks.retrieval import similarity
from cotprompt.tuners.prompt_tokens import check_distinct_labels, labels_may_coincide
from cotprompt.types import PromptChain, PromptStep, Task


def _pipeline(backbone, method: str, **tuner_config) -> CoTPipeline:
    if method in ("vpt", "multimodal"):
        return CoTPipeline.create(backbone=backbone, tuner=method, tuner_config=tuner_config)
    return CoTPipeline.for_method(method, backbone=backbone, tuner_config=tuner_config or None)


@pytest.mark.parametrize("method", ["coop", "cocoop", "cotpt", "vpt", "multimodal"])
def test_cardigan_and_cardigan_are_refused(tiny_backbone, method):
    pipeline = _pipeline(tiny_backbone, method)
    with pytest.raises(DataError) as caught:
        pipeline.set_classes(["Cardigan", "cat", "cardigan"])
    message = str(caught.value)
    assert "\n" not in message
    assert "'Cardigan' and 'cardigan'" in message and "'cat'" not in message
    assert "cannot tell apart" in message and "lower-cases" in message
    assert "Cardigan Welsh Corgi" in message  # how CLIP's ImageNet list disambiguates
    # renamed as CLIP's list does, the classes bind
    pipeline.set_classes(["Cardigan Welsh Corgi", "cat", "cardigan"])
    assert pipeline.class_names == ["Cardigan Welsh Corgi", "cat", "cardigan"]


def test_white_space_and_case_variants_are_refused(tiny_backbone):
    pipeline = _pipeline(tiny_backbone, "coop")
    with pytest.raises(DataError, match=r"'Golden  Retriever' and 'golden retriever'"):
        pipeline.set_classes(["Golden  Retriever", "golden retriever"])


def _chain(labels, steps, zero_shot) -> PromptChain:
    return PromptChain(
        labels=tuple(labels),
        steps=tuple(PromptStep(name=f"s{k}", texts=tuple((t,) for t in texts))
                    for k, texts in enumerate(steps)),
        zero_shot=tuple((t,) for t in zero_shot),
    )


def test_step_texts_and_zero_shot_sentences_are_each_checked(tiny_backbone):
    labels = ["Cardigan", "cardigan"]
    task = Task.classification(labels)
    # steps differ (say, from descriptors), zero-shot sentences do not: zero-shot never tells
    differing_steps = _chain(labels, [["a corgi.", "a sweater."]],
                             ["a photo of a Cardigan.", "a photo of a cardigan."])
    pipeline = _pipeline(tiny_backbone, "coop")
    with pytest.raises(DataError, match="zero-shot sentences"):
        pipeline.set_classes(task, differing_steps)
    # class-specific context tells labels apart by itself: only zero-shot sentences must differ
    same_steps = _chain(labels, [["Cardigan.", "cardigan."]], ["a corgi.", "a sweater."])
    with pytest.raises(DataError, match="prompt step texts"):
        _pipeline(tiny_backbone, "coop").set_classes(task, same_steps)
    specific = _pipeline(tiny_backbone, "coop", class_specific=True)
    specific.set_classes(task, same_steps)
    with pytest.raises(DataError, match="zero-shot sentences"):
        specific.set_classes(task, differing_steps)
    # one differing step is enough to tell two labels apart
    two_steps = _chain(labels, [["Cardigan.", "cardigan."], ["a dog.", "a sweater."]],
                       ["a corgi.", "a sweater."])
    _pipeline(tiny_backbone, "cotpt").set_classes(task, two_steps)


def test_free_text_labels_may_coincide(tiny_backbone):
    chain = _chain(["A dog.", "a dog."], [["A dog.", "a dog."]], ["A dog.", "a dog."])
    with pytest.raises(DataError):
        check_distinct_labels(tiny_backbone, chain)
    with labels_may_coincide():
        _pipeline(tiny_backbone, "coop").set_classes(Task.classification(chain.labels), chain)
    # retrieval: two captions that differ only in case are two gallery entries
    pipeline = for_task("retrieval", "cocoop", backbone=tiny_backbone)
    logits = similarity(pipeline, [_image()], ["A dog.", "a dog.", "a cat."])
    assert logits.shape == (1, 3) and float(logits[0, 0]) == pytest.approx(float(logits[0, 1]))


def _image():
    from PIL import Image

    return Image.new("RGB", (32, 32), (120, 30, 200))


def _imagenet_classes(shared_data: Path) -> list[str]:
    path = shared_data / "imagenet-samples" / "classes.tsv"
    if not path.is_file():
        pytest.skip(f"ImageNet class list not found at {path}")
    names = [line.split("\t")[1].strip() for line in path.read_text().splitlines() if line]
    assert len(names) == 1000
    return names


def test_the_imagenet_class_list_is_refused_naming_cardigan(tiny_backbone, shared_data):
    names = _imagenet_classes(shared_data)
    pipeline = _pipeline(tiny_backbone, "coop")
    # exact duplicates ("crane" the bird and the machine, "maillot" twice) are refused by name
    with pytest.raises(DataError, match="duplicate label 'crane'"):
        pipeline.set_classes(names)
    # made unique as strings, one pair remains that only the tokenizer shows
    unique = {"crane": ["crane", "construction crane"], "maillot": ["maillot", "tank suit"]}
    renamed = [unique[n].pop(0) if n in unique else n for n in names]
    with pytest.raises(DataError) as caught:
        pipeline.set_classes(renamed)
    assert str(caught.value).startswith(
        "1 group(s) of classes the text encoder cannot tell apart: 'Cardigan' and 'cardigan'."
    )
    # CLIP's name for the dog resolves it
    renamed[renamed.index("Cardigan")] = "Cardigan Welsh Corgi"
    assert len(pipeline.set_classes(renamed).labels) == 1000
