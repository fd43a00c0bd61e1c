"""Benchmark: evaluating a 25,000-caption retrieval gallery (the size of MSCOCO's 5k test split).

Builds a gallery of 5,000 images with 5 captions each from ``../shared/data/cifar10-mini`` (the
1,500 real images, reused in turn; no caption data set can be downloaded here) with synthetic
captions of COCO-like length made from the image's label and random words (seeded), then runs
``evaluate_retrieval`` with the random-weight ``cotprompt-tiny`` backbone for each method, each in
its own process so that its peak memory (maximum resident set size; peak CUDA memory on a GPU) is
its own: CoOp scores every pair exactly (``full``); CoCoOp and CoT-PT are image-conditioned and
use the ``two-stage`` mode (rank with a stand-in image's context, re-score the top ``rerank_k``
per image and per caption). Writes a Markdown table.

Usage::

    python benchmarks/bench_retrieval_gallery.py --output benchmarks/results/retrieval_gallery.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

logger = logging.getLogger("bench_retrieval_gallery")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ADJECTIVES = ("small", "large", "old", "shiny", "dark", "bright", "wet", "dusty", "red", "white",
              "black", "brown", "blue", "green", "tiny", "lonely", "busy", "quiet")
PLACES = ("on a road", "in a field", "near the water", "in the snow", "next to a fence",
          "under a tree", "at the park", "in a city street", "on the grass", "by a building",
          "in the sky", "on a beach", "in a forest", "at night", "in the rain")
NOTES = (
    "Notes:",
    "",
    "- *image features*: encoding the 5,000 images; *scoring*: ranking the captions (and, in "
    "two-stage mode, re-scoring); *RSS before*: the process after loading torch, open_clip and "
    "the model; *peak RSS*: the process's maximum resident set size over the whole run (the "
    "gallery is never held as an N x U matrix: captions are bound `caption_chunk` = 1024 at a "
    "time and the rankings are running top-k lists).",
    "- CoOp's prompts do not depend on the image: U x K = 24,965 text passes, exact. CoCoOp "
    "(K = 1) and CoT-PT (K = 3) are image-conditioned: `full` scoring would be N x U x K = "
    "125 million (CoCoOp) or 374 million (CoT-PT) text passes, hours on this CPU; the "
    "two-stage mode scores U x K passes with a stand-in image's prompts, then re-scores at most "
    "rerank_k x (N + U) = 300,000 image-caption pairs (x K) with their own prompts.",
    "- Recalls are near zero: the backbone has random weights and the prompts are untrained; "
    "the figures measure cost only.",
    "- The machine is shared with other jobs (load average about 4 on 2 cores during the "
    "run), so times vary by tens of percent between runs.",
)
VERBS = ("standing", "sitting", "waiting", "moving", "resting", "parked", "shown", "seen",
         "photographed", "looking around")


def gallery(num_images: int, per_image: int, seed: int):
    """Images (real files, reused in turn) with synthetic captions."""
    from cotprompt.data.records import ImageRecord
    from cotprompt.tasks import RetrievalDataset

    root = SHARED / "cifar10-mini"
    files = sorted(root.glob("*/*/*.jpg"))
    if not files:
        raise SystemExit(f"no images under {root}")
    rng = random.Random(seed)
    images, captions = [], []
    for n in range(num_images):
        path = files[n % len(files)]
        label = path.parent.name
        images.append(ImageRecord(path, 0))
        captions.append([
            f"a {rng.choice(ADJECTIVES)} {label} {rng.choice(VERBS)} {rng.choice(PLACES)} with "
            f"a {rng.choice(ADJECTIVES)} {rng.choice(ADJECTIVES)} background."
            for _ in range(per_image)
        ])
    return RetrievalDataset(images, captions)


def peak_memory_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(args: argparse.Namespace) -> dict:
    """One method in this process; returns the measurements (the two steps of
    ``evaluate_retrieval``, timed apart)."""
    from cotprompt.backbones import TINY_MODEL
    from cotprompt.tasks import RetrievalEvalConfig, for_task
    from cotprompt.tasks.loops import eval_features
    from cotprompt.tasks.retrieval import prepare, score_gallery

    torch.manual_seed(0)
    dataset = gallery(args.images, args.captions_per_image, args.seed)
    pipeline = for_task("retrieval", args.run_one, backbone=None, model_name=TINY_MODEL,
                        pretrained=None, device=args.device)
    prepare(pipeline)
    config = RetrievalEvalConfig(mode=args.mode, rerank_k=args.rerank_k,
                                 caption_chunk=args.caption_chunk)
    baseline = peak_memory_mb()
    cuda = pipeline.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    features = eval_features(pipeline, dataset.images, 256)
    image_seconds = time.perf_counter() - started
    result = score_gallery(pipeline, features, dataset, config)
    total = time.perf_counter() - started
    return {
        "method": args.run_one,
        "mode": result.mode,
        "rerank_k": result.rerank_k,
        "images": result.num_images,
        "captions": result.num_captions,
        "unique_captions": result.num_unique_captions,
        "image_seconds": round(image_seconds, 2),
        "scoring_seconds": round(result.seconds, 2),
        "total_seconds": round(total, 2),
        "rss_before_mb": round(baseline, 1),
        "peak_rss_mb": round(peak_memory_mb(), 1),
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
        "i2t": result.image_to_text,
        "t2i": result.text_to_image,
        "device": str(pipeline.device),
        "threads": torch.get_num_threads(),
    }


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} CPU cores{memory}{gpu}; {platform.platform()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--captions-per-image", type=int, default=5)
    parser.add_argument("--methods", default="coop,cocoop,cotpt")
    parser.add_argument("--mode", default="auto", choices=("auto", "full", "two-stage"))
    parser.add_argument("--rerank-k", type=int, default=10)
    parser.add_argument("--caption-chunk", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the tiny model gains nothing more)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    if args.run_one:
        print(json.dumps(run_one(args)))
        return 0
    rows = []
    for method in args.methods.split(","):
        command = [sys.executable, __file__, "--run-one", method,
                   *[f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                     if k not in ("run_one", "output", "methods") and v is not None]]
        logger.warning("running %s", method)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            return done.returncode
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]))
    report = render(rows, args)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report, encoding="utf-8")
    print(report)
    return 0


def render(rows: list[dict], args: argparse.Namespace) -> str:
    command = "python benchmarks/bench_retrieval_gallery.py " + " ".join(
        a for a in sys.argv[1:])
    lines = [
        "# Retrieval gallery evaluation: 25,000 captions",
        "",
        f"- date: {dt.date.today().isoformat()}",
        f"- machine: {machine()}",
        f"- torch {torch.__version__}, {args.threads} thread(s); backbone `cotprompt-tiny` "
        "(random weights, text encoder 2 layers x width 64, context 77)",
        f"- command: `{command.strip()}`",
        f"- gallery: {rows[0]['images']} images (cifar10-mini files reused in turn), "
        f"{rows[0]['captions']} synthetic captions ({rows[0]['unique_captions']} distinct)",
        "",
        "| method | mode | image features s | scoring s | total s | RSS before MB "
        "| peak RSS MB | peak CUDA MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        mode = r["mode"] + (f" (rerank_k={r['rerank_k']})" if r["rerank_k"] else "")
        lines.append(
            f"| {r['method']} | {mode} | {r['image_seconds']} | {r['scoring_seconds']} | "
            f"{r['total_seconds']} | {r['rss_before_mb']} | {r['peak_rss_mb']} | "
            f"{r['peak_cuda_mb'] if r['peak_cuda_mb'] is not None else '-'} |"
        )
    lines += ["", *NOTES]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
