"""Image-text retrieval: readers, the recall protocol, training, two-stage scoring, artifacts, CLI.

No caption data set (Flickr30k, MSCOCO) can be downloaded here, so the fixtures build a small one
from real images, ``../shared/data/cifar10-mini``: every image gets two captions derived from its
CIFAR-10 label and its brightness, ``"a dark photo of a cat."`` and ``"a cat in a dark picture."``
(``dark`` / ``grey`` / ``bright`` from the image's mean luminance). The readers are tested on files
in the real formats (Karpathy split files in the Flickr30k and COCO layouts, a COCO caption
annotation file, a CSV) written from those data. The backbone is the random-weight
``cotprompt-tiny`` (no pretrained CLIP can be downloaded here): absolute recalls are low, but
training must raise them clearly over the untuned pipeline.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageStat

from cotprompt import CoTPipeline
from cotprompt.artifact.format import CARD_NAME, CONFIG_NAME
from cotprompt.data.records import ImageRecord
from cotprompt.errors import ConfigError, DataError
from cotprompt.evaluation.task_metrics import image_to_text_recall, text_to_image_recall
from cotprompt.tasks import (
    RetrievalDataset,
    RetrievalEvalConfig,
    evaluate_retrieval,
    for_task,
    from_caption_csv,
    from_coco_captions,
    from_karpathy,
    recall_from_scores,
    similarity,
)
from cotprompt.tasks._tokens import MemoTokenizer
from cotprompt.tasks.retrieval import contrastive_loss, prepare, sample_captions

TRAINING = dict(optimizer="adamw", lr=0.01, weight_decay=0.0, warmup_epochs=0,
                scheduler="constant", augment=False, progress=False, batch_size=16, seed=1)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")
PHRASINGS = ("a {tone} photo of a {label}.", "a {label} in a {tone} picture.")


def tone(path: Path) -> str:
    """``dark`` / ``grey`` / ``bright`` from the mean luminance (about tertiles of the set)."""
    mean = ImageStat.Stat(Image.open(path).convert("L")).mean[0]
    return "dark" if mean < 105 else ("bright" if mean > 128 else "grey")


def captions_of(path: Path, label: str) -> list[str]:
    return [p.format(tone=tone(path), label=label) for p in PHRASINGS]


@pytest.fixture(scope="module")
def cifar(shared_data: Path) -> Path:
    return shared_data / "cifar10-mini"


def build(cifar: Path, split: str, per_class: int) -> RetrievalDataset:
    images, captions = [], []
    for label in CLASSES:
        for path in sorted((cifar / split / label).glob("*.jpg"))[:per_class]:
            images.append(ImageRecord(path, 0))
            captions.append(captions_of(path, label))
    return RetrievalDataset(images, captions)


@pytest.fixture(scope="module")
def train_set(cifar: Path) -> RetrievalDataset:
    return build(cifar, "train", 8)  # 80 images, 160 captions


@pytest.fixture(scope="module")
def test_set(cifar: Path) -> RetrievalDataset:
    return build(cifar, "test", 6)  # 60 images, 120 captions


def relative(dataset: RetrievalDataset, root: Path) -> list[str]:
    return [str(r.path.relative_to(root)) for r in dataset.images]


@pytest.fixture(scope="module")
def karpathy_file(cifar: Path, train_set, test_set, tmp_path_factory) -> Path:
    """A Flickr30k-layout Karpathy file: ``image_root / filename``; 70 train, 10 restval, 60
    test images."""
    entries = []
    for n, (name, caps) in enumerate(zip(relative(train_set, cifar), train_set.captions,
                                         strict=True)):
        split = "restval" if n % 8 == 7 else "train"
        entries.append({"filename": name, "split": split, "imgid": n,
                        "sentences": [{"raw": c, "tokens": c.split()} for c in caps]})
    for name, caps in zip(relative(test_set, cifar), test_set.captions, strict=True):
        entries.append({"filename": name, "split": "test",
                        "sentences": [{"raw": c} for c in caps]})
    path = tmp_path_factory.mktemp("karpathy") / "dataset_flickr30k.json"
    path.write_text(json.dumps({"images": entries, "dataset": "flickr30k"}))
    return path


# -- readers --------------------------------------------------------------------------------


def test_karpathy_reader_reads_both_layouts_and_restval(cifar, karpathy_file, train_set,
                                                        test_set, tmp_path):
    test = from_karpathy(karpathy_file, cifar, split="test")
    assert [r.path for r in test.images] == [r.path for r in test_set.images]
    assert test.captions == test_set.captions
    assert test.num_captions == 120
    train = from_karpathy(karpathy_file, cifar, split="train")
    assert len(train) == 80  # restval counts as training data by default
    assert len(from_karpathy(karpathy_file, cifar, split="train", restval_as_train=False)) == 70
    assert len(from_karpathy(karpathy_file, cifar, split="restval")) == 10

    # COCO layout: image_root / filepath / filename
    coco = {"images": [{"filepath": "test", "filename": str(r.path.relative_to(cifar / "test")),
                        "split": "test", "sentences": [{"raw": c} for c in caps]}
                       for r, caps in zip(test_set.images, test_set.captions, strict=True)]}
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(coco))
    read = from_karpathy(path, cifar, split="test")
    assert [r.path for r in read.images] == [r.path for r in test_set.images]


def test_coco_caption_and_csv_readers(cifar, test_set, tmp_path, caplog):
    names = relative(test_set, cifar / "test")
    images = [{"id": 1000 + n, "file_name": name} for n, name in enumerate(names)]
    images.append({"id": 5, "file_name": names[0]})  # an image without captions: left out
    annotations = [{"id": k, "image_id": 1000 + n, "caption": c}
                   for n, caps in enumerate(test_set.captions) for k, c in enumerate(caps)]
    path = tmp_path / "captions_test.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations[::-1]}))
    with caplog.at_level(logging.INFO, logger="cotprompt.tasks"):
        coco = from_coco_captions(path, cifar / "test")
    assert "without captions left out" in caplog.text
    assert [r.path for r in coco.images] == [r.path for r in test_set.images]
    assert [sorted(c) for c in coco.captions] == [sorted(c) for c in test_set.captions]

    rows = ["image,caption"] + [f'{name},"{c}"' for name, caps in zip(names, test_set.captions,
                                                                       strict=True) for c in caps]
    csv_path = tmp_path / "captions.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    from_csv = from_caption_csv(csv_path, root=cifar / "test")
    assert from_csv.captions == test_set.captions
    assert from_csv.num_images == 60


def test_fraction_is_reproducible(train_set):
    a, b = train_set.fraction(0.25, seed=3), train_set.fraction(0.25, seed=3)
    assert len(a) == 20 and [r.path for r in a.images] == [r.path for r in b.images]
    assert [r.path for r in train_set.fraction(0.25, seed=4).images] != [
        r.path for r in a.images]
    with pytest.raises(DataError, match="fraction"):
        train_set.fraction(0.0)


def test_reader_errors(cifar, karpathy_file, tmp_path, caplog):
    bad = tmp_path / "dataset_flickr30k.json"
    bad.write_text('{"images": [ {"filename": "a.jpg", ')
    with pytest.raises(DataError, match=r"dataset_flickr30k\.json.*not valid JSON"):
        from_karpathy(bad, cifar)
    bad.write_text('{"annotations": []}')
    with pytest.raises(DataError, match="missing key 'images'"):
        from_karpathy(bad, cifar)
    bad.write_text('{"images": [{"filename": "x.jpg", "split": "test"}]}')
    with pytest.raises(DataError, match=r"images\[0\]: missing key 'sentences'"):
        from_karpathy(bad, cifar)
    with pytest.raises(DataError, match="unknown Karpathy split"):
        from_karpathy(karpathy_file, cifar, split="dev")
    with pytest.raises(DataError, match="no images in split 'val'"):
        from_karpathy(karpathy_file, cifar, split="val")
    # missing images: an error naming them, or skipped with a warning
    with pytest.raises(DataError, match="80 of 80 image file"):
        from_karpathy(karpathy_file, tmp_path, split="train")
    entries = json.loads(karpathy_file.read_text())["images"]
    entries[0]["filename"] = "train/cat/missing.jpg"
    entries[0]["split"] = "test"
    bad.write_text(json.dumps({"images": entries}))
    with pytest.raises(DataError, match=r"1 of 61 image file.*missing\.jpg"):
        from_karpathy(bad, cifar, split="test")
    with caplog.at_level(logging.WARNING):
        assert len(from_karpathy(bad, cifar, split="test", missing_images="skip")) == 60
    assert "missing.jpg" in caplog.text
    coco = tmp_path / "captions.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}],
                                "annotations": [{"image_id": 2, "caption": "x"}]}))
    with pytest.raises(DataError, match="unknown image_id 2"):
        from_coco_captions(coco, cifar)
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("path,text\na.jpg,x\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['image', 'caption'\]"):
        from_caption_csv(csv_path)
    with pytest.raises(DataError, match="has no caption"):
        RetrievalDataset([ImageRecord(Path("a.jpg"), 0)], [[]])


# -- protocol -------------------------------------------------------------------------------


def test_recall_follows_the_several_captions_protocol():
    # 3 images; texts 0,1 -> image 0; 2 -> image 1; 3,4 -> image 2; text 4 is used by image 2
    # twice (a duplicate caption: one text, two entries)
    entry_text, entry_image = [0, 1, 2, 3, 4, 4], [0, 0, 1, 2, 2, 2]
    scores = torch.tensor([
        [0.1, 0.9, 0.8, 0.0, 0.0],  # image 0: its text 1 is ranked first -> hit at 1
        [0.9, 0.0, 0.1, 0.8, 0.7],  # image 1: its text 2 is third -> hit at 5, miss at 1
        [0.0, 0.1, 0.9, 0.2, 0.3],  # image 2: texts 4 then 3 ranked 2nd and 3rd
    ])
    i2t, t2i = recall_from_scores(scores, entry_text, entry_image, ks=(1, 2, 5))
    assert i2t == pytest.approx({1: 100 / 3, 2: 200 / 3, 5: 100.0})
    # texts as queries: 0 -> image 1 first (its image 0 second); 1 -> image 0 first;
    # 2 -> image 2, 0, 1 (its image 1 third); 3 -> image 1, 2 (image 2 second); 4 -> 1, 2
    assert t2i == pytest.approx({1: 100 / 6, 2: 500 / 6, 5: 100.0})
    top_texts = scores.topk(5, dim=1).indices
    assert image_to_text_recall(top_texts, [[0, 1], [2], [3, 4]], (1,)) == pytest.approx(
        {1: 100 / 3})
    assert text_to_image_recall(scores.topk(3, dim=0).indices.t(), entry_text, entry_image,
                                (2,)) == pytest.approx({2: 500 / 6})


def test_contrastive_loss_and_caption_sampling(train_set):
    logits = torch.randn(4, 4)
    positives = torch.eye(4, dtype=torch.bool)
    expected = (torch.nn.functional.cross_entropy(logits, torch.arange(4))
                + torch.nn.functional.cross_entropy(logits.t(), torch.arange(4))) / 2
    torch.testing.assert_close(contrastive_loss(logits, positives), expected)
    first = sample_captions(train_set, seed=1, epoch=0)
    assert first == sample_captions(train_set, seed=1, epoch=0)
    assert first != sample_captions(train_set, seed=1, epoch=1)
    assert set(first) == {0, 1}


def test_memo_tokenizer_gives_the_backbones_tokens(tiny_backbone):
    view = MemoTokenizer(tiny_backbone, max_texts=3)
    texts = ["a cat.", "a dog on grass.", "a cat.", "X X a ship."]
    assert torch.equal(view.tokenize(texts), tiny_backbone.tokenize(texts))
    assert torch.equal(view.tokenize(texts[::-1]), tiny_backbone.tokenize(texts[::-1]))
    assert view.count_tokens("a dog on grass.") == tiny_backbone.count_tokens("a dog on grass.")
    assert len(view._rows) == 3  # bounded
    assert view.embed_dim == tiny_backbone.embed_dim  # everything else is the backbone's


# -- training, scoring, artifacts -----------------------------------------------------------


@pytest.fixture(scope="module")
def coop_run(tiny_backbone, train_set, test_set, tmp_path_factory):
    """CoOp trained for retrieval, with the untuned pipeline's scores before training."""
    torch.manual_seed(0)
    pipeline = for_task("retrieval", "coop", backbone=tiny_backbone,
                        training=dict(TRAINING, epochs=60))
    before = {"train": pipeline.evaluate(train_set), "test": pipeline.evaluate(test_set)}
    history = pipeline.fit(train_set, val=test_set.fraction(0.25, seed=1)).history
    after = {"train": pipeline.evaluate(train_set),
             "test": pipeline.evaluate(test_set, split="test")}
    folder = pipeline.save_pretrained(tmp_path_factory.mktemp("artifacts") / "coop")
    return pipeline, before, after, history, folder


