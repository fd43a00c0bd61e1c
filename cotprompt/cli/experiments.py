"""``cotprompt sweep``: run a protocol's sweep (datasets x methods x seeds), one ``results.json``
per run, resumable and shardable.

    cotprompt sweep base2new --data $DATA --output runs/base2new
    cotprompt sweep few_shot --data $DATA --output runs/fs --methods coop,my-method.yaml \\
        --datasets caltech101,dtd --shots 1,2,4 --seeds 1,2,3 --shard 0/2
    cotprompt sweep cross_dataset --data $DATA --output runs/xd --epochs 2 --json

A run whose ``results.json`` exists is skipped, so the same command continues a killed sweep
(one written for other settings, such as other ``--epochs``, is refused: give another
``--output``); ``--shard i/n`` runs the i-th of n shards of whole training groups, and n
processes (GPUs, machines) writing into one output folder make the whole sweep.
``cotprompt report OUTPUT`` then writes the tables. See ``docs/protocols.md`` and
:mod:`cotprompt.experiments.runner`.
"""

from __future__ import annotations

import argparse
from typing import Any

from cotprompt.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    add_allow_pickle,
    add_device,
    add_json,
    logger,
    print_json,
    require_positive,
    write,
)
from cotprompt.errors import ConfigError

__all__ = ["add_commands", "parse_shard"]

_PROTOCOLS = ("base2new", "cross_dataset", "domain_generalization", "few_shot")


def add_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``sweep`` to the ``cotprompt`` parser.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.
        common: The parent parser of the options every subcommand accepts.
    """
    parser = subparsers.add_parser(
        "sweep", parents=[common], help="run a protocol's sweep of datasets x methods x seeds",
        description=(
            "Run every dataset x method x seed of a protocol (base2new, cross_dataset, "
            "domain_generalization, few_shot) on the datasets of $DATA, loading the backbone "
            "once and sharing frozen image features between runs; writes one results.json per "
            "run under OUTPUT, skips the runs already done (run the same command to continue a "
            "killed sweep; a finished run written for other settings is refused, never "
            "overwritten) and splits the runs with --shard. Then: cotprompt report OUTPUT."
        ),
    )
    parser.add_argument("protocol", metavar="PROTOCOL", choices=_PROTOCOLS,
                        help=f"one of {', '.join(_PROTOCOLS)}")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="$DATA: the datasets prepared as the research code's DATASETS.md")
    parser.add_argument("--output", required=True, metavar="DIR", help="the sweep's folder")
    parser.add_argument("--methods", metavar="LIST",
                        help="comma-separated presets (zsclip, coop, coop_ctxv1, cocoop, cotpt) "
                        "and method files (.yaml/.json); default: the papers' methods: "
                        "zsclip,coop_ctxv1,cocoop,cotpt for base2new, cross_dataset and "
                        "domain_generalization (CoCoOp's CoOp baseline has 4 vectors from 'a "
                        "photo of a'), zsclip,coop,cocoop,cotpt for few_shot (CoOp's 16 random "
                        "vectors)")
    parser.add_argument("--datasets", metavar="LIST",
                        help="comma-separated datasets: the trained ones (base2new, few_shot) "
                        "or the evaluated ones (cross_dataset, domain_generalization); default: "
                        "the protocol's")
    parser.add_argument("--source", metavar="NAME",
                        help="the training dataset of cross_dataset and domain_generalization "
                        "(default: imagenet)")
    parser.add_argument("--seeds", metavar="LIST",
                        help="comma-separated seeds, each >= 1 (default: 1,2,3)")
    parser.add_argument("--shots", metavar="LIST",
                        help="shots per class (default: 16; few_shot: 1,2,4,8,16)")
    parser.add_argument("--shard", metavar="I/N", default="0/1",
                        help="run the I-th (0-based) of N shards, each of whole training groups "
                        "(dataset, classes, shots, seed); give every shard the same other "
                        "options (default: 0/1, all)")
    parser.add_argument("--epochs", type=int, metavar="N",
                        help="train every method for N epochs instead of its published recipe "
                        "(quick runs)")
    parser.add_argument("--model-name", default="ViT-B-16",
                        help="open_clip architecture (default: ViT-B-16)")
    parser.add_argument("--pretrained", default="openai",
                        help="open_clip pretrained tag or weights file; 'none' for random "
                        "weights (default: openai)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="images per image-encoder batch (default: 64)")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="DataLoader workers decoding images (default: 0)")
    parser.add_argument("--no-share", action="store_true",
                        help="encode images in every run as separate train + eval runs would "
                        "(for comparison)")
    parser.add_argument("--keep-going", action="store_true",
                        help="on a failing run, report it and continue (exit status 2 at the "
                        "end; it is retried by the next sweep)")
    add_json(parser, "print a JSON summary")
    add_device(parser)
    add_allow_pickle(parser)
    parser.set_defaults(handler=_cmd_sweep)


def _names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        raise ConfigError(f"expected a comma-separated list, got {value!r}")
    return names


def _integers(option: str, value: str | None) -> list[int] | None:
    names = _names(value)
    if names is None:
        return None
    try:
        return [int(n) for n in names]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated integers, got {value!r}") from None


def parse_shard(value: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)``.

    Raises:
        ConfigError: Not ``i/n`` with ``0 <= i < n``.
    """
    index, _, count = value.partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        raise ConfigError(f"--shard takes i/n (such as 0/4), got {value!r}") from None
    if shard[1] < 1 or not 0 <= shard[0] < shard[1]:
        raise ConfigError(f"--shard i/n needs 0 <= i < n, got {value!r}")
    return shard


def _cmd_sweep(args: argparse.Namespace) -> int:
    from cotprompt.experiments.methods import resolve_methods
    from cotprompt.experiments.protocols import DEFAULT_METHODS, build_runs
    from cotprompt.experiments.runner import run_sweep

    require_positive("--epochs", args.epochs)
    require_positive("--batch-size", args.batch_size)
    if args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    shard = parse_shard(args.shard)
    methods = resolve_methods(_names(args.methods) or list(DEFAULT_METHODS[args.protocol]))
    specs = build_runs(
        args.protocol, datasets=_names(args.datasets), methods=list(methods),
        seeds=_integers("--seeds", args.seeds), shots=_integers("--shots", args.shots),
        source=args.source, zero_shot_methods={n for n, m in methods.items() if m.zero_shot},
    )
    pretrained = None if args.pretrained.strip().lower() == "none" else args.pretrained
    report = run_sweep(
        specs, data_root=args.data, output=args.output, methods=methods,
        model_name=args.model_name, pretrained=pretrained, allow_pickle=args.allow_pickle,
        device=args.device, training={"epochs": args.epochs} if args.epochs else None,
        shard=shard, share_features=not args.no_share, batch_size=args.batch_size,
        num_workers=args.workers, keep_going=args.keep_going,
        progress=not getattr(args, "quiet", False),
    )
    for run_id, message in report.failed.items():
        logger.error("%s failed: %s", run_id, message)
    if args.json:
        print_json({"protocol": args.protocol, "output": str(args.output),
                    "shard": list(shard), **report.to_dict()})
    else:
        write(f"{args.protocol}: {len(report.runs)} run(s) in shard {shard[0]}/{shard[1]}: "
              f"{len(report.done)} done now, {len(report.skipped)} done before, "
              f"{len(report.failed)} failed; {report.image_forwards} images encoded in "
              f"{report.seconds:.1f} s; results in {args.output}")
    return EXIT_USAGE if report.failed else EXIT_OK
