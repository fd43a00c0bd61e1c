"""The ``cotprompt`` command line: train, evaluate, predict, list plugins, run the offline demo.

Every subcommand is added by one ``_add_<name>`` function listed in :data:`SUBCOMMANDS`, which
builds its parser and sets ``handler`` (a function of the parsed arguments returning the exit
status); adding a command is adding such a function to the list.

Errors that cotprompt raises on purpose (:class:`~cotprompt.errors.CotpromptError`) are printed
as one line ``error: ...`` on stderr with exit status 2; ``--debug`` adds the traceback. Results
go to stdout (``--json`` for machine-readable output); logs and progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotprompt._version import __version__
from cotprompt.cli_hub import add_hub_commands
from cotprompt.cli_tasks import add_task_commands
from cotprompt.errors import ArtifactError, ConfigError, CotpromptError, DataError

if TYPE_CHECKING:
    from cotprompt.data.records import ImageClassificationDataset
    from cotprompt.evaluation.metrics import EvaluationResult
    from cotprompt.pipeline import CoTPipeline, Prediction
    from cotprompt.training.config import TrainingConfig

logger = logging.getLogger("cotprompt.cli")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # argparse's status for bad usage; also used for cotprompt's own errors

DEMO_OUTPUT = "cotprompt-demo-output"
TRAIN_OUTPUT = "cotprompt-output"

#: Training options of the demo on a random-weight backbone (``cotprompt-tiny``): SGD at CoOp's
#: learning rate barely moves random features, AdamW at 0.01 does.
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
RANDOM_BACKBONE_EPOCHS: dict[str, int] = {"coop": 60, "cocoop": 40, "cotpt": 15}

Handler = Callable[[argparse.Namespace], int]


# -- output helpers ----------------------------------------------------------------------------


def _out(text: str = "") -> None:
    """Write a line of the command's result to stdout."""
    sys.stdout.write(text + "\n")


def _print_json(value: Any) -> None:
    _out(json.dumps(value, indent=2))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[bool]) -> str:
    """A plain-text table; ``right[i]`` right-aligns column i."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if align else cell.ljust(width)
            for cell, width, align in zip(row, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _one_line(exc: BaseException) -> str:
    """An exception message on one line (multi-line messages are joined)."""
    lines = [part.strip() for part in str(exc).splitlines() if part.strip()]
    return " ".join(lines) or type(exc).__name__


# -- logging ----------------------------------------------------------------------------------

_handler: logging.Handler | None = None


class _CliLogFilter(logging.Filter):
    """Drop records that a library's own handler already printed (huggingface_hub installs one),
    so that no message appears twice, and open_clip's warning that a model has random weights,
    which cotprompt only builds when asked to (``pretrained: null``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "root" and record.getMessage().startswith(
            "No pretrained weights loaded for model"
        ):
            return False
        current: logging.Logger | None = logging.getLogger(record.name)
        root = logging.getLogger()
        while current is not None and current is not root:
            if current.handlers:
                return False
            if not current.propagate:
                break
            current = current.parent  # type: ignore[assignment]
        return True


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Send log records to stderr at the level the flags ask for.

    Default: cotprompt's INFO messages and everyone's warnings; ``-v``: cotprompt's DEBUG
    messages; ``-vv``: every library's DEBUG messages; ``--quiet``: warnings and errors only.
    Calling it again replaces the handler it installed before (and nothing else).
    """
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    _handler.addFilter(_CliLogFilter())
    root.addHandler(_handler)
    package = logging.getLogger("cotprompt")
    if quiet:
        package.setLevel(logging.WARNING)
        _handler.setLevel(logging.WARNING)
        return
    _handler.setLevel(logging.DEBUG)
    package.setLevel(logging.INFO if verbose == 0 else logging.DEBUG)
    if verbose >= 2:
        root.setLevel(logging.DEBUG)


# -- argument parsing -------------------------------------------------------------------------


def _common_options() -> argparse.ArgumentParser:
    """Options accepted before or after the subcommand (``cotprompt -v train`` or
    ``cotprompt train -v``)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("output options")
    group.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS,
        help="more log messages (-v: debug messages of cotprompt, -vv: of every library)",
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
        help="only warnings and errors on stderr, no progress bars",
    )
    group.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS,
        help="print the traceback of errors",
    )
    return common


