"""Visual question answering: the VQAv2 reader, answer normalisation, VQA accuracy, training,
out-of-vocabulary counting, artifacts and the CLI.

No VQA data set can be downloaded here, so the fixtures build a small one from real images,
``../shared/data/cifar10-mini``, with questions and answers derived from each image's CIFAR-10
label and brightness: ``"what is in the picture?"`` (8 annotators give the label, 2 a synonym
such as ``"kitten"``), ``"is this an animal?"`` (yes / no) and ``"is this a dark photo?"`` (yes /
no from the mean luminance, one annotator disagreeing). They are written as VQAv2 question and
annotation JSON files with COCO-style image names (``COCO_train2014_000000000001.jpg``, links to
the CIFAR files) and read back with the reader. Training covers 8 classes; the test set has all
10, so the questions about the 2 others have answers outside the vocabulary. The backbone is the
random-weight ``cotprompt-tiny`` (no pretrained CLIP can be downloaded here).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageStat

from cotprompt import CoTPipeline
from cotprompt.artifact.format import CARD_NAME, CONFIG_NAME
from cotprompt.errors import ConfigError, DataError
from cotprompt.tasks import (
    VQADataset,
    VQAEvalConfig,
    VQAQuestion,
    answer_logits,
    evaluate_vqa,
    for_task,
    from_vqa_json,
    normalize_answer,
    predict_answers,
    set_answer_vocabulary,
    vqa_score,
)

TRAINING = dict(optimizer="adamw", lr=0.01, weight_decay=0.0, warmup_epochs=0,
                scheduler="constant", augment=False, progress=False, batch_size=16, seed=1)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")
ANIMALS = {"bird", "cat", "deer", "dog", "frog", "horse"}
SYNONYMS = {"airplane": "plane", "automobile": "car", "bird": "sparrow", "cat": "kitten",
            "deer": "elk", "dog": "puppy", "frog": "toad", "horse": "pony", "ship": "boat",
            "truck": "lorry"}


def is_dark(path: Path) -> bool:
    return ImageStat.Stat(Image.open(path).convert("L")).mean[0] < 105


def write_vqa(cifar: Path, split: str, classes: tuple[str, ...], per_class: int,
              folder: Path) -> tuple[Path, Path, Path]:
    """VQAv2 question + annotation files and a COCO-named image folder."""
    images = folder / "images"
    images.mkdir(parents=True)
    subtype = f"{split}2014"
    questions, annotations = [], []
    image_id = 0
    for label in classes:
        for source in sorted((cifar / split / label).glob("*.jpg"))[:per_class]:
            image_id += 1
            (images / f"COCO_{subtype}_{image_id:012d}.jpg").symlink_to(source)
            yes = "yes" if label in ANIMALS else "no"
            dark = "yes" if is_dark(source) else "no"
            other = "no" if dark == "yes" else "yes"
            qa = [
                ("What is in the picture?", [label.title()] * 8 + [SYNONYMS[label]] * 2, label),
                ("Is this an animal?", [yes] * 10, yes),
                ("Is this a dark photo?", [dark] * 9 + [other], dark),
            ]
            for question, answers, main in qa:
                qid = len(questions) + 1
                questions.append({"image_id": image_id, "question": question,
                                  "question_id": qid})
                annotations.append({
                    "question_id": qid, "image_id": image_id, "question_type": "what",
                    "answer_type": "other", "multiple_choice_answer": main,
                    "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": n + 1}
                                for n, a in enumerate(answers)],
                })
    qfile, afile = folder / "questions.json", folder / "annotations.json"
    qfile.write_text(json.dumps({"info": {}, "task_type": "Open-Ended", "data_type": "mscoco",
                                 "data_subtype": subtype, "questions": questions}))
    afile.write_text(json.dumps({"info": {}, "data_subtype": subtype,
                                 "annotations": annotations}))
    return qfile, afile, images


@pytest.fixture(scope="module")
def files(shared_data: Path, tmp_path_factory) -> dict[str, tuple[Path, Path, Path]]:
    cifar = shared_data / "cifar10-mini"
    root = tmp_path_factory.mktemp("vqa")
    return {"train": write_vqa(cifar, "train", CLASSES[:8], 4, root / "train"),
            "test": write_vqa(cifar, "test", CLASSES, 4, root / "test")}


@pytest.fixture(scope="module")
def train_set(files) -> VQADataset:
    return from_vqa_json(*files["train"])  # 32 images, 96 questions


@pytest.fixture(scope="module")
def test_set(files) -> VQADataset:
    return from_vqa_json(*files["test"])  # 40 images, 120 questions (8 out of vocabulary)


# -- data -----------------------------------------------------------------------------------


def test_reader_reads_vqav2_files(train_set, files):
    assert len(train_set) == 96 and len(train_set.images) == 32
    first = train_set.questions[0]
    assert first.question == "What is in the picture?"
    assert first.answers == ("airplane",) * 8 + ("plane",) * 2  # normalised: lower case
    assert first.answer == "airplane" and first.question_id == 1
    assert [q.image for q in train_set.questions[:4]] == [0, 0, 0, 1]
    assert train_set.images[1].path.name == "COCO_train2014_000000000002.jpg"
    assert train_set.annotated
    unannotated = from_vqa_json(files["train"][0], None, files["train"][2])
    assert not unannotated.annotated and unannotated.questions[0].answer is None
    named = from_vqa_json(files["train"][0], files["train"][1], files["train"][2],
                          split="train2014", image_pattern="COCO_{split}_{image_id:012d}.jpg")
    assert [r.path for r in named.images] == [r.path for r in train_set.images]


def test_answer_normalisation_and_vqa_score():
    assert normalize_answer("  Two ") == "2"
    assert normalize_answer("The Dog.") == "dog"
    assert normalize_answer("yes!") == "yes"
    assert normalize_answer("3.5") == "3.5"
    assert normalize_answer("red, white") == "red white"
    humans = ["cat"] * 3 + ["dog"] * 7
    assert vqa_score("cat", humans) == 1.0
    assert vqa_score("cat", ["cat", "cat"] + ["dog"] * 8) == pytest.approx(2 / 3)
    assert vqa_score("bird", humans) == 0.0
    # leaving out one of the 3 "cat" annotators (3 of 10 subsets) gives 2/3, others 1
    assert vqa_score("cat", humans, leave_one_out=True) == pytest.approx((3 * 2 / 3 + 7) / 10)


def test_answer_vocabulary(train_set):
    vocabulary = train_set.answer_vocabulary(1000)
    assert vocabulary[:2] == ["no", "yes"] or vocabulary[:2] == ["yes", "no"]
    assert sorted(vocabulary[2:]) == sorted(CLASSES[:8])
    assert len(train_set.answer_vocabulary(3)) == 3
    with pytest.raises(DataError, match="num_answers >= 1"):
        train_set.answer_vocabulary(0)


def test_reader_and_data_errors(files, tmp_path, caplog):
    qfile, afile, images = files["train"]
    bad = tmp_path / "questions.json"
    bad.write_text('{"questions": [{"image_id": 1,')
    with pytest.raises(DataError, match=r"questions\.json.*not valid JSON"):
        from_vqa_json(bad, afile, images)
    bad.write_text(json.dumps({"questions": [{"image_id": 1, "question": "why?"}]}))
    with pytest.raises(DataError, match=r"questions\[0\]: missing key 'question_id'"):
        from_vqa_json(bad, afile, images)
    annotations = json.loads(afile.read_text())
    annotations["annotations"] = annotations["annotations"][:-2]
    short = tmp_path / "annotations.json"
    short.write_text(json.dumps(annotations))
    with pytest.raises(DataError, match=r"2 question.*have no annotation"):
        from_vqa_json(qfile, short, images)
    with pytest.raises(DataError, match="32 of 32 image file"):
        from_vqa_json(qfile, afile, tmp_path)
    partial = tmp_path / "images"
    partial.mkdir()
    for link in sorted(images.iterdir())[:5]:
        (partial / link.name).symlink_to(link.resolve())
    with caplog.at_level(logging.WARNING):
        kept = from_vqa_json(qfile, afile, partial, missing_images="skip")
    assert len(kept) == 15 and len(kept.images) == 5
    assert "81 question(s) dropped" in caplog.text
    with pytest.raises(DataError, match="cannot name image"):
        from_vqa_json(qfile, afile, images, image_pattern="{image}.jpg")
    unannotated = from_vqa_json(qfile, None, images)
    with pytest.raises(DataError, match="no question has a reference answer"):
        unannotated.answer_vocabulary()


# -- training, scoring, artifacts -----------------------------------------------------------


@pytest.fixture(scope="module")
def coop_run(tiny_backbone, train_set, test_set, tmp_path_factory):
    """CoOp trained for VQA, with the untuned pipeline's accuracy before training."""
    torch.manual_seed(0)
    pipeline = for_task("vqa", "coop", backbone=tiny_backbone,
                        training=dict(TRAINING, epochs=30))
    set_answer_vocabulary(pipeline, train_set.answer_vocabulary(100))
    before = {"train": pipeline.evaluate(train_set), "test": pipeline.evaluate(test_set)}
    history = pipeline.fit(train_set).history
    after = {"train": pipeline.evaluate(train_set),
             "test": pipeline.evaluate(test_set, split="test")}
    folder = pipeline.save_pretrained(tmp_path_factory.mktemp("artifacts") / "coop")
    return pipeline, before, after, history, folder