def test_coop_training_improves_recall(coop_run):
    _, before, after, history, _ = coop_run
    for split, margin in (("train", 60), ("test", 30)):
        assert after[split].rsum >= before[split].rsum + margin, (split, before, after)
    assert after["train"].image_to_text[5] >= before["train"].image_to_text[5] + 15
    assert after["train"].text_to_image[10] >= before["train"].text_to_image[10] + 15
    assert history[-1]["loss"] < history[0]["loss"] - 0.3
    assert "val_rsum" in history[-1] and "val_i2t_recall@1" in history[0]
    assert after["test"].mode == "full" and after["test"].num_unique_captions <= 120


def test_retrieval_metrics_card_and_round_trip(coop_run, tiny_backbone, test_set):
    pipeline, _, after, _, folder = coop_run
    assert pipeline.metrics["test"] == after["test"].metrics()
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["task"]["kind"] == "retrieval"
    assert config["generator"]["name"] == "caption"
    assert config["training_data"]["task"] == "retrieval"
    card = (folder / CARD_NAME).read_text()
    for metric in ("i2t_recall@1", "t2i_recall@10", "rsum"):
        assert f"| test | {metric} | {after['test'].metrics()[metric]:.2f} |" in card
    loaded = CoTPipeline.from_pretrained(folder, backbone=tiny_backbone)
    assert loaded.task.kind == "retrieval"
    again = loaded.evaluate(test_set)
    assert again.image_to_text == after["test"].image_to_text
    assert again.text_to_image == after["test"].text_to_image
    assert loaded.metrics["test"] == pytest.approx(after["test"].metrics())
    images = [r.path for r in test_set.images[:5]]
    torch.testing.assert_close(similarity(loaded, images, test_set.captions[0]),
                               similarity(pipeline, images, test_set.captions[0]),
                               rtol=0, atol=0)


