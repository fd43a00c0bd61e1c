"""The ``cotprompt train``, ``eval`` and ``predict`` commands: train a pipeline from a config
file, measure a saved pipeline's accuracy on a labelled dataset, predict the labels of images.

:func:`add_commands` adds them to the ``cotprompt`` parser: each ``_add_<name>`` function builds
a command's parser and sets its ``handler`` to the ``_cmd_<name>`` function.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotprompt.cli._common import (
    EXIT_OK,
    Override,
    add_allow_pickle,
    add_device,
    add_json,
    add_workers,
    check_plots,
    load_pipeline,
    logger,
    parse_overrides,
    print_json,
    require_positive,
    table,
    validate_with_overrides,
    write,
    write_plots,
)
from cotprompt.errors import ConfigError, DataError

if TYPE_CHECKING:
    from cotprompt.data.records import ImageClassificationDataset
    from cotprompt.pipeline import CoTPipeline, Prediction

__all__ = ["TRAIN_OUTPUT", "add_commands"]

TRAIN_OUTPUT = "cotprompt-output"


def add_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``train``, ``eval`` and ``predict`` (in this order) to the ``cotprompt`` parser.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.
        common: The parent parser of the options every subcommand accepts.
    """
    _add_train(subparsers, common)
    _add_eval(subparsers, common)
    _add_predict(subparsers, common)


def _add_train(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "train", parents=[common], help="train prompts from a YAML/JSON config file",
        description=(
            "Train a pipeline described by a config file: the pipeline sections (backbone, "
            "generator, tuner, aggregator, training), a `data` section and an optional `output` "
            "folder. Evaluates zero-shot and tuned accuracy on the test split when there is one, "
            "then saves the artifact (see docs/cli.md and docs/configuration.md)."
        ),
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML or JSON config")
    parser.add_argument(
        "--output", metavar="DIR",
        help=f"artifact folder (default: the config's `output`, else ./{TRAIN_OUTPUT})",
    )
    parser.add_argument(
        "--resume", metavar="latest|PATH",
        help="resume from the newest checkpoint (`latest`) or a checkpoint folder",
    )
    parser.add_argument(
        "--seed", type=int, metavar="N",
        help="the run's seed, instead of the config's `training.seed` and `data.seed`: "
        "parameter initialisation, few-shot sample, shuffling, augmentation",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="override a key of the config (repeatable): a dotted path, a YAML value, e.g. "
        "--set training.epochs=5 --set tuner.config.n_ctx=8 (checked like the file's own keys)",
    )
    parser.add_argument(
        "--allow-fewer", action="store_true",
        help="take all images of classes with fewer than `data.shots` instead of failing "
        "(the same as --set data.allow_fewer=true)",
    )
    parser.add_argument(
        "--plots", action="store_true",
        help="write PNG plots to <output>/plots/: training curves and, when there is a test "
        "split, its confusion matrix and per-class accuracy (needs matplotlib)",
    )
    add_json(parser, "print a JSON summary")
    add_allow_pickle(parser)
    parser.add_argument(
        "--trust-remote-code", action="store_true",
        help="let the `lm` generator run its model repository's code (never set by a file)",
    )
    add_device(parser)
    parser.set_defaults(handler=_cmd_train)


def _add_eval(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "eval", parents=[common], help="accuracy of a saved pipeline on a labelled dataset",
        description=(
            "Evaluate a saved pipeline (a folder or a Hugging Face Hub repository id). When the "
            "dataset's classes differ from the artifact's, the prompts are applied to the "
            "dataset's classes (possible with unified context only)."
        ),
    )
    parser.add_argument("artifact", metavar="ARTIFACT", help="artifact folder or Hub repo id")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="DIR", help="a folder per class: DIR/<class>/<image>")
    source.add_argument("--csv", metavar="FILE", help="a CSV manifest (columns path,label)")
    source.add_argument("--coop-split", metavar="FILE", help="a CoOp split_zhou_*.json file")
    source.add_argument(
        "--digits", action="store_true", help="scikit-learn's bundled digits (no files)"
    )
    parser.add_argument(
        "--image-root", metavar="DIR",
        help="image folder of --coop-split (required) or --csv (default: the CSV's folder)",
    )
    parser.add_argument(
        "--split", default="test", help="split of --coop-split / --digits (default: test)"
    )
    parser.add_argument(
        "--classes", choices=("all", "base", "new"), default="all",
        help="evaluate on all classes or on CoCoOp's base / new half (default: all)",
    )
    parser.add_argument(
        "--zero-shot", action="store_true", help="also evaluate the untuned (zero-shot) classifier"
    )
    parser.add_argument("--per-class", action="store_true", help="print per-class accuracy")
    parser.add_argument(
        "--plots", metavar="DIR",
        help="write PNG plots of the confusion matrix and per-class accuracy (of each evaluated "
        "classifier) to DIR (needs matplotlib)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch")
    add_workers(parser)
    parser.add_argument("--revision", help="Hub branch, tag or commit of ARTIFACT")
    add_json(parser)
    add_allow_pickle(parser)
    add_device(parser)
    parser.set_defaults(handler=_cmd_eval)


