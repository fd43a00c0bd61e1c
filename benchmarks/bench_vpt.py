"""Benchmark: the cost of visual prompt tuning (image encoder every step) vs text-only tuning.

One optimisation step (forward, cross-entropy, backward, AdamW step) of each tuner on the same
batch of real images (``../shared/data/cifar10-mini``, 10 classes; random pixels where absent),
timed on the current device:

- ``coop, cached features``: text-only tuning as the trainer runs it without augmentation (image
  features computed once per run, the step sees features only);
- ``coop, pixels``: text-only tuning when features cannot be cached (augmentation): the frozen
  image encoder runs forward (no gradients) every step;
- ``vpt`` shallow / deep / deep with gradient checkpointing, and ``multimodal`` (coop + deep
  visual prompts, coupled): the image encoder runs forward *and* backward every step.

Data loading is excluded (the batch is preprocessed once). Besides the median time per step, the
table gives the activation memory kept for the backward pass (bytes of the distinct tensors saved
by autograd during the forward, backbone weights excluded), which gradient checkpointing reduces.

Backbones: ``cotprompt-tiny`` (ViT 32 px, 2 blocks, width 64) and ``ViT-B-16`` with random
weights (no pretrained weights can be downloaded here; the cost does not depend on the values).

Usage::

    python benchmarks/bench_vpt.py --output benchmarks/results/vpt_cpu.md
    python benchmarks/bench_vpt.py --models cotprompt-tiny --steps 20 --threads 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cotprompt import CoTPipeline
from cotprompt.backbones import OpenCLIPBackbone, OpenCLIPBackboneConfig

logger = logging.getLogger("bench_vpt")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR = SHARED / "cifar10-mini" / "train"
CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

#: (row label, what runs per step, tuner name, tuner options, inputs are pixels)
METHODS: list[tuple[str, str, str, dict[str, Any], bool]] = [
    ("coop, cached features", "text encoder fwd+bwd", "coop", {}, False),
    ("coop, pixels", "image fwd (no grad) + text fwd+bwd", "coop", {}, True),
    ("vpt shallow (8 tokens)", "image fwd+bwd", "vpt", {"mode": "shallow"}, True),
    ("vpt deep (8 tokens, all layers)", "image fwd+bwd", "vpt", {"mode": "deep"}, True),
    (
        "vpt deep + gradient checkpointing",
        "image fwd+bwd, blocks recomputed",
        "vpt",
        {"mode": "deep", "gradient_checkpointing": True},
        True,
    ),
    (
        "multimodal: coop + deep visual, coupled (16 tokens)",
        "image fwd+bwd + text fwd+bwd",
        "multimodal",
        {"text": {"name": "coop"}, "visual": {"mode": "deep"}, "couple": True},
        True,
    ),
]


def load_pixels(backbone: OpenCLIPBackbone, batch: int) -> tuple[Tensor, Tensor]:
    """``[B, 3, H, W]`` preprocessed real images and their labels ``[B]`` (random if no data)."""
    transform = backbone.image_transform(train=False)
    if CIFAR.is_dir():
        from PIL import Image

        files = [
            (label, path)
            for label, name in enumerate(CLASSES)
            for path in sorted((CIFAR / name).iterdir())[: batch // len(CLASSES) + 1]
        ][:batch]
        pixels = torch.stack([transform(Image.open(path).convert("RGB")) for _, path in files])
        labels = torch.tensor([label for label, _ in files])
        return pixels, labels
    logger.warning("no shared data at %s: random pixels", CIFAR)
    size = backbone.model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    return torch.randn(batch, 3, size, size), torch.arange(batch) % len(CLASSES)


@contextmanager
def saved_activation_bytes(exclude: set[int]) -> Iterator[list[int]]:
    """Sum (into the yielded list) the bytes of distinct tensors autograd saves for backward."""
    seen: set[int] = set()
    total = [0]

    def pack(tensor: Tensor) -> Tensor:
        ptr = tensor.untyped_storage().data_ptr()
        if ptr not in seen and ptr not in exclude:
            seen.add(ptr)
            total[0] += tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield total


def make_step(
    backbone: OpenCLIPBackbone,
    pixels: Tensor,
    labels: Tensor,
    tuner: str,
    options: dict[str, Any],
    use_pixels: bool,
) -> tuple[Callable[[], None], int, int]:
    """A closure running one optimisation step, the saved-activation bytes of one step, and
    the trainable parameter count."""
    torch.manual_seed(0)
    pipeline = CoTPipeline.create(
        backbone=backbone, tuner=tuner, tuner_config=options, class_names=CLASSES, device="cpu"
    )
    model = pipeline.model
    model.train()
    params = list(model.trainable_state().values())
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    if use_pixels:
        inputs = pixels
    else:
        with torch.no_grad():
            inputs = model.image_features(pixels)  # [B, E], what the trainer caches
    weights = {p.untyped_storage().data_ptr() for p in backbone.parameters()}

    def step() -> None:
        logits = model(inputs, inputs_are_pixels=use_pixels)  # [B, C]
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with saved_activation_bytes(weights) as saved:
        step()
    return step, saved[0], sum(p.numel() for p in params)


def run(model_name: str, batch: int, warmup: int, steps: int) -> list[str]:
    """Benchmark every method on one model; Markdown lines.

    The methods are timed in rounds (one step of each per round), so that load from other
    processes affects them alike.
    """
    started = time.perf_counter()
    backbone = OpenCLIPBackbone(OpenCLIPBackboneConfig(model_name=model_name, pretrained=None))
    logger.info("%s built in %.1fs", model_name, time.perf_counter() - started)
    pixels, labels = load_pixels(backbone, batch)
    visual = backbone.model.visual
    built = [
        make_step(backbone, pixels, labels, tuner, options, use_pixels)
        for _, _, tuner, options, use_pixels in METHODS
    ]
    for _ in range(warmup):
        for step, _, _ in built:
            step()
    times: list[list[float]] = [[] for _ in METHODS]
    for round_index in range(steps):
        for index, (step, _, _) in enumerate(built):
            begun = time.perf_counter()
            step()
            times[index].append(time.perf_counter() - begun)
        logger.debug("%s: round %d/%d done", model_name, round_index + 1, steps)
    median = [statistics.median(t) * 1000 for t in times]
    best = [min(t) * 1000 for t in times]
    lines = [
        f"### {model_name}, batch {batch}, {len(CLASSES)} classes",
        "",
        f"ViT: {len(visual.transformer.resblocks)} blocks, width {visual.conv1.out_channels}, "
        f"{tuple(pixels.shape[-2:])} px, patch {tuple(visual.conv1.kernel_size)}; "
        f"{steps} timed steps per method.",
        "",
        "| method | per step | trainable params | ms/step median | ms/step min "
        "| median vs coop cached | median vs coop pixels | saved activations |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (label, what, *_), (_, saved, count), ms, low in zip(
        METHODS, built, median, best, strict=True
    ):
        lines.append(
            f"| {label} | {what} | {count:,} | {ms:,.1f} | {low:,.1f} | {ms / median[0]:.1f}x "
            f"| {ms / median[1]:.1f}x | {saved / 2**20:,.1f} MiB |"
        )
        logger.info("%s | %s: median %.1f ms, min %.1f ms", model_name, label, ms, low)
    return [*lines, ""]


#: (row label, tuner name, tuner options, augment) for the end-to-end ``fit`` table
FIT_METHODS: list[tuple[str, str, dict[str, Any], bool]] = [
    ("coop, cached features", "coop", {}, False),
    ("coop, augmentation (pixels every step)", "coop", {}, True),
    ("vpt deep", "vpt", {"mode": "deep"}, False),
    ("vpt deep + gradient checkpointing", "vpt", {"mode": "deep", "gradient_checkpointing": True},
     False),
    ("multimodal: coop + deep visual, coupled (16 tokens)", "multimodal",
     {"text": {"name": "coop"}, "visual": {"mode": "deep"}, "couple": True}, False),
]  # fmt: skip


def run_fit(model_name: str, batch: int, epochs: int, shots: int) -> list[str]:
    """``CoTPipeline.fit`` end to end (image decoding included) on cifar10-mini; Markdown."""
    from cotprompt.data import few_shot, from_folder

    if not CIFAR.is_dir():
        logger.warning("no shared data at %s: skipping the fit table", CIFAR)
        return []
    backbone = OpenCLIPBackbone(OpenCLIPBackboneConfig(model_name=model_name, pretrained=None))
    train = few_shot(from_folder(CIFAR), shots, seed=1)
    lines = [
        f"### `CoTPipeline.fit` on {model_name}: {train.num_classes} classes x {shots} shots, "
        f"batch {batch}, {epochs} epochs",
        "",
        "Includes decoding and preprocessing the images of every step when features are not "
        "cached (`num_workers=0`), and computing the cache when they are.",
        "",
        "| method | features cached | steps | seconds | ms/step | vs coop cached |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    reference = None
    for label, tuner, options, augment in FIT_METHODS:
        torch.manual_seed(0)
        pipeline = CoTPipeline.create(
            backbone=backbone,
            tuner=tuner,
            tuner_config=options,
            training=dict(
                optimizer="adamw", lr=0.01, weight_decay=0.0, warmup_epochs=0,
                scheduler="constant", epochs=epochs, batch_size=batch, augment=augment,
                progress=False, seed=1,
            ),
            device="cpu",
        )  # fmt: skip
        result = pipeline.fit(train)
        ms = result.seconds / result.global_step * 1000
        reference = reference or ms
        logger.info("fit %s | %s: %.1f ms/step", model_name, label, ms)
        lines.append(
            f"| {label} | {result.features_cached} | {result.global_step} | "
            f"{result.seconds:.1f} | {ms:.1f} | {ms / reference:.1f}x |"
        )
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["cotprompt-tiny", "ViT-B-16"])
    parser.add_argument(
        "--batches", nargs="+", type=int, default=[32, 4], help="batch size per model"
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--steps", type=int, nargs="+", default=[20, 3], help="timed steps per model"
    )
    parser.add_argument(
        "--fit-model",
        default="cotprompt-tiny",
        help="model of the end-to-end fit table ('' to skip)",
    )
    parser.add_argument("--fit-epochs", type=int, default=5)
    parser.add_argument("--fit-shots", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--output", type=Path, default=None, help="write the Markdown here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("cotprompt").setLevel(logging.WARNING)  # per-epoch training logs
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps if len(args.steps) == len(args.models) else args.steps[:1] * len(args.models)
    load_before = os.getloadavg()
    lines: list[str] = []
    for model_name, batch, n in zip(args.models, args.batches, steps, strict=True):
        lines += run(model_name, batch, args.warmup, n)
    if args.fit_model:
        lines += run_fit(args.fit_model, 32, args.fit_epochs, args.fit_shots)
    header = [
        "# Visual prompt tuning vs text-only tuning: time per training step",
        "",
        f"Measured {dt.date.today().isoformat()} with `python benchmarks/bench_vpt.py` on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s); load average "
        f"before / after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f} (other processes "
        "shared the cores, so treat ratios as more reliable than absolute times).",
        "",
        "One step = forward, cross-entropy, backward, AdamW step on a preprocessed batch (data "
        "loading excluded); median over the timed steps after warm-up. *Saved activations*: "
        "bytes of the distinct tensors autograd keeps for the backward pass (backbone weights "
        "excluded).",
        "",
    ]
    text = "\n".join(header + lines)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        logger.info("wrote %s", args.output)
    else:
        logger.info("%s", text)


if __name__ == "__main__":
    main()
