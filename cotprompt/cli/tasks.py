"""``cotprompt eval-retrieval`` and ``cotprompt eval-vqa``: evaluate saved pipelines on the
retrieval and VQA tasks.

:func:`add_commands` adds both to the ``cotprompt`` parser: each ``_add_<name>`` function builds a
command's parser and sets its ``handler`` to the ``_cmd_<name>`` function. Errors are raised as
:class:`~cotprompt.errors.CotpromptError` for the command line's common error handling. Results
go to stdout (``--json`` for a JSON object).

    cotprompt eval-retrieval ./prompts --karpathy dataset_flickr30k.json --image-root images/
    cotprompt eval-retrieval ./prompts --coco-captions captions_val2014.json --image-root val2014/
    cotprompt eval-retrieval ./prompts --csv captions.csv [--mode two-stage --rerank-k 20]
    cotprompt eval-vqa ./prompts --questions q.json --annotations a.json --image-root val2014/
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from cotprompt.cli._common import (
    EXIT_OK,
    add_allow_pickle,
    add_device,
    add_json,
    load_pipeline,
    print_json,
    require_positive,
    write,
)
from cotprompt.errors import ConfigError

__all__ = ["add_commands"]

# The task commands' own logger; the name predates the cli package and is kept as it was.
logger = logging.getLogger("cotprompt.cli_tasks")


def add_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``eval-retrieval`` and ``eval-vqa`` (in this order) to the ``cotprompt`` parser.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.
        common: The parent parser of the options every subcommand accepts.
    """
    _add_eval_retrieval(subparsers, common)
    _add_eval_vqa(subparsers, common)


def _add_task_options(parser: argparse.ArgumentParser) -> None:
    """The options that both task commands end with."""
    parser.add_argument("--zero-shot", action="store_true",
                        help="also evaluate the untuned model (zero-shot sentences)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per encoder batch")
    parser.add_argument("--revision", help="Hub branch, tag or commit of ARTIFACT")
    add_json(parser)
    add_device(parser, examples="cpu, cuda, ...", threads_default=None)
    add_allow_pickle(parser)


def _add_eval_retrieval(subparsers: Any, common: argparse.ArgumentParser) -> None:
    retrieval = subparsers.add_parser(
        "eval-retrieval", parents=[common],
        help="image-text retrieval recall@k of a saved pipeline",
        description=(
            "Evaluate a saved retrieval pipeline (a folder or a Hub repository id) on a gallery: "
            "recall@1/5/10 image -> text and text -> image, several captions per image as in "
            "the Flickr30k / MSCOCO protocol (see docs/retrieval.md)."
        ),
    )
    retrieval.add_argument("artifact", metavar="ARTIFACT", help="artifact folder or Hub repo id")
    source = retrieval.add_mutually_exclusive_group(required=True)
    source.add_argument("--karpathy", metavar="FILE",
                        help="a Karpathy split file (dataset_flickr30k.json, dataset_coco.json)")
    source.add_argument("--coco-captions", metavar="FILE",
                        help="a COCO caption annotation file (captions_val2014.json)")
    source.add_argument("--csv", metavar="FILE", help="a CSV with columns image,caption")
    retrieval.add_argument(
        "--image-root", metavar="DIR",
        help="image folder (required with --karpathy / --coco-captions; default for --csv: the "
        "CSV's folder)",
    )
    retrieval.add_argument("--split", default="test",
                           help="split of the Karpathy file (default: test)")
    retrieval.add_argument("--mode", choices=("auto", "full", "two-stage"), default="auto",
                           help="scoring of image-conditioned prompts (default: auto)")
    retrieval.add_argument("--rerank-k", type=int, default=10,
                           help="candidates re-scored per query in two-stage mode (default: 10)")
    retrieval.add_argument("--caption-chunk", type=int, default=1024,
                           help="captions encoded at a time (default: 1024)")
    _add_task_options(retrieval)
    retrieval.set_defaults(handler=_cmd_eval_retrieval)