def _add_predict(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "predict", parents=[common], help="predict the labels of images",
        description=(
            "Predict labels with a saved pipeline; a folder stands for its images (recursively, "
            "hidden entries skipped)."
        ),
    )
    parser.add_argument("artifact", metavar="ARTIFACT", help="artifact folder or Hub repo id")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    parser.add_argument(
        "--on-bad-image", choices=("error", "skip"), default="error",
        help="an image that cannot be read (missing, corrupt) stops the run, naming it "
        "(`error`, the default), or is skipped with a warning and listed (`skip`)",
    )
    parser.add_argument("--top-k", type=int, default=5, help="labels per image (default: 5)")
    parser.add_argument(
        "--zero-shot", action="store_true", help="use the untuned (zero-shot) classifier"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch")
    add_workers(parser)
    parser.add_argument("--revision", help="Hub branch, tag or commit of ARTIFACT")
    add_json(parser)
    add_allow_pickle(parser)
    add_device(parser)
    parser.set_defaults(handler=_cmd_predict)


def _resolve(value: str, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def _cmd_train(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from cotprompt.data.spec import DataSpec, build_datasets
    from cotprompt.io import check_writable
    from cotprompt.pipeline import CoTPipeline
    from cotprompt.pipeline.config_files import load_pipeline_config, read_mapping
    from cotprompt.plugins.registry import get_registry
    from cotprompt.training.accelerator import check_trackers
    from cotprompt.types import Task

    config_path = Path(args.config)
    raw = read_mapping(config_path)
    base_dir = config_path.resolve().parent
    overrides = parse_overrides(args.overrides)
    if getattr(args, "allow_fewer", False):
        overrides.append(Override("data.allow_fewer=true", label="--allow-fewer"))
    opt_ins = {name: True for name in ("allow_pickle", "trust_remote_code")
               if getattr(args, name, False)}

    def validate(mapping: dict[str, Any]) -> tuple[Any, DataSpec, Any]:
        data_raw = mapping.pop("data", None)
        output_value = mapping.pop("output", None)
        if output_value is not None and not isinstance(output_value, str):
            raise ConfigError(f"`output` must be a folder path, got {output_value!r}")
        config = load_pipeline_config(mapping, file_source=str(config_path),
                                      caller_options=opt_ins)
        seed = config.training.seed if args.seed is None else args.seed
        # one seed: the few-shot sample follows the run's seed unless `data.seed` sets its own
        # (`--seed` overrides both)
        if isinstance(data_raw, Mapping) and (args.seed is not None or "seed" not in data_raw):
            data_raw = {**data_raw, "seed": seed}
        return config, DataSpec.from_mapping(data_raw), output_value

    config, spec, output_value = validate_with_overrides(
        raw, overrides, validate, source=str(config_path))
    seed = config.training.seed if args.seed is None else args.seed
    if args.output:
        output = Path(args.output)
    elif output_value:
        output = _resolve(output_value, base_dir)
    else:
        output = Path(TRAIN_OUTPUT)

    if args.plots:
        check_plots()  # before anything slow
    training = config.training
    updates: dict[str, Any] = {"seed": seed}
    if args.quiet:
        updates["progress"] = False
    if training.checkpoint_dir is None and (args.resume or training.checkpoint_every):
        updates["checkpoint_dir"] = str(output / "checkpoints")
    if training.log_with:  # the trackers record what data the run trained on
        data = spec.model_dump(include={"format", "dataset_name", "shots", "seed", "classes"})
        updates["tracker_config"] = {"data": data, **(training.tracker_config or {})}
    training = training.model_copy(update=updates)
    check_trackers(training)  # packages, project_dir: before the data and the backbone
    # The output places must take their files (not read-only, a folder, disk not full) before
    # anything slow is built, and again with their real size before training.
    check_writable(output, 0, what="output folder")
    if training.checkpoint_dir is not None:
        check_writable(training.checkpoint_dir, 0, what="checkpoint folder")

    # Cheap checks first: component names and options, then data, then the (large) backbone.
    registry = get_registry()
    built = {
        kind: registry.create(kind, getattr(config, kind).name, getattr(config, kind).config)
        for kind in ("generator", "tuner", "aggregator")
    }
    registry.get("backbone", config.backbone.name)
    datasets = build_datasets(spec, base_dir=base_dir)
    train, val, test = datasets["train"], datasets.get("val"), datasets.get("test")
    pipeline = CoTPipeline.create(
        backbone=config.backbone.name, backbone_config=config.backbone.config,
        **built, training=training, device=args.device,
    )
    pipeline.set_classes(Task.classification(train.class_names, dataset=spec.dataset_name))
    state_bytes = sum(
        t.numel() * t.element_size() for t in pipeline.model.trainable_state().values()
    )
    check_writable(output, state_bytes, what="output folder")
    if training.checkpoint_dir is not None:  # parameters, optimizer moments, RNG states
        check_writable(training.checkpoint_dir, 3 * state_bytes, what="checkpoint folder")

    zero_shot = None
    if test is not None:
        # the untuned baseline: reported, not recorded in the model card (it is not this model's)
        zero_shot = pipeline.evaluate(test, zero_shot=True)
        logger.info("zero-shot test accuracy: %.2f%%", zero_shot.accuracy)
    result = pipeline.fit(train, val=val, resume_from=args.resume)
    if pipeline.training_data is not None:  # the few-shot sample's seed, next to the run's
        pipeline.training_data.update(
            {"shots": spec.shots, "data_seed": spec.seed} if spec.shots is not None else {})
    tuned = pipeline.evaluate(test, split="test") if test is not None else None
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return EXIT_OK  # data parallel (torchrun, accelerate launch): the main process writes
    saved = pipeline.save_pretrained(output)
    plots = Path(saved) / "plots" if args.plots else None
    if plots is not None:
        write_plots(plots, {"zero_shot": zero_shot, "tuned": tuned}, result.history)

    summary = {
        "output": str(saved),
        "tuner": config.tuner.name,
        "num_train_images": len(train),
        "num_classes": train.num_classes,
        "epochs": training.epochs,
        "seed": training.seed,
        "seconds": round(result.seconds, 3),
        "final_loss": result.history[-1]["loss"] if result.history else None,
        "zero_shot_test_accuracy": zero_shot.accuracy if zero_shot is not None else None,
        "metrics": pipeline.metrics,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
    }
    if plots is not None:  # the key only with --plots: the summary is otherwise unchanged
        summary["plots"] = str(plots)
    if args.json:
        print_json(summary)
        return EXIT_OK
    loss = summary["final_loss"]
    write(
        f"trained {config.tuner.name} on {len(train)} images ({train.num_classes} classes), "
        f"{training.epochs} epochs in {result.seconds:.1f} s"
        + (f"; final loss {loss:.4f}" if isinstance(loss, float) else "")
    )
    if tuned is not None and zero_shot is not None:
        write(
            f"test accuracy: zero-shot {zero_shot.accuracy:.2f}%, tuned {tuned.accuracy:.2f}% "
            f"(mean per class {tuned.mean_per_class_accuracy:.2f}%) on {tuned.num_samples} images"
        )
    write(f"saved to {saved}")
    return EXIT_OK


def _eval_dataset(args: argparse.Namespace) -> ImageClassificationDataset:
    from cotprompt.data import (
        base_new_split,
        digits_dataset,
        from_coop_split,
        from_csv,
        from_folder,
        subsample_classes,
    )

    if args.coop_split is not None or args.digits:
        if args.coop_split is not None:
            if args.image_root is None:
                raise ConfigError("--coop-split needs --image-root (the folder of the images)")
            splits = from_coop_split(args.coop_split, args.image_root)
            what = f"CoOp split file {args.coop_split!r}"
        else:
            splits = digits_dataset()
            what = "the digits dataset"
        if args.split not in splits:
            raise DataError(f"{what} has no split {args.split!r}; it has {sorted(splits)}")
        dataset = splits[args.split]
    elif args.csv is not None:
        dataset = from_csv(args.csv, root=args.image_root)
    else:
        if args.image_root is not None:
            raise ConfigError("--image-root is used with --coop-split or --csv, not with --data")
        dataset = from_folder(args.data)
    if args.classes != "all":
        base, new = base_new_split(dataset.class_names)
        dataset = subsample_classes(dataset, base if args.classes == "base" else new)
    return dataset


def _bind_dataset_classes(pipeline: CoTPipeline, dataset: ImageClassificationDataset) -> None:
    """Apply the prompts to the dataset's classes when they differ from the artifact's."""
    names = [name.replace("_", " ") for name in dataset.class_names]
    if names != pipeline.class_names:
        logger.info(
            "the dataset's %d classes differ from the artifact's %d; applying the prompts to the "
            "dataset's classes", len(names), len(pipeline.class_names),
        )
        pipeline.set_classes(dataset.class_names)


def _cmd_eval(args: argparse.Namespace) -> int:
    require_positive("--batch-size", args.batch_size)
    if args.plots:
        check_plots()  # before anything slow
    dataset = _eval_dataset(args)
    pipeline = load_pipeline(args)
    _bind_dataset_classes(pipeline, dataset)
    results = {"tuned": pipeline.evaluate(dataset, batch_size=args.batch_size,
                                          num_workers=args.workers)}
    if args.zero_shot:
        results["zero_shot"] = pipeline.evaluate(dataset, batch_size=args.batch_size,
                                                 zero_shot=True, num_workers=args.workers)
    if args.plots:
        write_plots(args.plots, results)
    if args.json:
        print_json({
            "artifact": str(args.artifact),
            "num_images": len(dataset),
            "num_classes": dataset.num_classes,
            "results": {name: r.to_dict() for name, r in results.items()},
        })
        return EXIT_OK
    write(f"{args.artifact}: {len(dataset)} images, {dataset.num_classes} classes")
    rows = [
        (name.replace("_", "-"), f"{r.accuracy:.2f}", f"{r.mean_per_class_accuracy:.2f}")
        for name, r in results.items()
    ]
    write(table(("classifier", "accuracy %", "mean per class %"), rows, (False, True, True)))
    if args.per_class:
        write()
        names = list(results)
        per_class_rows = [
            (label, *(_percent(results[n].per_class.get(label)) for n in names))
            for label in results["tuned"].per_class
        ]
        headers = ("class", *(f"{n.replace('_', '-')} %" for n in names))
        write(table(headers, per_class_rows, (False, *([True] * len(names)))))
    return EXIT_OK


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _expand_images(items: Sequence[str], *, missing_ok: bool = False) -> list[Path]:
    """Image paths; a folder stands for the images in it, by the one folder-listing rule
    (:func:`cotprompt.data.sources.list_image_files`: recursively, sorted, hidden entries
    skipped). A file named explicitly is used whatever its name.

    Args:
        missing_ok: Keep paths that do not exist (``--on-bad-image skip`` skips them later).

    Raises:
        DataError: Paths that do not exist (all named; unless ``missing_ok``), or a folder
            without images.
    """
    from cotprompt.data.sources import IMAGE_EXTENSIONS, list_image_files

    missing = [item for item in items if not Path(item).exists()]
    if missing and not missing_ok:
        shown = ", ".join(repr(m) for m in missing[:10])
        raise DataError(
            f"{len(missing)} image path(s) do not exist: {shown}"
            + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        )
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = list_image_files(path)
            if not found:
                raise DataError(
                    f"folder {item!r} holds no images with extensions {list(IMAGE_EXTENSIONS)} "
                    "(hidden files and folders are skipped)"
                )
            paths.extend(found)
        else:
            paths.append(path)
    return paths


def _prediction_dict(image: str, prediction: Prediction) -> dict[str, Any]:
    return {
        "image": image,
        "label": prediction.label,
        "index": prediction.index,
        "score": prediction.score,
        "top_k": [{"label": label, "score": score} for label, score in prediction.top_k],
    }


def _cmd_predict(args: argparse.Namespace) -> int:
    require_positive("--top-k", args.top_k)
    require_positive("--batch-size", args.batch_size)
    skip = args.on_bad_image == "skip"
    paths = _expand_images(args.images, missing_ok=skip)
    pipeline = load_pipeline(args)
    predictions = pipeline.predict([str(p) for p in paths], top_k=args.top_k,
                                   batch_size=args.batch_size, zero_shot=args.zero_shot,
                                   num_workers=args.workers,
                                   on_bad_image=args.on_bad_image)

    def skipped_dict(path: Path) -> dict[str, Any]:  # why an image was skipped
        from cotprompt.data.images import load_image

        try:
            load_image(path)
        except DataError as exc:
            reason = str(exc)
        else:  # readable now: it changed while predict ran
            reason = f"cannot read image {str(path)!r}"
        return {"image": str(path), "skipped": True, "error": reason}

    records = [
        _prediction_dict(str(p), pred) if pred is not None else skipped_dict(p)
        for p, pred in zip(paths, predictions, strict=True)
    ]
    skipped = [record for record in records if record.get("skipped")]  # warned by predict
    if args.json:
        print_json(records)
        return EXIT_OK
    rows = [
        (
            record["image"],
            record["label"],
            f"{record['score']:.3f}",
            ", ".join(f"{t['label']} {t['score']:.3f}" for t in record["top_k"][1:]),
        )
        for record in records
        if not record.get("skipped")
    ]
    write(table(("image", "label", "score", "next"), rows, (False, False, True, False)))
    if skipped:
        write(f"skipped {len(skipped)} image(s) that could not be read:")
        for record in skipped:
            write(f"  {record['error']}")
    return EXIT_OK

