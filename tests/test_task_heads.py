"""Task heads (cotprompt.pipeline.heads): how fit/evaluate find and check them, what a custom head
needs, and the one-line errors for heads and data that do not match."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import torch
from golden.cases import BACKBONE, CLASSES, classification_set, retrieval_set, vqa_set

from cotprompt import CoTPipeline
from cotprompt.backbones import TINY_MODEL, OpenCLIPBackbone, OpenCLIPBackboneConfig
from cotprompt.data import ImageClassificationDataset
from cotprompt.errors import ArtifactError, ConfigError, DataError
from cotprompt.evaluation.metrics import EvaluationResult
from cotprompt.pipeline import heads
from cotprompt.tasks import (
    ClassificationHead,
    RetrievalHead,
    VQAHead,
    evaluate_retrieval,
    evaluate_vqa,
    for_task,
)
from cotprompt.types import Task

TRAINING = {"epochs": 1, "batch_size": 4, "progress": False, "augment": False}


@pytest.fixture
def registry():
    """The registered heads, restored after the test."""
    saved = list(heads._HEADS)
    yield heads
    heads._HEADS[:] = saved


@pytest.fixture(scope="module")
def backbone() -> OpenCLIPBackbone:
    return OpenCLIPBackbone(OpenCLIPBackboneConfig(**BACKBONE))


def classifier(backbone: OpenCLIPBackbone) -> CoTPipeline:
    return CoTPipeline.create(backbone=backbone, tuner="coop", tuner_config={"n_ctx": 2},
                              training=TRAINING, device="cpu")


def retriever(backbone: OpenCLIPBackbone) -> CoTPipeline:
    return for_task("retrieval", "coop", backbone=backbone, training=TRAINING, device="cpu")


def test_the_built_in_heads_are_found_by_dataset_type():
    assert isinstance(heads.task_head_for(classification_set()), ClassificationHead)
    assert isinstance(heads.task_head_for(retrieval_set()), RetrievalHead)
    assert isinstance(heads.task_head_for(vqa_set()), VQAHead)
    with pytest.raises(DataError, match=r"no task accepts a list.*'classification'"):
        heads.task_head_for([1, 2])


@pytest.mark.parametrize("head", [RetrievalHead(), VQAHead()], ids=lambda h: h.kind)
def test_a_head_of_another_task_is_refused_before_any_work(backbone, head):
    pipeline = classifier(backbone)
    with pytest.raises(DataError, match=f"the {head.kind} task does not take an "
                                        "ImageClassificationDataset as training data"):
        pipeline.fit(classification_set(), task_head=head)
    assert pipeline.task is None  # nothing was bound
    with pytest.raises(DataError, match="as evaluation data"):
        pipeline.evaluate(classification_set(), task_head=head)


@pytest.mark.parametrize("bad", [ClassificationHead, "retrieval", object()],
                         ids=["class", "str", "object"])
def test_what_is_not_a_head_instance_is_refused(backbone, registry, bad):
    with pytest.raises(ConfigError, match="task head"):
        classifier(backbone).fit(classification_set(), task_head=bad)
    before = registry.task_heads()
    with pytest.raises(ConfigError, match="task head"):
        registry.register_task_head(bad)
    assert registry.task_heads() == before


def test_evaluating_another_tasks_data_leaves_the_pipeline_bound_as_it_was(backbone):
    pipeline = retriever(backbone)
    pipeline.fit(classification_set())  # retrained for classification
    task = pipeline.task
    with pytest.raises(ConfigError, match="bound to the classification task"):
        pipeline.evaluate(retrieval_set())
    assert pipeline.task is task
    assert len(pipeline.predict(torch.zeros(2, 3, 32, 32))) == 2


def test_a_refit_drops_the_metrics_of_the_prompts_it_replaced(backbone, caplog):
    pipeline = classifier(backbone)
    pipeline.fit(classification_set())
    result = pipeline.evaluate(classification_set(), split="test")
    assert pipeline.metrics == {"test": result.metrics()}
    with caplog.at_level("INFO", logger="cotprompt.pipeline"):
        pipeline.fit(classification_set(), training={"seed": 9})
    assert pipeline.metrics == {}
    assert "dropping the metrics recorded before this training (test)" in caplog.text


@pytest.mark.parametrize("split", ["", "  ", "a|b", "two\nlines", 1])
def test_split_names_the_model_card_cannot_show_are_refused(backbone, split):
    pipeline = classifier(backbone)
    with pytest.raises(ConfigError, match="split must be"):
        pipeline.evaluate(classification_set(), split=split)
    assert pipeline.metrics == {}


@pytest.mark.parametrize("num_workers", [-1, 1.5, True])
def test_evaluate_checks_its_number_of_workers(backbone, num_workers):
    for pipeline, data in ((classifier(backbone), classification_set()),
                           (retriever(backbone), retrieval_set())):
        with pytest.raises(ConfigError, match="num_workers must be an integer >= 0"):
            pipeline.evaluate(data, num_workers=num_workers)


@pytest.mark.parametrize("batch_size", [0, -1, "4"])
def test_classification_evaluate_checks_its_batch_size(backbone, batch_size):
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1"):
        classifier(backbone).evaluate(classification_set(), batch_size=batch_size)


def test_scoring_options_are_checked_with_one_line_errors(backbone):
    with pytest.raises(ConfigError, match=r"kz: unknown option \(valid options: caption_chunk"):
        evaluate_retrieval(retriever(backbone), retrieval_set(), config={"kz": [1]})
    with pytest.raises(ConfigError, match="ks: "):
        RetrievalHead(eval_config={"ks": []})
    with pytest.raises(ConfigError, match="leave_one_oot: unknown option"):
        evaluate_vqa(for_task("vqa", backbone=backbone), vqa_set(),
                     config={"leave_one_oot": True})


@pytest.mark.parametrize(("task", "method", "message"), [
    ("VQA", "coop", "did you mean 'vqa'"),
    ("retreival", "coop", "did you mean 'retrieval'"),
    ("vqa", "coopp", "did you mean 'coop'"),
    (None, "coop", "unknown task None"),
    ("classification", "cocoop", r"CoTPipeline.for_method\('cocoop'"),
])
def test_for_task_names_the_closest_choice(task, method, message):
    with pytest.raises(ConfigError, match=message):
        for_task(task, method, model_name=TINY_MODEL, pretrained=None)


def test_a_backbone_that_is_not_one_or_differs_is_named(backbone, tmp_path):
    pipeline = classifier(backbone)
    pipeline.set_classes(CLASSES)
    folder = pipeline.save_pretrained(tmp_path / "artifact")
    with pytest.raises(ConfigError, match=r"backbone must be a built backbone.*not str"):
        CoTPipeline.from_pretrained(folder, backbone="ViT-B-16")
    other = OpenCLIPBackbone(OpenCLIPBackboneConfig(**{**BACKBONE, "init_seed": 7}))
    with pytest.raises(ArtifactError, match=r"init_seed 7 vs 5"):
        CoTPipeline.from_pretrained(folder, backbone=other)


class Pairs:
    """A user's own dataset type: image pairs labelled same (1) or different (0) colour."""

    def __init__(self, images: ImageClassificationDataset) -> None:
        self.images = images


