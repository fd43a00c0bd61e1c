"""The fixed-seed runs that tests/golden/data pins (written by make_golden.py, checked by
tests/test_golden.py): a CoT-PT classifier, a retrieval and a VQA pipeline on the tiny random
model, two epochs each with a checkpoint after the first; CLI help texts and JSON outputs."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cotprompt import CoTPipeline
from cotprompt.backbones import TINY_MODEL
from cotprompt.data import ImageClassificationDataset, ImageRecord
from cotprompt.tasks import (
    RetrievalDataset,
    VQADataset,
    VQAQuestion,
    for_task,
    predict_answers,
    set_answer_vocabulary,
    similarity,
)

CLASSES = ["red", "green", "blue"]
TRAINING = {"epochs": 2, "batch_size": 4, "seed": 3, "progress": False, "keep_checkpoints": 2}
BACKBONE = {"model_name": TINY_MODEL, "pretrained": None, "init_seed": 5}
CLI_HELP_COMMANDS = [(), ("train",), ("eval",), ("predict",), ("plugins",), ("demo",), ("push",),
                     ("pull",), ("eval-retrieval",), ("eval-vqa",), ("sweep",), ("report",),
                     ("env",), ("interpret",), ("completion",)]


def colour_images(per_class: int = 3, seed: int = 11) -> list[tuple[Image.Image, int]]:
    """``per_class`` 40x40 images per class of :data:`CLASSES` whose dominant colour is the
    class."""
    rng = np.random.default_rng(seed)
    out = []
    for label in range(len(CLASSES)):
        for _ in range(per_class):
            pixels = rng.integers(0, 90, size=(40, 40, 3), dtype=np.uint8)
            pixels[..., label] = rng.integers(150, 255, size=(40, 40), dtype=np.uint8)
            out.append((Image.fromarray(pixels), label))
    return out


def classification_set() -> ImageClassificationDataset:
    records = [ImageRecord(path=None, label=label, image=image)
               for image, label in colour_images()]
    return ImageClassificationDataset(records, CLASSES)


def retrieval_set() -> RetrievalDataset:
    images = colour_images()
    records = [ImageRecord(path=None, label=0, image=image) for image, _ in images]
    captions = [[f"a {CLASSES[label]} square.", f"mostly {CLASSES[label]} noise."]
                for _, label in images]
    return RetrievalDataset(records, captions)


def vqa_set() -> VQADataset:
    images = colour_images()
    records = [ImageRecord(path=None, label=0, image=image) for image, _ in images]
    questions = []
    for index, (_, label) in enumerate(images):
        colour = CLASSES[label]
        questions.append(VQAQuestion(2 * index, index, "what colour is it?", (colour,) * 10,
                                     colour))
        answer = "yes" if colour == "red" else "no"
        questions.append(VQAQuestion(2 * index + 1, index, "is it red?", (answer,) * 10, answer))
    return VQADataset(records, questions)


def pixels() -> torch.Tensor:
    """A fixed ``[4, 3, 32, 32]`` batch of preprocessed pixels to score."""
    generator = torch.Generator().manual_seed(7)
    return torch.randn(4, 3, 32, 32, generator=generator)


def build(name: str) -> CoTPipeline:
    """The untrained pipeline of case ``name`` (``cotpt``, ``retrieval`` or ``vqa``)."""
    if name == "cotpt":
        return CoTPipeline.create(backbone="open_clip", backbone_config=BACKBONE,
                                  generator="rule-based", generator_config={"preset": "cot"},
                                  tuner="cotpt", aggregator="adaptive", training=TRAINING,
                                  device="cpu")
    pipeline = for_task("retrieval" if name == "retrieval" else "vqa",
                        "cocoop" if name == "vqa" else "coop",
                        model_name=TINY_MODEL, pretrained=None, training=TRAINING, device="cpu")
    return pipeline


def dataset(name: str) -> Any:
    return {"cotpt": classification_set, "retrieval": retrieval_set, "vqa": vqa_set}[name]()


def scores(name: str, pipeline: CoTPipeline) -> dict[str, torch.Tensor]:
    """What the trained pipeline of case ``name`` answers on :func:`pixels`."""
    batch = pixels()
    if name == "cotpt":
        return {"logits": pipeline.logits(batch), "zero_shot": pipeline.logits(batch,
                                                                             zero_shot=True)}
    if name == "retrieval":
        return {"similarity": similarity(pipeline, batch, ["a red square.", "a blue square."])}
    answers = predict_answers(pipeline, batch, ["what colour is it?"] * 4, top_k=2)
    return {"scores": torch.tensor([[score for _, score in row] for row in answers])}


#: Cases that bind their labels with one seed, then fit with another and a validation set, then
#: record an evaluation split.
VALIDATED = ("cotpt-val", "vqa-val")
CASES = ("cotpt", "retrieval", "vqa", *VALIDATED)


def bind(name: str, pipeline: CoTPipeline) -> None:
    """Bind the labels (VQA: the answer vocabulary) before training, with the pipeline's seed."""
    base = name.removesuffix("-val")
    if base == "vqa":
        set_answer_vocabulary(pipeline, ["red", "green", "blue", "yes", "no"])
    elif name in VALIDATED:
        pipeline.set_classes(CLASSES)