def _add_device(parser: argparse.ArgumentParser, threads_default: str = "torch's default") -> None:
    parser.add_argument(
        "--device", default=None,
        help="where to run (cpu, cuda, cuda:1, ...); default: CUDA when available, else CPU",
    )
    parser.add_argument(
        "--threads", type=int, metavar="N",
        help=f"CPU threads for torch (default: {threads_default})",
    )


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
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    _add_device(parser)
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
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch")
    parser.add_argument("--revision", help="Hub branch, tag or commit of ARTIFACT")
    parser.add_argument("--json", action="store_true", help="print JSON")
    _add_device(parser)
    parser.set_defaults(handler=_cmd_eval)


def _add_predict(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "predict", parents=[common], help="predict the labels of images",
        description="Predict labels with a saved pipeline; a folder stands for its images.",
    )
    parser.add_argument("artifact", metavar="ARTIFACT", help="artifact folder or Hub repo id")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    parser.add_argument("--top-k", type=int, default=5, help="labels per image (default: 5)")
    parser.add_argument(
        "--zero-shot", action="store_true", help="use the untuned (zero-shot) classifier"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch")
    parser.add_argument("--revision", help="Hub branch, tag or commit of ARTIFACT")
    parser.add_argument("--json", action="store_true", help="print JSON")
    _add_device(parser)
    parser.set_defaults(handler=_cmd_predict)


def _add_plugins(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "plugins", parents=[common], help="list the registered components",
        description=(
            "List every registered backbone, generator, tuner and aggregator with the package "
            "providing it. Plugins that failed to load are reported on stderr."
        ),
    )
    parser.add_argument(
        "--json", action="store_true",
        help="print a JSON list of {kind, name, package, version, plugin, class}",
    )
    parser.set_defaults(handler=_cmd_plugins)


def _add_demo(subparsers: Any, common: argparse.ArgumentParser) -> None:
    from cotprompt.backbones.open_clip_backbone import TINY_MODEL

    parser = subparsers.add_parser(
        "demo", parents=[common], help="train CoOp, CoCoOp and CoT-PT on bundled digits",
        description=(
            "The offline demo: few-shot training of CoOp, CoCoOp and CoT-PT on scikit-learn's "
            "bundled digits (no download), sharing one backbone; prints zero-shot vs tuned "
            "accuracy, saves every artifact, reloads one and checks its predictions. With the "
            f"default random-weight {TINY_MODEL} model accuracies are near chance; use e.g. "
            "--model ViT-B-16 --pretrained openai for real numbers (weights are downloaded by "
            "open_clip on first use)."
        ),
    )
    parser.add_argument(
        "--model", default=TINY_MODEL, help=f"open_clip architecture (default: {TINY_MODEL})"
    )
    parser.add_argument(
        "--pretrained",
        help=f"open_clip pretrained tag, a checkpoint path, or `none` for random weights "
        f"(default: none for {TINY_MODEL}, openai otherwise)",
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
    parser.add_argument("--seed", type=int, default=1, help="sampling and training seed")
    parser.add_argument(
        "--test-images", type=int, metavar="N",
        help="evaluate on N test images spread evenly over the classes (default: all 602)",
    )
    parser.add_argument(
        "--output", default=DEMO_OUTPUT, metavar="DIR",
        help=f"where the artifacts go, one folder per method (default: ./{DEMO_OUTPUT})",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    _add_device(parser, threads_default=f"1 for {TINY_MODEL}, whose tiny matrices gain nothing "
                "from more; torch's default otherwise")
    parser.set_defaults(handler=_cmd_demo)


#: The subcommands, in help order. To add one, write ``_add_<name>(subparsers, common)``.
SUBCOMMANDS: list[Callable[[Any, argparse.ArgumentParser], None]] = [
    _add_train,
    _add_eval,
    _add_predict,
    _add_plugins,
    _add_demo,
    add_hub_commands,
    add_task_commands,
]


def build_parser() -> argparse.ArgumentParser:
    """The ``cotprompt`` argument parser with every subcommand of :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="cotprompt",
        description=(
            "Few-shot prompt tuning of CLIP models: CoOp, CoCoOp and chain-of-thought prompt "
            "tuning (CoT-PT)."
        ),
        epilog="Run `cotprompt COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"cotprompt {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help=argparse.SUPPRESS)
    parser.add_argument("-q", "--quiet", action="store_true", default=False, help=argparse.SUPPRESS)
    parser.add_argument("--debug", action="store_true", default=False, help=argparse.SUPPRESS)
    _add_subparsers(parser)
    return parser


def _add_subparsers(parser: argparse.ArgumentParser) -> None:
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    subparsers.required = True
    common = _common_options()
    for add in SUBCOMMANDS:
        add(subparsers, common)


# -- commands ---------------------------------------------------------------------------------


def _resolve(value: str, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def _cmd_train(args: argparse.Namespace) -> int:
    from cotprompt.config_files import load_pipeline_config, read_mapping
    from cotprompt.data.spec import DataSpec, build_datasets
    from cotprompt.pipeline import CoTPipeline
    from cotprompt.plugins import get_registry
    from cotprompt.types import Task

    config_path = Path(args.config)
    raw = read_mapping(config_path)
    base_dir = config_path.resolve().parent
    spec = DataSpec.from_mapping(raw.pop("data", None))
    output_value = raw.pop("output", None)
    if output_value is not None and not isinstance(output_value, str):
        raise ConfigError(f"`output` must be a folder path, got {output_value!r}")
    config = load_pipeline_config(raw)
    if args.output:
        output = Path(args.output)
    elif output_value:
        output = _resolve(output_value, base_dir)
    else:
        output = Path(TRAIN_OUTPUT)

    training = config.training
    updates: dict[str, Any] = {}
    if args.quiet:
        updates["progress"] = False
    if training.checkpoint_dir is None and (args.resume or training.checkpoint_every):
        updates["checkpoint_dir"] = str(output / "checkpoints")
    training = training.model_copy(update=updates)

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

    zero_shot = None
    if test is not None:
        # the untuned baseline: reported, not recorded in the model card (it is not this model's)
        zero_shot = pipeline.evaluate(test, zero_shot=True)
        logger.info("zero-shot test accuracy: %.2f%%", zero_shot.accuracy)
    result = pipeline.fit(train, val=val, resume_from=args.resume)
    tuned = pipeline.evaluate(test, split="test") if test is not None else None
    saved = pipeline.save_pretrained(output)

    summary = {
        "output": str(saved),
        "tuner": config.tuner.name,
        "num_train_images": len(train),
        "num_classes": train.num_classes,
        "epochs": training.epochs,
        "seconds": round(result.seconds, 3),
        "final_loss": result.history[-1]["loss"] if result.history else None,
        "zero_shot_test_accuracy": zero_shot.accuracy if zero_shot is not None else None,
        "metrics": pipeline.metrics,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
    }
    if args.json:
        _print_json(summary)
        return EXIT_OK
    loss = summary["final_loss"]
    _out(
        f"trained {config.tuner.name} on {len(train)} images ({train.num_classes} classes), "
        f"{training.epochs} epochs in {result.seconds:.1f} s"
        + (f"; final loss {loss:.4f}" if isinstance(loss, float) else "")
    )
    if tuned is not None and zero_shot is not None:
        _out(
            f"test accuracy: zero-shot {zero_shot.accuracy:.2f}%, tuned {tuned.accuracy:.2f}% "
            f"(mean per class {tuned.mean_per_class_accuracy:.2f}%) on {tuned.num_samples} images"
        )
    _out(f"saved to {saved}")
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


def _result_dict(result: EvaluationResult) -> dict[str, Any]:
    return result.to_dict()


def _cmd_eval(args: argparse.Namespace) -> int:
    from cotprompt.pipeline import CoTPipeline

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    dataset = _eval_dataset(args)
    pipeline = CoTPipeline.from_pretrained(args.artifact, revision=args.revision,
                                           device=args.device)
    _bind_dataset_classes(pipeline, dataset)
    results = {"tuned": pipeline.evaluate(dataset, batch_size=args.batch_size)}
    if args.zero_shot:
        results["zero_shot"] = pipeline.evaluate(dataset, batch_size=args.batch_size,
                                                 zero_shot=True)
    if args.json:
        _print_json({
            "artifact": str(args.artifact),
            "num_images": len(dataset),
            "num_classes": dataset.num_classes,
            "results": {name: _result_dict(r) for name, r in results.items()},
        })
        return EXIT_OK
    _out(f"{args.artifact}: {len(dataset)} images, {dataset.num_classes} classes")
    rows = [
        (name.replace("_", "-"), f"{r.accuracy:.2f}", f"{r.mean_per_class_accuracy:.2f}")
        for name, r in results.items()
    ]
    _out(_table(("classifier", "accuracy %", "mean per class %"), rows, (False, True, True)))
    if args.per_class:
        _out()
        names = list(results)
        per_class_rows = [
            (label, *(_percent(results[n].per_class.get(label)) for n in names))
            for label in results["tuned"].per_class
        ]
        headers = ("class", *(f"{n.replace('_', '-')} %" for n in names))
        _out(_table(headers, per_class_rows, (False, *([True] * len(names)))))
    return EXIT_OK


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _expand_images(items: Sequence[str]) -> list[Path]:
    """Image paths; a folder stands for the images in it (recursively, sorted).

    Raises:
        DataError: Paths that do not exist (all named), or a folder without images.
    """
    from cotprompt.data import IMAGE_EXTENSIONS

    missing = [item for item in items if not Path(item).exists()]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:10])
        raise DataError(
            f"{len(missing)} image path(s) do not exist: {shown}"
            + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        )
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise DataError(
                    f"folder {item!r} holds no images with extensions {list(IMAGE_EXTENSIONS)}"
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
    from cotprompt.pipeline import CoTPipeline

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    paths = _expand_images(args.images)
    pipeline = CoTPipeline.from_pretrained(args.artifact, revision=args.revision,
                                           device=args.device)
    predictions = pipeline.predict([str(p) for p in paths], top_k=args.top_k,
                                   batch_size=args.batch_size, zero_shot=args.zero_shot)
    records = [_prediction_dict(str(p), pred) for p, pred in zip(paths, predictions, strict=True)]
    if args.json:
        _print_json(records)
        return EXIT_OK
    rows = [
        (
            record["image"],
            record["label"],
            f"{record['score']:.3f}",
            ", ".join(f"{t['label']} {t['score']:.3f}" for t in record["top_k"][1:]),
        )
        for record in records
    ]
    _out(_table(("image", "label", "score", "next"), rows, (False, False, True, False)))
    return EXIT_OK


def _cmd_plugins(args: argparse.Namespace) -> int:
    from cotprompt.plugins import get_registry

    registry = get_registry()
    for failure in registry.failures:
        sys.stderr.write(
            f"warning: plugin {failure.name!r} (package {failure.package}) failed to load and "
            f"was skipped: {failure.error}\n"
        )
        if getattr(args, "debug", False) and failure.traceback:
            sys.stderr.write(failure.traceback)
    for duplicate in registry.duplicates:
        sys.stderr.write(
            f"warning: {duplicate.kind} {duplicate.name!r} is registered by "
            f"{duplicate.kept.package} and {duplicate.ignored.package}; using "
            f"{duplicate.kept.package}'s\n"
        )
    components = registry.to_json_list()
    if args.json:
        _print_json(components)
        return EXIT_OK
    rows = [(c["kind"], c["name"], c["package"], c["version"] or "-") for c in components]
    _out(_table(("kind", "name", "package", "version"), rows, (False, False, False, False)))
    return EXIT_OK


# -- demo -------------------------------------------------------------------------------------


def _parse_pretrained(value: str | None, model: str) -> str | None:
    from cotprompt.backbones.open_clip_backbone import TINY_MODEL

    if value is None:
        return None if model == TINY_MODEL else "openai"
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
    the published recipe (:class:`~cotprompt.training.config.TrainingConfig`'s defaults).
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
    from cotprompt.backbones.open_clip_backbone import TINY_MODEL

    methods = _parse_methods(args.methods)
    if args.shots < 1:
        raise ConfigError(f"--shots must be >= 1, got {args.shots}")
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
    if args.test_images is not None and args.test_images < 1:
        raise ConfigError(f"--test-images must be >= 1, got {args.test_images}")
    pretrained = _parse_pretrained(args.pretrained, args.model)
    if args.threads is None and args.model == TINY_MODEL:
        with _torch_threads(1):
            return _run_demo(args, methods, pretrained)
    return _run_demo(args, methods, pretrained)


def _run_demo(args: argparse.Namespace, methods: list[str], pretrained: str | None) -> int:
    from cotprompt.data import digits_dataset, few_shot
    from cotprompt.pipeline import CoTPipeline
    from cotprompt.plugins import get_registry

    random_backbone = pretrained is None
    progress = not args.quiet
    output = Path(args.output)
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
        _print_json(summary)
        return EXIT_OK
    _out(
        f"cotprompt demo: {args.model} (pretrained: {pretrained or 'none, random weights'}), "
        f"digits, {args.shots} shots x {train.num_classes} classes = {len(train)} training "
        f"images, {len(test)} test images"
    )
    _out()
    table_rows = [
        (r["method"], r["epochs"], f"{r['zero_shot_accuracy']:.2f}",
         f"{r['tuned_accuracy']:.2f}", f"{r['train_seconds']:.1f}")
        for r in rows
    ]
    _out(_table(("method", "epochs", "zero-shot acc %", "tuned acc %", "train s"),
                table_rows, (False, True, True, True, True)))
    if random_backbone:
        _out("(random-weight backbone: accuracies stay near chance, 10%; try "
             "--model ViT-B-16 --pretrained openai for real numbers)")
    _out()
    _out(f"artifacts saved under {output}/: " + ", ".join(methods))
    _out(f"reloaded {output / method} with CoTPipeline.from_pretrained; predictions on "
         f"{len(samples)} test images:")
    for sample in samples:
        _out(f"  true {sample['true']:<6} -> {sample['predicted']:<6} ({sample['score']:.3f})")
    _out("the reloaded pipeline's predictions equal the in-memory ones "
         f"(total {summary['seconds']:.0f} s)")
    return EXIT_OK


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Use ``threads`` CPU threads for torch inside the block (``None``: leave as is)."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# -- entry point ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the ``cotprompt`` command line.

    Args:
        argv: The arguments after the program name; default ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 2 on bad usage or a cotprompt error (printed as one line
        ``error: ...`` on stderr), 1 on a file-system error, 130 when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    configure_logging(getattr(args, "verbose", 0) or 0, bool(getattr(args, "quiet", False)))
    handler: Handler = args.handler
    try:
        with _torch_threads(getattr(args, "threads", None)):
            return handler(args)
    except CotpromptError as exc:
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"error: {_one_line(exc)}\n")
        return EXIT_USAGE
    except OSError as exc:
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"error: {_one_line(exc)}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