class SameColourHead(ClassificationHead):
    """A custom head: classification of the first image of each pair, with its own record."""

    kind = "same-colour"

    def accepts(self, dataset: object) -> bool:
        return isinstance(dataset, Pairs)

    def prepare(self, pipeline: Any, train: Any, val: Any, config: Any) -> None:
        if pipeline.task is None or pipeline.task.kind != self.kind:  # a task of its own kind
            pipeline.set_classes(Task(labels=tuple(CLASSES), kind=self.kind))

    def plan(self, pipeline: Any, train: Any, val: Any, config: Any, accelerator: Any) -> Any:
        return super().plan(pipeline, train.images, None, config, accelerator)

    def training_scope(self, pipeline: Any) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def training_record(self, train: Any, config: Any, plan: Any) -> dict[str, Any]:
        return {"task": self.kind, "num_pairs": len(train.images)}

    def evaluate(self, pipeline: Any, dataset: Any, *, batch_size: int, zero_shot: bool,
                 num_workers: int = 0, pin_memory: bool | None = None) -> EvaluationResult:
        images = dataset.images.with_transform(pipeline.backbone.image_transform(train=False))
        features = pipeline.image_features(torch.stack([images[i][0] for i in
                                                        range(len(images))]))
        predictions = pipeline.logits_from_features(features).argmax(-1)
        return EvaluationResult.from_predictions(predictions, dataset.images.labels, CLASSES)


def test_a_registered_custom_head_trains_evaluates_and_records(backbone, registry, tmp_path):
    registry.register_task_head(SameColourHead())
    pipeline = classifier(backbone)
    data = Pairs(classification_set())
    steps: list[Any] = []
    result = pipeline.fit(data, callbacks=[steps.append])
    assert len(result.history) == 1 and len(steps) == 3  # 9 images, batches of 4
    assert pipeline.training_data == {"task": "same-colour", "num_pairs": 9}
    metrics = pipeline.evaluate(data, split="pairs")
    assert pipeline.metrics["pairs"]["accuracy"] == metrics.accuracy
    loaded = CoTPipeline.from_pretrained(pipeline.save_pretrained(tmp_path / "a"),
                                         backbone=backbone)
    assert loaded.training_data == pipeline.training_data
    assert loaded.metrics == pipeline.metrics