def train_case(name: str, checkpoint_dir: Path) -> tuple[Any, CoTPipeline, dict[str, Any]]:
    """Train case ``name`` for two epochs (a checkpoint after each) and score :func:`pixels`."""
    base = name.removesuffix("-val")
    pipeline = build(base)
    bind(name, pipeline)
    data = dataset(base)
    steps_per_epoch = -(-len(data) // TRAINING["batch_size"])  # a checkpoint after each epoch
    options = {"checkpoint_dir": str(checkpoint_dir), "checkpoint_every": steps_per_epoch}
    if name in VALIDATED:
        options["seed"] = 4  # not the seed the parameters were drawn with
        result = pipeline.fit(data, val=dataset(base), training=options)
        pipeline.evaluate(dataset(base), split="test")
    else:
        result = pipeline.fit(data, training=options)
    return result, pipeline, scores(base, pipeline)


def history_record(result: Any) -> list[dict[str, Any]]:
    """The training history without wall-clock times."""
    return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in result.history]


def cli_output(args: list[str]) -> str:
    """stdout of the command line ``cotprompt ARGS`` (run in this process, 100 columns wide).

    Raises:
        RuntimeError: The command failed (its stderr).
    """
    from cotprompt.cli import main

    out, err = io.StringIO(), io.StringIO()
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    if code != 0:
        raise RuntimeError(f"cotprompt {' '.join(args)} failed ({code}): {err.getvalue()[-2000:]}")
    return out.getvalue()


def image_folder(root: Path) -> Path:
    """The classification images as PNG files in ``root/<class>/<n>.png``."""
    for n, (image, label) in enumerate(colour_images(per_class=2, seed=12)):
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{n}.png")
    return root


def cli_json_outputs(artifact: Path, images: Path) -> dict[str, Any]:
    """``--json`` outputs of ``plugins``, ``eval`` and ``predict`` (paths replaced by names)."""

    def run(args: list[str]) -> Any:
        text = cli_output([*args, "--json"])
        return json.loads(text.replace(str(images), "IMAGES").replace(str(artifact), "ARTIFACT"))

    files = sorted(str(p) for p in images.rglob("*.png"))
    plugins = [{k: v for k, v in row.items() if k != "version"} for row in run(["plugins"])]
    return {
        "plugins": plugins,
        "eval": run(["eval", str(artifact), "--data", str(images), "--zero-shot"]),
        "predict": run(["predict", str(artifact), *files, "--top-k", "2"]),
    }


def feature_cache_namespaces(folder: Path) -> list[str]:
    """The namespace folders that caching the classification images' features creates."""
    from cotprompt.training.config import TrainingConfig
    from cotprompt.training.trainer import Trainer

    pipeline = build("cotpt")
    pipeline.set_classes(CLASSES)
    config = TrainingConfig(**{**TRAINING, "augment": False, "feature_cache_dir": str(folder)})
    images = classification_set().with_transform(pipeline.backbone.image_transform(train=False))
    Trainer(pipeline.model, config).encode_dataset(images)
    return sorted(p.name for p in folder.iterdir() if p.is_dir())
