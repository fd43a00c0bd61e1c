"""``cotprompt eval-retrieval`` and ``cotprompt eval-vqa``: evaluate saved pipelines on the
retrieval and VQA tasks.

:func:`add_task_commands` adds both to the ``cotprompt`` parser. Each sets ``handler`` (a
function of the parsed arguments returning the exit status), as the other subcommands of
:mod:`cotprompt.cli.app` do; errors are raised as :class:`~cotprompt.errors.CotpromptError` for the
command line's common error handling. Results go to stdout (``--json`` for a JSON object).

    cotprompt eval-retrieval ./prompts --karpathy dataset_flickr30k.json --image-root images/
    cotprompt eval-retrieval ./prompts --coco-captions captions_val2014.json --image-root val2014/
    cotprompt eval-retrieval ./prompts --csv captions.csv [--mode two-stage --rerank-k 20]
    cotprompt eval-vqa ./prompts --questions q.json --annotations a.json --image-root val2014/
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from cotprompt.cli._common import _add_allow_pickle
from cotprompt.cli.output import _json_text
from cotprompt.errors import ConfigError

logger = logging.getLogger("cotprompt.cli.tasks")


def _write(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--zero-shot", action="store_true",
                        help="also evaluate the untuned model (zero-shot sentences)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per encoder batch")
    parser.add_argument("--revision", help="Hub branch, tag or commit of ARTIFACT")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--device", default=None,
        help="where to run (cpu, cuda, ...); default: CUDA when available, else CPU",
    )
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch")
    _add_allow_pickle(parser)


def add_task_commands(subparsers: Any, common: argparse.ArgumentParser | None = None) -> None:
    """Add ``eval-retrieval`` and ``eval-vqa`` to an argparse subparsers object.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.
        common: Optional parent parser of options shared by every subcommand.
    """
    parents = [common] if common is not None else []
    retrieval = subparsers.add_parser(
        "eval-retrieval", parents=parents,
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
    _add_common(retrieval)
    retrieval.set_defaults(handler=run_eval_retrieval)

    vqa = subparsers.add_parser(
        "eval-vqa", parents=parents, help="VQA accuracy of a saved pipeline",
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
    _add_common(vqa)
    vqa.set_defaults(handler=run_eval_vqa)


def _check_batch(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")


def _load(args: argparse.Namespace) -> Any:
    from cotprompt.pipeline.core import CoTPipeline

    return CoTPipeline.from_pretrained(args.artifact, revision=args.revision, device=args.device,
                                       allow_pickle=args.allow_pickle)


def run_eval_retrieval(args: argparse.Namespace) -> int:
    """``cotprompt eval-retrieval``: returns the exit status (0)."""
    from cotprompt.tasks import (
        RetrievalEvalConfig,
        evaluate_retrieval,
        from_caption_csv,
        from_coco_captions,
        from_karpathy,
    )

    _check_batch(args)
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
    pipeline = _load(args)
    results = {"tuned": evaluate_retrieval(pipeline, dataset, batch_size=args.batch_size,
                                           config=config)}
    if args.zero_shot:
        results["zero_shot"] = evaluate_retrieval(pipeline, dataset, batch_size=args.batch_size,
                                                  zero_shot=True, config=config)
    if args.json:
        _write(_json_text({
            "artifact": str(args.artifact),
            "num_images": dataset.num_images,
            "num_captions": dataset.num_captions,
            "results": {name: r.to_dict() for name, r in results.items()},
        }))
        return 0
    _write(f"{args.artifact}: {dataset.num_images} images, {dataset.num_captions} captions")
    for name, r in results.items():
        i2t = "  ".join(f"R@{k} {v:6.2f}" for k, v in r.image_to_text.items())
        t2i = "  ".join(f"R@{k} {v:6.2f}" for k, v in r.text_to_image.items())
        _write(f"{name.replace('_', '-')} ({r.mode}): image->text {i2t} | text->image {t2i} | "
               f"rsum {r.rsum:.2f}")
    return 0


def run_eval_vqa(args: argparse.Namespace) -> int:
    """``cotprompt eval-vqa``: returns the exit status (0)."""
    from cotprompt.tasks import VQAEvalConfig, evaluate_vqa, from_vqa_json

    _check_batch(args)
    dataset = from_vqa_json(args.questions, args.annotations, args.image_root,
                            image_pattern=args.image_pattern, split=args.split_name)
    pipeline = _load(args)
    config = VQAEvalConfig(leave_one_out=args.leave_one_out)
    results = {"tuned": evaluate_vqa(pipeline, dataset, batch_size=args.batch_size,
                                     config=config)}
    if args.zero_shot:
        results["zero_shot"] = evaluate_vqa(pipeline, dataset, batch_size=args.batch_size,
                                            zero_shot=True, config=config)
    if args.json:
        _write(_json_text({
            "artifact": str(args.artifact),
            "num_questions": len(dataset),
            "num_images": len(dataset.images),
            "results": {name: r.to_dict() for name, r in results.items()},
        }))
        return 0
    _write(f"{args.artifact}: {len(dataset)} questions on {len(dataset.images)} images, "
           f"{results['tuned'].num_answers}-answer vocabulary")
    for name, r in results.items():
        _write(f"{name.replace('_', '-')}: VQA accuracy {r.accuracy:.2f}% "
               f"(oracle {r.oracle_accuracy:.2f}%)")
    tuned = results["tuned"]
    _write(f"out of vocabulary: {tuned.num_out_of_vocabulary} question(s), "
           f"{tuned.num_unanswerable} with no human answer in the vocabulary")
    return 0
