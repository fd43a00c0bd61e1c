"""The ``cotprompt demo`` command: the offline demo on scikit-learn's bundled digits.

It trains CoOp, CoCoOp and CoT-PT few-shot on one shared backbone, prints zero-shot against
tuned accuracy, saves every artifact, reloads one and checks that its predictions match.
:func:`add_commands` adds it to the ``cotprompt`` parser; :func:`demo_training` gives the
training options it uses for each method.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotprompt.cli._common import (
    EXIT_OK,
    add_device,
    add_json,
    logger,
    print_json,
    require_positive,
    table,
    torch_threads,
    write,
)
from cotprompt.errors import ArtifactError, ConfigError

if TYPE_CHECKING:
    from cotprompt.data.records import ImageClassificationDataset
    from cotprompt.pipeline import CoTPipeline
    from cotprompt.training.config import TrainingConfig

__all__ = [
    "DEMO_MODEL",
    "DEMO_OUTPUT",
    "RANDOM_BACKBONE_EPOCHS",
    "RANDOM_BACKBONE_TRAINING",
    "add_commands",
    "demo_training",
]

DEMO_OUTPUT = "cotprompt-demo-output"
#: The demo's default model: ``cotprompt.backbones.TINY_DEMO_MODEL``, spelled out because the
#: parser is built without importing the backbones (which import torch); a test keeps them equal.
DEMO_MODEL = "cotprompt-tiny-avgpool"

#: Training options of the demo on a random-weight backbone (``cotprompt-tiny-avgpool``): SGD at
#: CoOp's learning rate barely moves random features, AdamW at 0.01 does.
RANDOM_BACKBONE_TRAINING: dict[str, Any] = {
    "optimizer": "adamw",
    "lr": 0.01,
    "warmup_epochs": 0,
    "weight_decay": 0.0,
    "scheduler": "constant",
    "augment": False,
    "batch_size": 32,
}
#: Demo epochs per method on a random-weight backbone (chosen to finish in well under 2 minutes
#: on 2 CPU cores; CoT-PT runs K=3 image-conditioned steps, so it gets fewer).
RANDOM_BACKBONE_EPOCHS: dict[str, int] = {"coop": 150, "cocoop": 60, "cotpt": 15}


def add_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``demo`` to the ``cotprompt`` parser.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.
        common: The parent parser of the options every subcommand accepts.
    """
    _add_demo(subparsers, common)


def _add_demo(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "demo", parents=[common], help="train CoOp, CoCoOp and CoT-PT on bundled digits",
        description=(
            "The offline demo: few-shot training of CoOp, CoCoOp and CoT-PT on scikit-learn's "
            "bundled digits (no download), sharing one backbone; prints zero-shot vs tuned "
            "accuracy, saves every artifact, reloads one and checks its predictions. With the "
            f"default random-weight {DEMO_MODEL} model accuracies are far below pretrained "
            "CLIP's (compare tuned with zero-shot only); use e.g. "
            "--model ViT-B-16 --pretrained openai for real numbers (weights are downloaded by "
            "open_clip on first use)."
        ),
    )
    parser.add_argument(
        "--model", default=DEMO_MODEL, help=f"open_clip architecture (default: {DEMO_MODEL})"
    )
    parser.add_argument(
        "--pretrained",
        help=f"open_clip pretrained tag, a checkpoint path, or `none` for random weights "
        f"(default: none for {DEMO_MODEL}, openai otherwise)",
    )
    parser.add_argument(
        "--methods", default="coop,cocoop,cotpt", help="comma-separated (default: all three)"
    )
    parser.add_argument("--shots", type=int, default=16, help="images per class (default: 16)")
    parser.add_argument(
        "--epochs", type=int,
        help="epochs for every method (default: "
        + ", ".join(f"{m} {e}" for m, e in RANDOM_BACKBONE_EPOCHS.items())
        + " on a random backbone; the training recipe's default otherwise)",
    )
    parser.add_argument(
        "--seed", type=int, default=1,
        help="the one seed: few-shot sample, parameter initialisation, shuffling (default: 1)",
    )
    parser.add_argument(
        "--test-images", type=int, metavar="N",
        help="evaluate on N test images spread evenly over the classes (default: all 602)",
    )
    parser.add_argument(
        "--output", default=DEMO_OUTPUT, metavar="DIR",
        help=f"where the artifacts go, one folder per method (default: ./{DEMO_OUTPUT})",
    )
    add_json(parser, "print a JSON summary")
    add_device(parser, threads_default=f"1 for {DEMO_MODEL}, whose tiny matrices gain nothing "
                "from more; torch's default otherwise")
    parser.set_defaults(handler=_cmd_demo)