def _add_eval_vqa(subparsers: Any, common: argparse.ArgumentParser) -> None:
    vqa = subparsers.add_parser(
        "eval-vqa", parents=[common], help="VQA accuracy of a saved pipeline",
        description=(
            "Evaluate a saved VQA pipeline (a folder or a Hub repository id) on VQAv2-format "
            "question and annotation files: VQA accuracy over the pipeline's answer vocabulary, "
            "with the questions whose answers are outside it counted (see docs/vqa.md)."
        ),
    )
    vqa.add_argument("artifact", metavar="ARTIFACT", help="artifact folder or Hub repo id")
    vqa.add_argument("--questions", required=True, metavar="FILE", help="VQAv2 questions JSON")
    vqa.add_argument("--annotations", required=True, metavar="FILE",
                     help="VQAv2 annotations JSON")
    vqa.add_argument("--image-root", required=True, metavar="DIR", help="image folder")
    vqa.add_argument("--image-pattern", default="COCO_{split}_{image_id:012d}.jpg",
                     help="image file name from {image_id} and {split} "
                     "(default: COCO_{split}_{image_id:012d}.jpg)")
    vqa.add_argument("--split-name", metavar="NAME",
                     help="value of {split} (default: the questions file's data_subtype)")
    vqa.add_argument("--leave-one-out", action="store_true",
                     help="average the accuracy over the 10 choose 9 annotator subsets")
    _add_task_options(vqa)
    vqa.set_defaults(handler=_cmd_eval_vqa)


def _cmd_eval_retrieval(args: argparse.Namespace) -> int:
    from cotprompt.tasks import (
        RetrievalEvalConfig,
        evaluate_retrieval,
        from_caption_csv,
        from_coco_captions,
        from_karpathy,
    )

    require_positive("--batch-size", args.batch_size)
    config = RetrievalEvalConfig(mode=args.mode, rerank_k=args.rerank_k,
                                 caption_chunk=args.caption_chunk)
    if args.csv is not None:
        dataset = from_caption_csv(args.csv, root=args.image_root)
    else:
        if args.image_root is None:
            raise ConfigError("--karpathy and --coco-captions need --image-root")
        if args.karpathy is not None:
            dataset = from_karpathy(args.karpathy, args.image_root, split=args.split)
        else:
            dataset = from_coco_captions(args.coco_captions, args.image_root)
    pipeline = load_pipeline(args)
    results = {"tuned": evaluate_retrieval(pipeline, dataset, batch_size=args.batch_size,
                                           config=config)}
    if args.zero_shot:
        results["zero_shot"] = evaluate_retrieval(pipeline, dataset, batch_size=args.batch_size,
                                                  zero_shot=True, config=config)
    if args.json:
        print_json({
            "artifact": str(args.artifact),
            "num_images": dataset.num_images,
            "num_captions": dataset.num_captions,
            "results": {name: r.to_dict() for name, r in results.items()},
        })
        return EXIT_OK
    write(f"{args.artifact}: {dataset.num_images} images, {dataset.num_captions} captions")
    for name, r in results.items():
        i2t = "  ".join(f"R@{k} {v:6.2f}" for k, v in r.image_to_text.items())
        t2i = "  ".join(f"R@{k} {v:6.2f}" for k, v in r.text_to_image.items())
        write(f"{name.replace('_', '-')} ({r.mode}): image->text {i2t} | text->image {t2i} | "
              f"rsum {r.rsum:.2f}")
    return EXIT_OK


def _cmd_eval_vqa(args: argparse.Namespace) -> int:
    from cotprompt.tasks import VQAEvalConfig, evaluate_vqa, from_vqa_json

    require_positive("--batch-size", args.batch_size)
    dataset = from_vqa_json(args.questions, args.annotations, args.image_root,
                            image_pattern=args.image_pattern, split=args.split_name)
    pipeline = load_pipeline(args)
    config = VQAEvalConfig(leave_one_out=args.leave_one_out)
    results = {"tuned": evaluate_vqa(pipeline, dataset, batch_size=args.batch_size,
                                     config=config)}
    if args.zero_shot:
        results["zero_shot"] = evaluate_vqa(pipeline, dataset, batch_size=args.batch_size,
                                            zero_shot=True, config=config)
    if args.json:
        print_json({
            "artifact": str(args.artifact),
            "num_questions": len(dataset),
            "num_images": len(dataset.images),
            "results": {name: r.to_dict() for name, r in results.items()},
        })
        return EXIT_OK
    write(f"{args.artifact}: {len(dataset)} questions on {len(dataset.images)} images, "
          f"{results['tuned'].num_answers}-answer vocabulary")
    for name, r in results.items():
        write(f"{name.replace('_', '-')}: VQA accuracy {r.accuracy:.2f}% "
              f"(oracle {r.oracle_accuracy:.2f}%)")
    tuned = results["tuned"]
    write(f"out of vocabulary: {tuned.num_out_of_vocabulary} question(s), "
          f"{tuned.num_unanswerable} with no human answer in the vocabulary")
    return EXIT_OK
