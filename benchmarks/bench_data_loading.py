"""Benchmark: a CoOp training step through ``fit`` with images loaded in the main process
(``num_workers=0``, the former default) vs worker processes (the default ``"auto"``), and the
step alone (pixels already in memory).

One process. A temporary folder of ``--images`` random JPEG files (500x375, like the research
datasets' photos; smooth random content, so that they compress and decode like photos rather
than noise) over ``--classes`` classes; a random-weight open_clip model (no pretrained weights
can be downloaded here: the costs do not depend on the values); CoOp (16 context tokens, the
fast text encoder), batch ``--batch-size``, augmentation on (CoOp's random resized crop and
flip), so every step decodes, augments and encodes its images. Each setting trains one epoch
after a warm-up run; a step's time is the time between two step callbacks (the first step of
an epoch, with the workers' start, is left out), averaged. The step alone runs the same model,
loss, backward and SGD step on the epoch's batches loaded beforehand.

Usage::

    python benchmarks/bench_data_loading.py --model-name ViT-B-32 \\
        --output benchmarks/results/data_loading_cpu.md
    python benchmarks/bench_data_loading.py --model-name cotprompt-tiny --images 16 \\
        --classes 4 --batch-size 4      # a quick run (tests/test_data_loading.py)
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cotprompt import CoTPipeline
from cotprompt.backbones import OpenCLIPBackbone, OpenCLIPBackboneConfig
from cotprompt.data import ImageClassificationDataset, from_folder
from cotprompt.training.augment import EpochSamples
from cotprompt.training.config import default_num_workers

logger = logging.getLogger("bench_data_loading")


def machine() -> str:
    """This machine as the report describes it (from ``platform`` and ``torch``)."""
    cpu = platform.processor() or platform.machine()
    if torch.cuda.is_available():
        gpus = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    else:
        gpus = "no GPU"
    return (f"{platform.system()} {platform.release()} {platform.machine()}, "
            f"{os.cpu_count()} CPU cores ({cpu}), {gpus}")


def write_jpegs(root: Path, images: int, classes: int, seed: int = 0) -> None:
    """``images`` 500x375 JPEG files, spread over ``classes`` folders."""
    rng = np.random.default_rng(seed)
    for n in range(images):
        folder = root / f"class_{n % classes:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((500, 375), Image.Resampling.BICUBIC)
        noise = rng.integers(-12, 13, size=(375, 500, 3))
        pixels = np.clip(np.asarray(image, dtype=np.int64) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{n:04d}.jpg", quality=90)


def training(args: argparse.Namespace, num_workers: int | str) -> dict[str, Any]:
    return {"epochs": 1, "batch_size": args.batch_size, "augment": True, "seed": 1,
            "warmup_epochs": 0, "scheduler": "constant", "progress": False,
            "num_workers": num_workers}


def fit_step_seconds(backbone: OpenCLIPBackbone, data: ImageClassificationDataset,
                     args: argparse.Namespace, num_workers: int | str) -> list[float]:
    """Seconds between consecutive steps of one epoch through ``fit`` (the first step left
    out)."""
    pipeline = CoTPipeline.for_method("coop", backbone=backbone,
                                      training=training(args, num_workers))
    marks: list[float] = []
    pipeline.fit(data, callbacks=[lambda info: marks.append(time.perf_counter())])
    return [b - a for a, b in itertools.pairwise(marks)]


def bare_step_seconds(backbone: OpenCLIPBackbone, data: ImageClassificationDataset,
                      args: argparse.Namespace) -> list[float]:
    """Seconds of the same steps on batches loaded beforehand (the step without loading)."""
    pipeline = CoTPipeline.for_method("coop", backbone=backbone, training=training(args, 0))
    pipeline.set_classes(data.class_names)
    samples = EpochSamples(data, backbone.image_transform(train=True), 1, random=True)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).tolist()
    batches = []
    for start in range(0, len(order) - args.batch_size + 1, args.batch_size):
        items = [samples[(0, i)] for i in order[start:start + args.batch_size]]
        batches.append((torch.stack([p for p, _ in items]),
                        torch.tensor([label for _, label in items])))
    model = pipeline.model
    model.train()
    params = list(model.trainable_state().values())
    optimizer = torch.optim.SGD(params, lr=0.002, momentum=0.9, weight_decay=5e-4)
    seconds = []
    for pixels, targets in batches:
        started = time.perf_counter()
        loss = model(pixels, inputs_are_pixels=True, targets=targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - started)
    return seconds[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-name", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--output", type=Path, default=None, help="write the Markdown here")
    parser.add_argument("--date", default=dt.date.today().isoformat(),
                        help="the date the report gives (default: today)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    backbone = OpenCLIPBackbone(OpenCLIPBackboneConfig(model_name=args.model_name,
                                                       pretrained=None))
    folder = Path(tempfile.mkdtemp(prefix="bench-loading-"))
    try:
        write_jpegs(folder, args.images, args.classes)
        data = from_folder(folder)
        fit_step_seconds(backbone, data, args, 0)  # warm-up: one-time costs in no figure
        measured = {
            "main process (`num_workers=0`, before)": fit_step_seconds(backbone, data, args, 0),
            f"workers (`\"auto\"` = {default_num_workers()}, after)":
                fit_step_seconds(backbone, data, args, "auto"),
            "the step alone (images in memory)": bare_step_seconds(backbone, data, args),
        }
        load_after = os.getloadavg()[0]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    means = {name: statistics.mean(s) for name, s in measured.items()}
    before, after, alone = means.values()
    line = (f"data_loading {args.model_name}: step through fit {before:.3f} s (num_workers=0) "
            f"vs {after:.3f} s (auto, {default_num_workers()} workers); step alone "
            f"{alone:.3f} s; loading overhead {before - alone:.3f} s -> {after - alone:.3f} s")
    print(line)
    if args.output is None:
        return
    command = ("python benchmarks/bench_data_loading.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
        if v is not None and k not in ("output", "date")) + f" --output {args.output}")
    rows = [f"| {name} | {statistics.mean(s):.3f} | {min(s):.3f} | {max(s):.3f} | {len(s)} |"
            for name, s in measured.items()]
    text = "\n".join([
        "# A CoOp training step: images loaded in the main process vs worker processes",
        "",
        f"- date: {args.date}",
        f"- machine: {machine()}; load average before / after: {load_before:.1f} / "
        f"{load_after:.1f}",
        f"- torch {torch.__version__}, {torch.get_num_threads()} thread(s); backbone "
        f"`{args.model_name}` with random weights; CoOp, 16 context tokens",
        f"- command: `{command}`",
        f"- data: {args.images} random 500x375 JPEG files, {args.classes} classes; batch "
        f"{args.batch_size}, augmentation on (random resized crop and flip), one epoch per "
        "setting after a warm-up run; first step of each epoch left out",
        "",
        "| setting | mean s per step | min | max | steps |",
        "| --- | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"Loading's cost per step (through `fit` minus the step alone): {before - alone:.3f} s "
        f"with `num_workers=0`, {after - alone:.3f} s with workers.",
        "",
        "Notes:",
        "",
        "- This machine has 2 CPU cores, shared with the model's own threads: a worker that "
        "decodes the next batch takes CPU time from the step it runs beside, so the gain of "
        "overlapping is bounded here. With a GPU (the step on the GPU, decoding on the CPU "
        "cores) or more cores, loading hides behind the step entirely.",
        "- Results do not depend on the number of workers: each sample's augmentation is a "
        "function of (seed, epoch, index) (`tests/test_data_loading.py`).",
        "",
    ])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
