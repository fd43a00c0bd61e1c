"""``cotprompt interpret``: the nearest words of a saved pipeline's learned context vectors.

    cotprompt interpret ARTIFACT [--top-k K] [--image PATH] [--metric euclidean|cosine] [--json]

Prints, for each context vector of each chain step (and label, for class-specific context), the
``K`` nearest tokens of the backbone's vocabulary with their distances; with ``--image`` (cocoop,
cotpt), those of the context shifted by the meta-net output for that image. See
:mod:`cotprompt.pipeline.interpret`.
"""

from __future__ import annotations

import argparse
from typing import Any

from cotprompt.cli._common import (
    EXIT_OK,
    add_allow_pickle,
    add_device,
    add_json,
    load_pipeline,
    print_json,
    require_positive,
    table,
    write,
)

__all__ = ["add_commands"]


def add_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``interpret`` to the ``cotprompt`` parser.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.
        common: The parent parser of the options every subcommand accepts.
    """
    parser = subparsers.add_parser(
        "interpret", parents=[common], help="the nearest words of the learned context vectors",
        description=(
            "List, for each learned context vector of each chain step (and label, for "
            "class-specific context), the nearest tokens of the backbone's vocabulary with their "
            "distances (the research code's interpret_prompt.py). With --image, for "
            "image-conditioned tuners (cocoop, cotpt), the context shifted by the meta-net "
            "output for that image. Visual prompts are not in the word-embedding space: "
            "multimodal's are left out, vpt is refused."
        ),
    )
    parser.add_argument("artifact", metavar="ARTIFACT", help="artifact folder or Hub repo id")
    parser.add_argument("--top-k", type=int, default=5, metavar="K",
                        help="tokens per context vector (default: 5)")
    parser.add_argument("--image", metavar="PATH",
                        help="shift the context by the meta-net output for this image "
                             "(cocoop, cotpt)")
    parser.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean",
                        help="the distance: euclidean (default, as the research code) or cosine "
                             "(1 - cosine similarity)")
    parser.add_argument("--revision", help="Hub branch, tag or commit of ARTIFACT")
    add_json(parser, "print a JSON object {tuner, metric, top_k, vocabulary_size, image, notes, "
                     "steps}")
    add_allow_pickle(parser)
    add_device(parser)
    parser.set_defaults(handler=_cmd_interpret)


def _cmd_interpret(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cotprompt.errors import ConfigError, DataError
    from cotprompt.pipeline.interpret import MAX_TOP_K, nearest_words

    require_positive("--top-k", args.top_k)
    if args.top_k > MAX_TOP_K:
        raise ConfigError(f"--top-k must be at most {MAX_TOP_K}, got {args.top_k}")
    if args.image is not None:  # checked before loading the model
        shown = args.image if len(args.image) <= 200 else args.image[:200] + "..."
        try:
            regular = Path(args.image).is_file()
        except OSError as exc:  # a name too long for the file system...
            raise DataError(f"--image {shown!r}: {exc.strerror or exc}") from exc
        if not regular:
            why = "not a regular file" if Path(args.image).exists() else "no such file"
            raise DataError(f"--image {shown!r}: {why}")
    pipeline = load_pipeline(args)
    result = nearest_words(pipeline, top_k=args.top_k, image=args.image, metric=args.metric)
    if args.json:
        print_json(result.to_json())
        return EXIT_OK
    shifted = f", context shifted by image {result.image}" if result.image else ""
    write(f"{result.tuner}: the {result.top_k} nearest of {result.vocabulary_size} tokens to "
          f"each context vector ({result.metric} distance{shifted})")
    class_specific = any(c.label is not None for s in result.steps for c in s.contexts)
    headers = ["step", "ctx", *(["label"] if class_specific else []), "nearest tokens"]
    rows = []
    for step in result.steps:
        for context in step.contexts:
            nearest = ", ".join(f"{t.token} {t.distance:.4f}" for t in context.nearest)
            label = [context.label or ""] if class_specific else []
            rows.append([f"{step.index} {step.name}", str(context.position), *label, nearest])
    write(table(headers, rows, [False, True, *([False] if class_specific else []), False]))
    for note in result.notes:
        write(f"note: {note}")
    return EXIT_OK