def test_coop_training_improves_vqa_accuracy(coop_run):
    _, before, after, history, _ = coop_run
    for split in ("train", "test"):
        assert after[split].accuracy >= before[split].accuracy + 25, (split, before, after)
    assert history[-1]["loss"] < history[0]["loss"] - 0.5


def test_out_of_vocabulary_questions_are_counted(coop_run, test_set, caplog):
    pipeline, _, after, _, _ = coop_run
    result = after["test"]
    assert result.num_questions == 120 and result.num_answers == 10
    # "what is in the picture?" about the 2 classes outside the training set: label and
    # synonym both outside the vocabulary
    assert result.num_out_of_vocabulary == 8 and result.num_unanswerable == 8
    assert result.oracle_accuracy == pytest.approx(100 * 112 / 120)
    assert result.accuracy_in_vocabulary == pytest.approx(result.accuracy * 120 / 112)
    assert len(result.predictions) == 120
    with caplog.at_level(logging.WARNING, logger="cotprompt.tasks"):
        evaluate_vqa(pipeline, test_set)
    assert "8 of 120 questions have a reference answer outside the 10-answer vocabulary" in (
        caplog.text)


def test_vqa_metrics_card_and_round_trip(coop_run, tiny_backbone, test_set):
    pipeline, _, after, _, folder = coop_run
    assert pipeline.metrics["test"] == after["test"].metrics()
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["task"]["kind"] == "vqa"
    assert config["task"]["labels"] == list(pipeline.class_names)  # the answer vocabulary
    assert config["chain"]["steps"][0]["texts"][0] == ["question: {question} answer: yes"] or (
        config["chain"]["steps"][0]["texts"][0] == ["question: {question} answer: no"])
    card = (folder / CARD_NAME).read_text()
    for metric in ("vqa_accuracy", "out_of_vocabulary", "oracle_accuracy"):
        assert f"| test | {metric} | {after['test'].metrics()[metric]:.2f} |" in card
    assert "visual-question-answering" in card and "image-classification" not in card
    with pytest.raises(ConfigError, match="this pipeline's task is 'vqa'"):
        pipeline.predict(images=torch.zeros(1, 3, 32, 32))
    loaded = CoTPipeline.from_pretrained(folder, backbone=tiny_backbone)
    again = loaded.evaluate(test_set)
    assert again.accuracy == after["test"].accuracy
    assert again.predictions == after["test"].predictions
    images = [test_set.images[q.image].path for q in test_set.questions[:6]]
    questions = [q.question for q in test_set.questions[:6]]
    assert predict_answers(loaded, images, questions, top_k=3) == predict_answers(
        pipeline, images, questions, top_k=3)