def test_zero_shot_and_chunking(coop_run, test_set):
    pipeline, _, after, _, _ = coop_run
    chunked = evaluate_retrieval(pipeline, test_set, config={"caption_chunk": 7,
                                                             "image_batch": 5})
    assert chunked.image_to_text == pytest.approx(after["test"].image_to_text)
    assert chunked.text_to_image == pytest.approx(after["test"].text_to_image)
    zero_shot = pipeline.evaluate(test_set, zero_shot=True)
    assert zero_shot.mode == "zero-shot" and zero_shot.num_captions == 120
    logits = similarity(pipeline, [test_set.images[0].path] * 2, ["a cat.", "a dog.", "a cat."])
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits[:, 0], logits[:, 2])


class Interrupt(Exception):
    pass


def test_resume_matches_an_uninterrupted_run(tiny_backbone, train_set, tmp_path):
    small = train_set.fraction(0.3, seed=1)  # 24 images: 2 batches per epoch
    options = dict(TRAINING, epochs=3, checkpoint_every=1)
    reference = for_task("retrieval", "coop", backbone=tiny_backbone)
    prepare(reference)
    start = {k: v.detach().clone() for k, v in reference.model.trainable_state().items()}
    reference.fit(small, training=dict(options, checkpoint_dir=str(tmp_path / "a")))

    interrupted = for_task("retrieval", "coop", backbone=tiny_backbone)
    prepare(interrupted)
    with torch.no_grad():
        for name, value in interrupted.model.trainable_state().items():
            value.copy_(start[name])

    def stop_at_step_3(info):
        if info.global_step == 3:  # mid-epoch 2
            raise Interrupt

    config = dict(options, checkpoint_dir=str(tmp_path / "b"))
    with pytest.raises(Interrupt):
        interrupted.fit(small, training=config, callbacks=[stop_at_step_3])
    resumed = for_task("retrieval", "coop", backbone=tiny_backbone)
    result = resumed.fit(small, training=config, resume_from="latest")
    assert result.global_step == 6
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    for name, value in reference.model.trainable_state().items():
        torch.testing.assert_close(resumed.model.trainable_state()[name], value,
                                   rtol=1e-6, atol=1e-7)