def _parse_pretrained(value: str | None, model: str) -> str | None:
    from cotprompt.backbones.open_clip_backbone import TINY_MODELS

    if value is None:
        return None if model in TINY_MODELS else "openai"
    return None if value.strip().lower() in ("", "none", "null", "random") else value


def _parse_methods(value: str) -> list[str]:
    import difflib

    from cotprompt.pipeline import METHODS

    methods = [m.strip() for m in value.split(",") if m.strip()]
    if not methods:
        raise ConfigError(f"--methods names no method; choose from {sorted(METHODS)}")
    for method in methods:
        if method not in METHODS:
            close = difflib.get_close_matches(method, list(METHODS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown method {method!r} in --methods; choose from {sorted(METHODS)}{hint}"
            )
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--methods lists a method twice: {methods}")
    return methods


def demo_training(
    method: str, *, random_backbone: bool, epochs: int | None, seed: int, progress: bool
) -> TrainingConfig:
    """The demo's training options for ``method``.

    On a random-weight backbone: AdamW at 0.01 without warm-up, schedule or augmentation
    (:data:`RANDOM_BACKBONE_TRAINING`) and :data:`RANDOM_BACKBONE_EPOCHS`; on a pretrained one,
    CoCoOp's published recipe (:class:`~cotprompt.training.config.TrainingConfig`'s defaults;
    for CoT-PT a reconstruction: its recipe is unpublished).
    """
    from cotprompt.training.config import TrainingConfig

    options: dict[str, Any] = {"seed": seed, "progress": progress}
    if random_backbone:
        options.update(RANDOM_BACKBONE_TRAINING)
        options["epochs"] = RANDOM_BACKBONE_EPOCHS[method]
    if epochs is not None:
        options["epochs"] = epochs
    return TrainingConfig(**options)


def _spread(dataset: ImageClassificationDataset, count: int) -> ImageClassificationDataset:
    """``count`` records picked at even intervals (the digits splits are grouped by class, so
    every class keeps about the same share)."""
    from cotprompt.data import ImageClassificationDataset

    n = len(dataset)
    records = [dataset.records[(i * n) // count] for i in range(count)]
    return ImageClassificationDataset(records, dataset.class_names, dataset.transform)


def _cmd_demo(args: argparse.Namespace) -> int:
    from cotprompt.backbones.open_clip_backbone import TINY_MODELS

    methods = _parse_methods(args.methods)
    require_positive("--shots", args.shots)
    require_positive("--epochs", args.epochs)
    require_positive("--test-images", args.test_images)
    pretrained = _parse_pretrained(args.pretrained, args.model)
    if args.threads is None and args.model in TINY_MODELS:
        with torch_threads(1):
            return _run_demo(args, methods, pretrained)
    return _run_demo(args, methods, pretrained)


def _run_demo(args: argparse.Namespace, methods: list[str], pretrained: str | None) -> int:
    from cotprompt.data import digits_dataset, few_shot
    from cotprompt.io import check_writable
    from cotprompt.pipeline import CoTPipeline
    from cotprompt.plugins.registry import get_registry

    random_backbone = pretrained is None
    progress = not args.quiet
    output = Path(args.output)
    # fail now, not after training, when the artifacts cannot be written (read-only, disk full);
    # prompt weights are well under 1 MiB per method
    check_writable(output, len(methods) << 20, what="output folder")
    started = time.perf_counter()

    logger.info("building backbone %s (pretrained: %s)", args.model, pretrained or "none")
    backbone = get_registry().create(
        "backbone", "open_clip", {"model_name": args.model, "pretrained": pretrained}
    )
    digits = digits_dataset()
    train = few_shot(digits["train"], args.shots, seed=args.seed, allow_fewer=True)
    test = digits["test"]
    if args.test_images is not None and args.test_images < len(test):
        test = _spread(test, args.test_images)
    logger.info("digits: %d training images (%d shots), %d test images",
                len(train), args.shots, len(test))

    rows: list[dict[str, Any]] = []
    pipelines: dict[str, CoTPipeline] = {}
    for method in methods:
        training = demo_training(method, random_backbone=random_backbone, epochs=args.epochs,
                                 seed=args.seed, progress=progress)
        logger.info("training %s for %d epochs", method, training.epochs)
        pipeline = CoTPipeline.for_method(method, backbone=backbone, training=training,
                                          device=args.device)
        result = pipeline.fit(train)
        zero_shot = pipeline.evaluate(test, zero_shot=True)
        tuned = pipeline.evaluate(test, split="test")
        saved = pipeline.save_pretrained(output / method)
        pipelines[method] = pipeline
        rows.append({
            "method": method,
            "epochs": training.epochs,
            "zero_shot_accuracy": zero_shot.accuracy,
            "tuned_accuracy": tuned.accuracy,
            "tuned_mean_per_class_accuracy": tuned.mean_per_class_accuracy,
            "final_loss": result.history[-1]["loss"] if result.history else None,
            "train_seconds": round(result.seconds, 2),
            "artifact": str(saved),
        })

    # Reload the last artifact from disk alone (a random backbone is rebuilt from its seed; a
    # pretrained one is shared, which also checks that its spec matches) and compare.
    method = methods[-1]
    reloaded = CoTPipeline.from_pretrained(
        output / method, backbone=None if random_backbone else backbone, device=args.device
    )
    step = max(1, len(test) // 6)
    picked = test.records[::step][:6]
    images = [record.load() for record in picked]
    expected = pipelines[method].logits(images).softmax(-1).cpu()
    reloaded_probs = reloaded.logits(images).softmax(-1).cpu()
    difference = float((expected - reloaded_probs).abs().max())
    if difference > 1e-5:
        raise ArtifactError(
            f"the pipeline reloaded from {output / method} predicts differently from the one in "
            f"memory (largest probability difference {difference:.3g})"
        )
    got = reloaded.predict(images, top_k=3)
    samples = [
        {"true": test.class_names[record.label], "predicted": p.label, "score": p.score}
        for record, p in zip(picked, got, strict=True)
    ]
    summary = {
        "model": args.model,
        "pretrained": pretrained,
        "dataset": "digits",
        "shots": args.shots,
        "num_train_images": len(train),
        "num_test_images": len(test),
        "results": rows,
        "reload": {"method": method, "artifact": str(output / method), "match": True,
                   "max_probability_difference": difference, "predictions": samples},
        "seconds": round(time.perf_counter() - started, 2),
    }
    if args.json:
        print_json(summary)
        return EXIT_OK
    write(
        f"cotprompt demo: {args.model} (pretrained: {pretrained or 'none, random weights'}), "
        f"digits, {args.shots} shots x {train.num_classes} classes = {len(train)} training "
        f"images, {len(test)} test images"
    )
    write()
    table_rows = [
        (r["method"], r["epochs"], f"{r['zero_shot_accuracy']:.2f}",
         f"{r['tuned_accuracy']:.2f}", f"{r['train_seconds']:.1f}")
        for r in rows
    ]
    write(table(("method", "epochs", "zero-shot acc %", "tuned acc %", "train s"),
                table_rows, (False, True, True, True, True)))
    if random_backbone:
        write("(random-weight backbone: the prompts learn, but accuracies stay far below what "
              "pretrained CLIP reaches; try --model ViT-B-16 --pretrained openai for real numbers)")
    write()
    write(f"artifacts saved under {output}/: " + ", ".join(methods))
    write(f"reloaded {output / method} with CoTPipeline.from_pretrained; predictions on "
          f"{len(samples)} test images:")
    for sample in samples:
        write(f"  true {sample['true']:<6} -> {sample['predicted']:<6} ({sample['score']:.3f})")
    write("the reloaded pipeline's predictions equal the in-memory ones "
          f"(total {summary['seconds']:.0f} s)")
    return EXIT_OK