def test_batched_texts_equal_one_question_at_a_time(coop_run, test_set):
    pipeline, _, after, _, _ = coop_run
    features = torch.nn.functional.normalize(torch.randn(6, 64), dim=-1)
    questions = ["Is this an animal?", "What is in the picture?", "Is this an animal?",
                 "Is this a dark photo?", "What is in the picture?", "Is this an animal?"]
    with torch.no_grad():
        batched = answer_logits(pipeline, features, questions)
        one_call_each = answer_logits(pipeline, features, questions,
                                      VQAEvalConfig(max_texts_per_call=1))
        separately = torch.cat([answer_logits(pipeline, features[i : i + 1], [q])
                                for i, q in enumerate(questions)])
    torch.testing.assert_close(batched, one_call_each)
    torch.testing.assert_close(batched, separately)
    small_batches = evaluate_vqa(pipeline, test_set, config={"questions_per_batch": 7})
    assert small_batches.predictions == after["test"].predictions
    zero_shot = pipeline.evaluate(test_set, zero_shot=True)
    assert 0 <= zero_shot.accuracy <= zero_shot.oracle_accuracy


def test_cocoop_training_improves_and_round_trips(tiny_backbone, train_set, test_set, tmp_path):
    torch.manual_seed(0)
    pipeline = for_task("vqa", "cocoop", backbone=tiny_backbone,
                        training=dict(TRAINING, epochs=12))
    result = pipeline.fit(train_set, val=test_set)  # vocabulary from the training answers
    assert pipeline.class_names[:2] in (["no", "yes"], ["yes", "no"])
    assert "val_vqa_accuracy" in result.history[-1]
    tuned = pipeline.evaluate(train_set)
    untuned = for_task("vqa", "cocoop", backbone=tiny_backbone)
    set_answer_vocabulary(untuned, pipeline.class_names)
    assert tuned.accuracy >= untuned.evaluate(train_set).accuracy + 20
    folder = pipeline.save_pretrained(tmp_path / "cocoop")
    loaded = CoTPipeline.from_pretrained(folder, backbone=tiny_backbone)
    assert loaded.evaluate(train_set).predictions == tuned.predictions