def test_cocoop_training_two_stage_and_round_trip(tiny_backbone, train_set, test_set, tmp_path):
    torch.manual_seed(0)
    pipeline = for_task("retrieval", "cocoop", backbone=tiny_backbone,
                        training=dict(TRAINING, epochs=20))
    before = pipeline.evaluate(train_set)
    pipeline.fit(train_set)
    full = pipeline.evaluate(train_set, split="train")
    assert full.mode == "full"
    assert full.rsum >= before.rsum + 40, (before, full)
    # two-stage with every caption and image re-scored is the full evaluation
    everything = evaluate_retrieval(pipeline, train_set,
                                    config={"mode": "two-stage", "rerank_k": 200})
    assert everything.mode == "two-stage"
    assert everything.image_to_text == pytest.approx(full.image_to_text)
    assert everything.text_to_image == pytest.approx(full.text_to_image)
    # the usual two-stage run (top 10 re-scored), from the mean or a zero stand-in image
    for stage_one in ("mean", "zero"):
        two = evaluate_retrieval(pipeline, train_set, config=RetrievalEvalConfig(
            mode="two-stage", rerank_k=10, stage_one=stage_one, rerank_images_per_call=4))
        assert two.rerank_k == 10 and two.rsum > before.rsum
    # full scoring in chunks of captions and images gives the same recalls
    chunked = evaluate_retrieval(pipeline, train_set, config={
        "mode": "full", "caption_chunk": 9, "conditioned_images_per_call": 3})
    assert chunked.image_to_text == pytest.approx(full.image_to_text)
    folder = pipeline.save_pretrained(tmp_path / "cocoop")
    loaded = CoTPipeline.from_pretrained(folder, backbone=tiny_backbone)
    again = loaded.evaluate(train_set)
    assert (again.image_to_text, again.text_to_image) == (full.image_to_text,
                                                          full.text_to_image)