# -- bad inputs -----------------------------------------------------------------------------


def test_bad_inputs(tiny_backbone, train_set, files):
    pipeline = for_task("vqa", "coop", backbone=tiny_backbone, training=dict(TRAINING, epochs=1))
    with pytest.raises(ConfigError, match="no answer vocabulary"):
        pipeline.evaluate(train_set)
    with pytest.raises(DataError, match="answer vocabulary is empty"):
        set_answer_vocabulary(pipeline, ["", "  "])
    set_answer_vocabulary(pipeline, ["yes", "no"])
    unannotated = from_vqa_json(files["train"][0], None, files["train"][2])
    with pytest.raises(DataError, match="questions without human answers"):
        pipeline.evaluate(unannotated)
    with pytest.raises(DataError, match="has a human answer in the 1-answer vocabulary"):
        set_answer_vocabulary(pipeline, ["maybe"])
        pipeline.fit(train_set)
    long_question = "why " + " ".join(["really"] * 80) + "?"
    dataset = VQADataset(train_set.images[:1], [
        VQAQuestion(1, 0, long_question, ("yes",) * 10, "yes")])
    set_answer_vocabulary(pipeline, ["yes", "no"])
    with pytest.raises(ConfigError, match="do not fit the context length of 77 tokens"):
        pipeline.evaluate(dataset)
    classification = CoTPipeline.for_method("coop", backbone=tiny_backbone)
    with pytest.raises(ConfigError, match=r"'rule-based'.*such as 'question-answer'"):
        classification.fit(train_set)


# -- command line ---------------------------------------------------------------------------


def run_cli(monkeypatch, *argv: str) -> tuple[int, str, str]:
    from cotprompt.cli import app as cli
    from cotprompt.cli import tasks

    if tasks not in cli.COMMAND_MODULES:
        monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, tasks])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_cli_eval_vqa(coop_run, files, monkeypatch, tmp_path):
    _, _, after, _, folder = coop_run
    qfile, afile, images = files["test"]
    code, out, err = run_cli(monkeypatch, "eval-vqa", str(folder), "--questions", str(qfile),
                             "--annotations", str(afile), "--image-root", str(images),
                             "--json", "--threads", "1", "-q")
    assert code == 0, err
    summary = json.loads(out)
    tuned = summary["results"]["tuned"]
    assert tuned["accuracy"] == pytest.approx(after["test"].accuracy)
    assert tuned["num_out_of_vocabulary"] == 8 and summary["num_questions"] == 120
    code, out, _ = run_cli(monkeypatch, "eval-vqa", str(folder), "--questions", str(qfile),
                           "--annotations", str(afile), "--image-root", str(images), "-q",
                           "--zero-shot")
    assert code == 0 and "VQA accuracy" in out and "out of vocabulary: 8" in out
    code, _, err = run_cli(monkeypatch, "eval-vqa", str(folder), "--questions", str(qfile),
                           "--annotations", str(afile), "--image-root", str(tmp_path))
    assert code == 2 and "error:" in err and "do not exist" in err