# -- bad inputs -----------------------------------------------------------------------------


#: 84 CLIP tokens, as long as the longest real Flickr30k captions (77 is CLIP's context).
LONG_CAPTION = (
    "A young boy wearing a red and white striped shirt, blue jeans and a green baseball cap is "
    "standing on a wooden bench next to a large brown dog while his older sister, who is holding "
    "a bright yellow umbrella and a paper bag of fresh bread, watches them from the sidewalk in "
    "front of a small bakery with a blue awning and two old bicycles on a rainy afternoon in the "
    "city near the old train station downtown."
)


def with_long_caption(test_set: RetrievalDataset) -> RetrievalDataset:
    return RetrievalDataset(test_set.images[:4], [["a cat."], ["a dog on grass."],
                                                  ["a ship.", LONG_CAPTION], ["a truck."]])


def test_a_long_caption_is_refused_before_anything_runs(tiny_backbone, test_set):
    assert tiny_backbone.count_tokens(LONG_CAPTION) == 84
    dataset = with_long_caption(test_set)
    pipeline = for_task("retrieval", "coop", backbone=tiny_backbone,
                        training=dict(TRAINING, epochs=2, batch_size=2))
    steps: list = []
    with pytest.raises(DataError) as caught:
        pipeline.fit(dataset, callbacks=[steps.append])
    assert not steps  # checked before the first step, not half-way through an epoch
    message = str(caught.value)
    assert message.startswith(
        "1 of 5 training captions do not fit the text encoder's context of 77 tokens (75 "
        "between the start and end-of-text tokens, 16 of them taken by the tuner's context "
        "vectors): 100 tokens: 'A young")
    assert str(test_set.images[2].path) in message and "long_captions='truncate'" in message
    # tuned and zero-shot evaluation follow the same rule
    for zero_shot in (False, True):
        with pytest.raises(DataError, match="1 of 5 gallery captions do not fit"):
            pipeline.evaluate(dataset, zero_shot=zero_shot)
    with pytest.raises(DataError, match="1 of 2 captions do not fit"):
        similarity(pipeline, [test_set.images[0].path], ["a cat.", LONG_CAPTION])


def test_long_captions_truncated_as_clip_does(tiny_backbone, test_set, caplog):
    dataset = with_long_caption(test_set)
    pipeline = for_task("retrieval", "coop", backbone=tiny_backbone,
                        generator_config={"long_captions": "truncate"},
                        training=dict(TRAINING, epochs=2, batch_size=2))
    with caplog.at_level(logging.INFO, logger="cotprompt.tasks.retrieval"):
        pipeline.fit(dataset, val=dataset)
        tuned = pipeline.evaluate(dataset)
        zero_shot = pipeline.evaluate(dataset, zero_shot=True)
    assert tuned.num_captions == zero_shot.num_captions == 5
    assert ("1 of 5 training captions do not fit the text encoder's context of 77 tokens (75 "
            "between the start and end-of-text tokens, 16 of them taken by the tuner's context "
            "vectors): the tokenizer cuts them, as CLIP's own evaluation does "
            "(long_captions='truncate')") in caplog.text
    assert "1 of 5 validation captions" in caplog.text and "1 of 5 gallery captions" in caplog.text
    # the cut is CLIP's: the first tokens that fit, then the end-of-text token
    ids = tiny_backbone.tokenize([LONG_CAPTION])[0]
    assert int(tiny_backbone.end_of_text_index(ids[None])[0]) == 76
    tokenizer = tiny_backbone._tokenizer
    kept = tokenizer.decode(tokenizer.encode(LONG_CAPTION)[:75 - 16])  # 16 context vectors
    image = [test_set.images[0].path]
    logits = similarity(pipeline, image, [LONG_CAPTION, kept])
    torch.testing.assert_close(logits[:, 0], logits[:, 1])
    # zero-shot: the caption itself, cut at the context length
    zero = tiny_backbone.encode_texts([LONG_CAPTION])
    full_kept = tokenizer.decode(tokenizer.encode(LONG_CAPTION)[:75])
    torch.testing.assert_close(zero, tiny_backbone.encode_texts([full_kept]))
    # the option can also be given per call
    strict = for_task("retrieval", "coop", backbone=tiny_backbone)
    result = evaluate_retrieval(strict, dataset, config={"long_captions": "truncate"})
    assert result.num_unique_captions == 5


def test_components_that_cannot_do_retrieval(tiny_backbone, test_set):
    classification = CoTPipeline.for_method("coop", backbone=tiny_backbone)
    with pytest.raises(ConfigError, match=r"'rule-based'.*such as 'caption'"):
        classification.evaluate(test_set)
    specific = for_task("retrieval", "coop", backbone=tiny_backbone,
                        tuner_config={"class_specific": True})
    with pytest.raises(ConfigError, match="class-specific"):
        specific.evaluate(test_set)
    with pytest.raises(ConfigError, match="unknown task"):
        for_task("captioning", backbone=tiny_backbone)


# -- command line ---------------------------------------------------------------------------


@contextlib.contextmanager
def task_commands(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``cotprompt`` with the task subcommands (added here if the cli does not list them yet)."""
    from cotprompt.cli import app as cli
    from cotprompt.cli import tasks

    if tasks not in cli.COMMAND_MODULES:
        monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, tasks])
    yield


def run_cli(monkeypatch, *argv: str) -> tuple[int, str, str]:
    from cotprompt.cli import app as cli

    out, err = io.StringIO(), io.StringIO()
    with task_commands(monkeypatch), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_cli_eval_retrieval(coop_run, cifar, karpathy_file, monkeypatch, tmp_path):
    _, _, after, _, folder = coop_run
    code, out, err = run_cli(monkeypatch, "eval-retrieval", str(folder), "--karpathy",
                             str(karpathy_file), "--image-root", str(cifar), "--json",
                             "--zero-shot", "--threads", "1", "-q")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["num_images"] == 60 and summary["num_captions"] == 120
    tuned = summary["results"]["tuned"]
    assert tuned["image_to_text"] == {str(k): v for k, v in
                                      after["test"].image_to_text.items()}
    assert tuned["rsum"] == pytest.approx(after["test"].rsum)
    assert summary["results"]["zero_shot"]["mode"] == "zero-shot"
    code, out, _ = run_cli(monkeypatch, "eval-retrieval", str(folder), "--karpathy",
                           str(karpathy_file), "--image-root", str(cifar), "-q")
    assert code == 0 and "image->text R@1" in out and "rsum" in out
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    code, _, err = run_cli(monkeypatch, "eval-retrieval", str(folder), "--karpathy", str(bad),
                           "--image-root", str(cifar))
    assert code == 2 and "error:" in err and "not valid JSON" in err
