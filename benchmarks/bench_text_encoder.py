"""Benchmark: the research code's computation pattern vs cotprompt's fast path (not a test).

Both run in one process on the same inputs and the same frozen ViT-B/16 architecture (random
weights: the compute is identical to pretrained ones):

* **reference pattern**, as CoOp / CoCoOp's code does it: the image encoder on every step, the
  whole 77-token text encoder with an additive causal mask over every class prompt, a Python loop
  over images for image-conditioned prompts (CoCoOp, CoT-PT), fp32 weights (fp16 on a GPU too);
* **fast path**: cached image features, ``cotprompt``'s tuner with the default fast text encoder
  (shared-prefix caching, length buckets, causal attention kernels, fused kernels, batched and
  budgeted chunks), bf16 autocast on a GPU.

Per configuration: ms per training step (forward + backward + SGD step), the ratio, peak memory,
the minimal exact FLOP count of a step and the achieved FLOP rate against the measured matmul
rate; and prediction throughput (images/s). Results go to a Markdown file with the date, the
machine and the command.

    python benchmarks/bench_text_encoder.py --preset cpu --threads 1 --output REPORT.md
    python benchmarks/bench_text_encoder.py --preset gpu --device cuda --output REPORT.md

Other presets: ``memory`` (the CoT-PT K=3 step-memory rows only; ``--memory C,B,BUDGET_MB``
picks them), ``cpu-bf16`` (the fast path alone in fp32 and bf16 autocast on a CPU), ``smoke``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cotprompt.aggregators import MeanAggregator  # noqa: E402
from cotprompt.backbones import OpenCLIPBackbone, OpenCLIPBackboneConfig  # noqa: E402
from cotprompt.generators.templates import COT_DEFAULT_STEPS  # noqa: E402
from cotprompt.kernels import kernels_enabled, triton_available  # noqa: E402
from cotprompt.model import PromptModel  # noqa: E402
from cotprompt.tuners import (  # noqa: E402
    CoCoOpConfig,
    CoCoOpTuner,
    CoOpConfig,
    CoOpTuner,
    CoTPTConfig,
    CoTPTTuner,
)
from cotprompt.types import PromptChain, PromptStep  # noqa: E402

# -- methods --------------------------------------------------------------------------------------

METHODS: dict[str, dict[str, Any]] = {
    # name: steps K, image-conditioned, n_ctx, tuner factory
    "coop": {"K": 1, "cond": False, "n_ctx": 16},
    "coop-k3": {"K": 3, "cond": False, "n_ctx": 16},
    "cocoop": {"K": 1, "cond": True, "n_ctx": 4},
    "cotpt": {"K": 3, "cond": True, "n_ctx": 4},
}


def class_names(count: int) -> list[str]:
    """The first ``count`` ImageNet class names (realistic name lengths)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    names = list(dict.fromkeys(IMAGENET_CLASSNAMES))
    return names[:count]


def make_chain(labels: list[str], steps: int) -> PromptChain:
    """K=1: ``"{class}."`` (CoOp / CoCoOp); K=3: cotprompt's default CoT chain."""
    templates = [t[0] for _, t in COT_DEFAULT_STEPS][:steps] if steps > 1 else ["{class}."]
    return PromptChain(
        labels=tuple(labels),
        steps=tuple(
            PromptStep(f"s{k}", tuple((tpl.format(**{"class": c}),) for c in labels))
            for k, tpl in enumerate(templates)
        ),
        zero_shot=tuple((c,) for c in labels),
    )


def make_tuner(method: str, text_encoder: str = "fast", **extra: Any) -> nn.Module:
    spec = METHODS[method]
    if spec["cond"] and spec["K"] == 1:
        return CoCoOpTuner(CoCoOpConfig(text_encoder=text_encoder, **extra))
    if spec["cond"]:
        return CoTPTTuner(CoTPTConfig(text_encoder=text_encoder, **extra))
    return CoOpTuner(CoOpConfig(n_ctx=spec["n_ctx"], text_encoder=text_encoder, **extra))


# -- the reference pattern ------------------------------------------------------------------------


class ReferencePattern(nn.Module):
    """CoOp / CoCoOp's PromptLearner + TextEncoder + CustomCLIP.forward, extended to K steps.

    Prompts are ``[SOS][ctx][text][EOS][pad...]`` over all 77 positions, through open_clip's
    transformer with the additive causal mask, pooled at the end-of-text token; the image encoder
    runs on every step; image-conditioned prompts loop over images in Python.
    """

    def __init__(self, backbone: OpenCLIPBackbone, chain: PromptChain, method: str) -> None:
        super().__init__()
        import open_clip

        spec = METHODS[method]
        self.backbone = (backbone,)
        self.conditioned = spec["cond"]
        self.num_steps = spec["K"]
        n_ctx = spec["n_ctx"]
        model = backbone.model
        dtype = backbone.dtype
        texts = [t[0] for step in chain.steps for t in step.texts]
        placeholder = " ".join(["X"] * n_ctx)
        tokenized = open_clip.tokenize([f"{placeholder} {t}" for t in texts]).to(backbone.device)
        with torch.no_grad():
            embedding = model.token_embedding(tokenized).to(dtype)
        self.register_buffer("tokenized", tokenized)
        self.register_buffer("prefix", embedding[:, :1])
        self.register_buffer("suffix", embedding[:, 1 + n_ctx :])
        self.num_labels = len(chain.labels)
        width, embed = backbone.text_width, backbone.embed_dim
        self.ctx = nn.Parameter(0.02 * torch.randn(self.num_steps, n_ctx, width, dtype=dtype))
        if self.conditioned:
            self.meta_nets = nn.ModuleList(
                nn.Sequential(
                    nn.Linear(embed, embed // 16), nn.ReLU(), nn.Linear(embed // 16, width)
                )
                for _ in range(self.num_steps)
            ).to(dtype)
        self.to(backbone.device)

    def text_encoder(self, prompts: Tensor, tokenized: Tensor) -> Tensor:
        model = self.backbone[0].model
        x = prompts + model.positional_embedding.to(prompts.dtype)
        x = model.transformer(x, attn_mask=model.attn_mask.to(x.dtype))
        x = model.ln_final(x)
        return x[torch.arange(x.shape[0]), tokenized.argmax(dim=-1)] @ model.text_projection

    def prompts(self, shift: Tensor | None) -> Tensor:
        c = self.num_labels
        ctx = self.ctx.unsqueeze(1).expand(-1, c, -1, -1)  # [K, C, n_ctx, W]
        if shift is not None:  # [K, W]
            ctx = ctx + shift[:, None, None, :]
        ctx = ctx.reshape(self.num_steps * c, *ctx.shape[2:])
        return torch.cat([self.prefix, ctx, self.suffix], dim=1)

    def forward(self, pixels: Tensor, timings: dict[str, float]) -> Tensor:
        backbone = self.backbone[0]
        start = time.perf_counter()
        with torch.no_grad():  # frozen: CoOp runs it without grad-requiring inputs
            image_features = backbone.model.encode_image(pixels.to(backbone.dtype))
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        sync(pixels.device)
        timings["image"] = timings.get("image", 0.0) + time.perf_counter() - start
        scale = backbone.model.logit_scale.exp()
        k, c = self.num_steps, self.num_labels
        if not self.conditioned:
            text = self.text_encoder(self.prompts(None), self.tokenized)
            text = (text / text.norm(dim=-1, keepdim=True)).reshape(k, c, -1)
            return scale * torch.einsum("be,kce->bkc", image_features, text).mean(1)
        shifts = torch.stack([net(image_features) for net in self.meta_nets], dim=1)  # [B, K, W]
        logits = []
        for shift_i, imf_i in zip(shifts, image_features, strict=True):
            text = self.text_encoder(self.prompts(shift_i), self.tokenized)
            text = (text / text.norm(dim=-1, keepdim=True)).reshape(k, c, -1)
            logits.append(scale * torch.einsum("e,kce->kc", imf_i, text).mean(0))
        return torch.stack(logits)


# -- measurement helpers ----------------------------------------------------------------------


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    """Run a block with an earlier version of the fast path (see :class:`Case`)."""
    if not name:
        yield
        return
    if name != "uncached-bf16":
        raise SystemExit(f"unknown variant {name!r}")
    import cotprompt.backbones.text_encoder as text_encoder
    from cotprompt.backbones.encoder_weights import TowerWeights

    blocks, attention = TowerWeights.blocks, text_encoder._attention
    TowerWeights.blocks = lambda self, dtype=None: self.folded()
    text_encoder._attention = F.scaled_dot_product_attention
    try:
        yield
    finally:
        TowerWeights.blocks, text_encoder._attention = blocks, attention


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS, so that RSS growth measures a block's peak."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory of a block: ``torch.cuda.max_memory_allocated`` on a GPU, sampled RSS growth
    on the CPU (every millisecond, in a thread)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        gc.collect()
        _malloc_trim()
        self._base = _rss()
        self._max = self._base
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.is_set():
                self._max = max(self._max, _rss())
                time.sleep(0.001)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._base
            self.total = torch.cuda.max_memory_allocated(self.device)
            return
        self._stop.set()
        self._thread.join()
        self._max = max(self._max, _rss())
        self.peak = self._max - self._base
        self.total = self._max


def timed(fn: Callable[[], Any], device: torch.device, reps: int) -> tuple[list[float], int, int]:
    """Times of ``reps`` calls (s), peak memory growth and total peak (bytes)."""
    times = []
    peak = total = 0
    for _ in range(reps):
        with PeakMemory(device) as mem:
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - start)
        peak, total = max(peak, mem.peak), max(total, mem.total)
    return times, peak, total


def matmul_rate(device: torch.device, dtype: torch.dtype, seconds: float = 2.0) -> float:
    """Measured dense matmul rate (FLOP/s) at text-encoder-like shapes."""
    m, k, n = (4096, 512, 2048) if device.type == "cpu" else (16384, 4096, 4096)
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
        if device.type == "cuda" and count % 10:
            continue
        sync(device)
    sync(device)
    return 2 * m * k * n * count / (time.perf_counter() - start)


# -- FLOP counts ----------------------------------------------------------------------------------


def minimal_flops(tuner: Any, backbone: OpenCLIPBackbone, batch: int) -> dict[str, float]:
    """Minimal exact FLOPs of a training step's text encoder (matmuls only).

    Forward: every prefix token (start token, context and the text tokens all labels of the
    step share) once per (image, step) for image-conditioned prompts (once per step otherwise),
    every other token up to its own end-of-text position once per row (no padding), the first
    layer's suffix q/k/v once per text, the last layer's non-pooled tokens only their keys and
    values. Backward w.r.t. activations only (the weights are frozen): the linear layers'
    forward FLOPs again, attention twice its forward.
    """
    tokens = tuner.tokens
    width = backbone.text_width
    layers = len(backbone.text.transformer.resblocks)
    lin = 24 * width * width  # qkv 3, out 1, fc 4, proj 4 (x W^2 MACs, x2 FLOPs)
    kv = 4 * width * width
    qkv = 6 * width * width
    rows = batch if tuner.image_conditioned else 1
    shared = torch.tensor([tokens.shared_text_prefix(k) for k in range(tokens.num_steps)])
    prefix_len = (1 + tuner.n_ctx + shared).double()  # [K]
    lp = prefix_len[tokens.step_index.cpu()]  # [N]
    suffix_len = tokens.eot_index.double().cpu() - lp + 1
    n_suffix = float(suffix_len.sum())
    linear = rows * float(prefix_len.sum()) * ((layers - 1) * lin + kv)
    linear += rows * n_suffix * ((layers - 1) * lin + kv)
    linear += rows * tokens.num_texts * (lin - kv)  # pooled row of the last layer
    linear -= (rows - 1) * n_suffix * qkv  # the first layer's q/k/v once per text
    attn_prefix = float((4 * width * prefix_len * (prefix_len + 1) / 2).sum())
    attn_suffix = float((4 * width * (suffix_len * lp + suffix_len * (suffix_len + 1) / 2)).sum())
    attention = layers * rows * (attn_prefix + attn_suffix)
    return {"forward": linear + attention, "train": 2 * linear + 3 * attention}


def reference_flops(method: str, labels: int, batch: int, backbone: OpenCLIPBackbone) -> float:
    """FLOPs the reference pattern does per training step (text fwd+bwd over 77 tokens and the
    image encoder forward)."""
    spec = METHODS[method]
    width = backbone.text_width
    layers = len(backbone.text.transformer.resblocks)
    seqs = spec["K"] * labels * (batch if spec["cond"] else 1)
    per_seq = layers * (77 * 24 * width * width + 4 * width * 77 * 77)
    return 2 * seqs * per_seq + batch * image_flops(backbone)


def image_flops(backbone: OpenCLIPBackbone) -> float:
    visual = backbone.model.visual
    width = int(visual.conv1.out_channels)
    grid = visual.grid_size
    tokens = grid[0] * grid[1] + 1
    layers = len(visual.transformer.resblocks)
    patch = visual.conv1.kernel_size[0] * visual.conv1.kernel_size[1] * 3
    return (
        layers * (tokens * 24 * width * width + 4 * width * tokens * tokens)
        + 2 * (tokens - 1) * patch * width
    )


# -- one configuration ----------------------------------------------------------------------------


@dataclass
class Case:
    method: str
    labels: int
    batch: int
    reference: str = "measure"  # measure | extrapolate | skip
    reps: int = 3
    ref_reps: int = 1
    note: str = ""
    fast_bf16: bool | None = None  # None: bf16 autocast on GPUs, fp32 on CPUs
    # "uncached-bf16": the fast path as before the CPU bf16 changes (weights cast by autocast
    # in every call, attention in bf16), for the side-by-side figure
    variant: str = ""


@dataclass
class Result:
    method: str
    K: int
    conditioned: bool
    labels: int
    batch: int
    fast_precision: str = "fp32"
    fast_ms: float = 0.0
    fast_peak_mb: float = 0.0
    ref_ms: float | None = None
    ref_image_ms: float | None = None
    ref_peak_mb: float | None = None
    ref_source: str = ""
    ratio: float | None = None
    ratio_amortised: float | None = None
    min_gflop: float = 0.0
    ref_gflop: float = 0.0
    fast_gflops: float = 0.0
    fast_fraction: float = 0.0
    chunks: int = 0
    buckets: list[int] = field(default_factory=list)
    note: str = ""


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.perf_counter()
        self.device = torch.device(args.device)
        gpu = self.device.type == "cuda"
        self.backbone = OpenCLIPBackbone(
            OpenCLIPBackboneConfig(model_name=args.model, pretrained=None)
        ).to(self.device)
        self.ref_backbone = self.backbone
        if gpu and args.ref_dtype == "fp16":
            self.ref_backbone = OpenCLIPBackbone(
                OpenCLIPBackboneConfig(model_name=args.model, pretrained=None, precision="fp16")
            ).to(self.device)
        self.autocast_dtype = torch.bfloat16 if gpu else None
        self.results: list[Result] = []
        self.predict: list[dict[str, Any]] = []
        self.memory: list[dict[str, Any]] = []
        self.per_sequence_ref: dict[str, float] = {}
        self.image_ms_per_image: float | None = None
        self.log = []

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.append(text)

    # -- steps ----------------------------------------------------------------------------------

    def fast_step(
        self,
        method: str,
        labels: list[str],
        batch: int,
        bf16: bool | None = None,
        **tuner_options: Any,
    ):
        chain = make_chain(labels, METHODS[method]["K"])
        tuner = make_tuner(method, **tuner_options)
        tuner.bind(self.backbone, chain)
        aggregator = MeanAggregator()
        aggregator.bind(chain.num_steps, self.backbone.embed_dim)
        model = PromptModel(self.backbone, tuner, aggregator)
        optimizer = torch.optim.SGD(list(model.trainable_state().values()), lr=0.002, momentum=0.9)
        g = torch.Generator().manual_seed(0)
        features = F.normalize(torch.randn(batch, self.backbone.embed_dim, generator=g), dim=-1)
        features = features.to(self.device)
        targets = torch.randint(0, len(labels), (batch,), generator=g).to(self.device)
        autocast = self.autocast_dtype if bf16 is None else (torch.bfloat16 if bf16 else None)

        def step() -> None:
            with torch.autocast(
                self.device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None
            ):
                logits = model(features)
            loss = F.cross_entropy(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step, tuner, model

    def ref_step(self, method: str, labels: list[str], batch: int, timings: dict[str, float]):
        chain = make_chain(labels, METHODS[method]["K"])
        ref = ReferencePattern(self.ref_backbone, chain, method)
        optimizer = torch.optim.SGD(ref.parameters(), lr=0.002, momentum=0.9)
        g = torch.Generator().manual_seed(0)
        size = self.backbone.model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        pixels = torch.randn(batch, 3, size, size, generator=g).to(self.device)
        targets = torch.randint(0, len(labels), (batch,), generator=g).to(self.device)

        def step() -> None:
            logits = ref(pixels, timings)
            loss = F.cross_entropy(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    # -- cases ----------------------------------------------------------------------------------

    def run_case(self, case: Case) -> Result:
        spec = METHODS[case.method]
        labels = class_names(case.labels)
        res = Result(case.method, spec["K"], spec["cond"], case.labels, case.batch, note=case.note)
        bf16 = case.fast_bf16 if case.fast_bf16 is not None else self.device.type == "cuda"
        res.fast_precision = "bf16 autocast" if bf16 else "fp32"
        if case.variant:
            res.fast_precision += f" ({case.variant})"
        step, tuner, _ = self.fast_step(case.method, labels, case.batch, bf16=bf16)
        with variant(case.variant):
            step()  # warm-up (also builds the length buckets)
            times, peak, _ = timed(step, self.device, case.reps)
        res.fast_ms = 1e3 * statistics.median(times)
        res.fast_peak_mb = peak / 2**20
        plan = self.backbone.fast_text_encoder().last_plan
        res.chunks, res.buckets = plan.get("chunks", 0), plan.get("bucket_lengths", [])
        flops = minimal_flops(tuner, self.backbone, case.batch)
        res.min_gflop = flops["train"] / 1e9
        res.fast_gflops = flops["train"] / (res.fast_ms / 1e3) / 1e9
        rate = self.rate_bf16 if bf16 and self.device.type == "cpu" else self.rate
        res.fast_fraction = res.fast_gflops * 1e9 / rate
        res.ref_gflop = reference_flops(case.method, case.labels, case.batch, self.backbone) / 1e9
        seqs = spec["K"] * case.labels * (case.batch if spec["cond"] else 1)
        if case.reference == "measure":
            try:
                timings: dict[str, float] = {}
                ref = self.ref_step(case.method, labels, case.batch, timings)
                if self.device.type == "cuda":  # CUDA context, cuBLAS and allocator warm-up
                    ref()
                    timings.clear()
                ref_times, ref_peak, _ = timed(ref, self.device, case.ref_reps)
            except torch.cuda.OutOfMemoryError:
                # the research code's famous failure at many classes: estimate it instead
                ref = None
                gc.collect()
                torch.cuda.empty_cache()
                case.reference = "extrapolate"
                res.note = (res.note + " reference out of memory").strip()
            if ref is not None:
                res.ref_ms = 1e3 * statistics.median(ref_times)
                res.ref_image_ms = 1e3 * timings["image"] / case.ref_reps
                res.ref_peak_mb = ref_peak / 2**20
                res.ref_source = "measured"
                text_s = (res.ref_ms - res.ref_image_ms) / 1e3
                self.per_sequence_ref[case.method] = text_s / seqs
                self.image_ms_per_image = res.ref_image_ms / case.batch
        if case.reference == "extrapolate":
            per_seq = self.per_sequence_ref.get(case.method)
            if per_seq is not None and self.image_ms_per_image is not None:
                res.ref_image_ms = self.image_ms_per_image * case.batch
                res.ref_ms = 1e3 * per_seq * seqs + res.ref_image_ms
                res.ref_source = "extrapolated"
        if res.ref_ms is not None:
            res.ratio = res.ref_ms / res.fast_ms
            if res.ref_image_ms is not None:
                # the fast path encodes each image once: amortised over 10 epochs
                res.ratio_amortised = res.ref_ms / (res.fast_ms + res.ref_image_ms / 10)
        self.say(json.dumps(asdict(res)))
        self.results.append(res)
        return res

    def run_predict(self, method: str, labels: int, batch: int) -> None:
        """Images/s of inference on pixels: image encoder + prompts + logits."""
        names = class_names(labels)
        _, _tuner, model = self.fast_step(method, names, batch)
        model.eval()
        g = torch.Generator().manual_seed(0)
        size = self.backbone.model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        pixels = torch.randn(batch, 3, size, size, generator=g).to(self.device)
        autocast = self.autocast_dtype

        @torch.no_grad()
        def fast() -> None:
            with torch.autocast(
                self.device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None
            ):
                model(pixels, inputs_are_pixels=True)

        timings: dict[str, float] = {}
        ref = ReferencePattern(self.ref_backbone, make_chain(names, METHODS[method]["K"]), method)

        @torch.no_grad()
        def reference() -> None:
            ref(pixels, timings)

        fast()
        fast_t, _, _ = timed(fast, self.device, 1 if self.device.type == "cpu" else 3)
        if self.device.type != "cpu":
            reference()
        ref_t, _, _ = timed(reference, self.device, 1 if self.device.type == "cpu" else 3)
        row = {
            "method": method,
            "labels": labels,
            "batch": batch,
            "fast_images_per_s": batch / statistics.median(fast_t),
            "ref_images_per_s": batch / statistics.median(ref_t),
        }
        row["ratio"] = row["fast_images_per_s"] / row["ref_images_per_s"]
        self.say(json.dumps(row))
        self.predict.append(row)

    def run_memory(self, labels: int, batch: int, budget: float | None) -> None:
        """CoT-PT (K=3) step memory with or without an activation budget (one step, after the
        warm-ups of the training cases)."""
        options = {} if budget is None else {"memory_budget_mb": budget}
        step, tuner, _ = self.fast_step("cotpt", class_names(labels), batch, **options)
        times, peak, total = timed(step, self.device, 1)
        plan = self.backbone.fast_text_encoder().last_plan
        min_gflop = minimal_flops(tuner, self.backbone, batch)["train"] / 1e9
        row = {
            "labels": labels,
            "batch": batch,
            "budget_mb": budget,
            "ms": 1e3 * times[0],
            "min_gflop": min_gflop,
            "fast_gflops": min_gflop / times[0],
            "peak_mb": peak / 2**20,
            "total_peak_mb": total / 2**20,
            "chunks": plan["chunks"],
            "recompute": plan["recompute"],
            "estimated_unchunked_mb": plan["estimated_bytes"] / 2**20,
        }
        self.say(json.dumps(row))
        self.memory.append(row)

    def estimate_memory(self, labels: int, batch: int) -> dict[str, Any]:
        """The planner's activation estimate for a CoT-PT step that is not run here."""
        names = class_names(labels)
        chain = make_chain(names, 3)
        tuner = make_tuner("cotpt")
        tuner.bind(self.backbone, chain)
        encoder = self.backbone.fast_text_encoder()
        lp = 1 + tuner.n_ctx
        lengths = (tuner.tokens.eot_index - lp + 1).cpu()
        from cotprompt.backbones.encoder_plan import length_buckets

        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        need = 0
        for group in length_buckets(lengths, torch.full_like(lengths, batch)):
            length = int(lengths[group].max())
            need += batch * len(group) * encoder.row_bytes(length, dtype, True, lp)
        outputs = batch * tuner.tokens.num_texts * self.backbone.embed_dim * 4 * 6
        return {
            "labels": labels,
            "batch": batch,
            "activation_dtype": str(dtype),
            "unchunked_activations_gb": need / 2**30,
            "features_and_grads_gb": outputs / 2**30,
        }

    def run(self, cases: list[Case], predict: list[tuple[str, int, int]], memory) -> None:
        cpu = self.device.type == "cpu"
        seconds = 0.25 if self.args.preset == "smoke" else 2.0
        self.rate = matmul_rate(self.device, torch.float32 if cpu else torch.bfloat16, seconds)
        self.rate_bf16 = matmul_rate(self.device, torch.bfloat16, seconds) if cpu else self.rate
        self.say(f"matmul rate: {self.rate / 1e9:.1f} GFLOP/s, bf16 {self.rate_bf16 / 1e9:.1f}")
        deadline = self.started + 60 * self.args.max_minutes
        for case in cases:
            if time.perf_counter() > deadline:
                self.say(f"time limit: skipped {case}")
                continue
            self.run_case(case)
        for labels, batch, budget in memory:
            if time.perf_counter() < deadline:
                self.run_memory(labels, batch, budget)
        for method, labels, batch in predict:
            if time.perf_counter() < deadline:
                self.run_predict(method, labels, batch)


# -- presets --------------------------------------------------------------------------------------


def preset(name: str) -> tuple[list[Case], list[tuple[str, int, int]], list[tuple]]:
    if name == "smoke":
        cases = [Case("coop", 10, 2, reps=1), Case("cocoop", 10, 2, reps=1)]
        return cases, [("coop", 10, 2)], [(10, 2, 16.0)]
    if name == "cpu":
        cases = [
            Case("coop", 10, 8, reps=5),
            Case("coop", 100, 32),
            Case("coop", 100, 8, reference="extrapolate"),
            Case("coop", 1000, 32, reference="extrapolate", reps=1),
            Case("coop-k3", 10, 8),
            Case("coop-k3", 100, 32, reference="extrapolate", reps=2),
            Case("cocoop", 10, 4, reps=5),
            Case("cocoop", 10, 16, reference="extrapolate"),
            Case("cocoop", 100, 1),
            Case("cocoop", 100, 4, reference="extrapolate", reps=2),
            Case("cotpt", 10, 2, reps=5),
            Case("cotpt", 100, 1, reps=2),
            Case("cotpt", 100, 4, reference="extrapolate", reps=1),
            # not a target: bf16 autocast on the CPU's AMX units
            Case("coop", 100, 32, reference="extrapolate", fast_bf16=True),
            Case("cocoop", 100, 4, reference="extrapolate", fast_bf16=True, reps=1),
            Case("cotpt", 100, 4, reference="extrapolate", fast_bf16=True, reps=1),
        ]
        predict = [("coop", 10, 8), ("cocoop", 10, 4)]
        memory = [(10, 8, None), (10, 8, 64.0), (10, 24, 64.0)]
        return cases, predict, memory
    if name == "gpu":
        cases = []
        for method in ("coop", "coop-k3", "cocoop", "cotpt"):
            for labels in (10, 100, 1000):
                for batch in (8, 32):
                    spec = METHODS[method]
                    seqs = spec["K"] * labels * (batch if spec["cond"] else 1)
                    # the reference keeps every sequence's 77-position activations for the
                    # backward pass (~16 W fp16 values per position and layer): measure it
                    # where that fits in about 40 GB, extrapolate elsewhere
                    fits = seqs * 77 * 12 * 16 * 512 * 2 < 40e9
                    cases.append(
                        Case(
                            method,
                            labels,
                            batch,
                            reference="measure" if fits else "extrapolate",
                            reps=3,
                            ref_reps=1 if labels == 1000 else 2,
                        )
                    )
        predict = [("coop", 1000, 256), ("cocoop", 100, 64), ("cotpt", 100, 64)]
        memory = [(1000, 32, 8192.0), (1000, 32, None)]
        return cases, predict, memory
    if name == "cpu-bf16":
        # the fast path alone: fp32, bf16 autocast, and bf16 autocast as before the CPU changes
        cases = []
        for method, labels, batch, reps in (("coop", 100, 32, 3), ("cocoop", 100, 4, 3),
                                            ("cotpt", 100, 4, 2)):
            for bf16, name in ((False, ""), (True, ""), (True, "uncached-bf16")):
                cases.append(Case(method, labels, batch, reference="skip", reps=reps,
                                  fast_bf16=bf16, variant=name))
        return cases, [], []
    if name == "memory":
        # only the CoT-PT step-memory rows (default: the 1000 classes, batch 32)
        return [], [], [(1000, 32, 4096.0)]
    raise SystemExit(f"unknown preset {name!r}")


# -- report ---------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def write_report(bench: Bench, args: argparse.Namespace, started: float, load: tuple) -> str:
    device = bench.device
    lines = [
        f"# Text-encoder benchmark ({device.type})",
        "",
        f"- date: {dt.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {machine_description(device)}",
        f"- load average before / after: {load[0]} / {os.getloadavg()}",
        f"- torch {torch.__version__}; kernels enabled: {kernels_enabled()}, triton importable: "
        f"{triton_available()}",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- measured matmul rate: {bench.rate / 1e9:.1f} GFLOP/s "
        f"({'fp32' if device.type == 'cpu' else 'bf16'}); bf16: {bench.rate_bf16 / 1e9:.1f}",
        f"- reference weights: {args.ref_dtype if device.type == 'cuda' else 'fp32'}; fast path: "
        f"{'bf16 autocast, fp32 weights' if device.type == 'cuda' else 'fp32'}"
        f"{' unless the precision column says otherwise' if args.preset == 'cpu-bf16' else ''}",
        f"- wall time: {time.perf_counter() - started:.0f} s",
        "",
        f"Backbone: {args.model} architecture, random weights (same compute as pretrained). Class "
        'names: the first C ImageNet classes. K=1 texts `"{class}."`; K=3: cotprompt\'s CoT '
        "chain. coop: n_ctx=16, unified; cocoop / cotpt: n_ctx=4, image-conditioned.",
        "",
    ]
    if bench.results:
        lines += [
            "## Training step (forward + backward + SGD step)",
            "",
            "`ref` = research pattern (77 tokens, additive mask, image encoder every step, per-"
            "image loop); `fast` = cotprompt (cached features). `x amortised` adds the fast "
            "path's one-time image encoding spread over 10 epochs. `min GFLOP` = minimal exact "
            "FLOPs of the step's text encoder; `fast GFLOP/s` = min GFLOP / fast time, and its "
            "fraction of the measured matmul rate. Extrapolated reference times = measured "
            "seconds per 77-token sequence (same method, smaller case) x sequences + measured "
            "image-encoder time per image x B.",
            "",
            "| method | K | cond | C | B | ref ms | ref source | fast ms | fast precision | x | "
            "x amortised | ref peak MB | fast peak MB | ref GFLOP | min GFLOP | fast GFLOP/s | "
            "% matmul | buckets | chunks |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for r in bench.results:
        lines.append(
            f"| {r.method} | {r.K} | {'yes' if r.conditioned else 'no'} | {r.labels} | "
            f"{r.batch} | {fmt(r.ref_ms, 0)} | {r.ref_source or 'skipped'} | {fmt(r.fast_ms, 0)} "
            f"| {r.fast_precision} | {fmt(r.ratio)} | {fmt(r.ratio_amortised)} | "
            f"{fmt(r.ref_peak_mb, 0)} | "
            f"{fmt(r.fast_peak_mb, 0)} | {fmt(r.ref_gflop, 0)} | {fmt(r.min_gflop, 1)} | "
            f"{fmt(r.fast_gflops)} | {100 * r.fast_fraction:.0f}% | {r.buckets} | {r.chunks} |"
        )
    if bench.predict:
        lines += [
            "",
            "## Prediction throughput (pixels in, logits out)",
            "",
            "| method | C | batch | ref images/s | fast images/s | x |",
            "|---|---|---|---|---|---|",
        ]
        for p in bench.predict:
            lines.append(
                f"| {p['method']} | {p['labels']} | {p['batch']} | {p['ref_images_per_s']:.2f} "
                f"| {p['fast_images_per_s']:.2f} | {p['ratio']:.1f} |"
            )
    if bench.memory:
        lines += [
            "",
            "## CoT-PT (K=3) step memory and the activation budget",
            "",
            "`min GFLOP` = minimal exact FLOPs of the step's text encoder (without the "
            "recomputation); `% matmul` = min GFLOP / time against the measured matmul rate.",
            "",
            "| C | B | budget MB | ms | peak growth MB | process peak MB | chunks | recompute | "
            "planner's unchunked estimate MB | min GFLOP | % matmul |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for m in bench.memory:
            lines.append(
                f"| {m['labels']} | {m['batch']} | {m['budget_mb'] or 'auto'} | {m['ms']:.0f} | "
                f"{m['peak_mb']:.0f} | {m['total_peak_mb']:.0f} | {m['chunks']} | "
                f"{m['recompute']} | {m['estimated_unchunked_mb']:.0f} | "
                f"{m['min_gflop']:,.0f} | {100 * m['fast_gflops'] * 1e9 / bench.rate:.0f}% |"
            )
    if bench.memory and not any(m["labels"] == 1000 and m["batch"] == 32 for m in bench.memory):
        estimate = bench.estimate_memory(1000, 32)
        lines += [
            "",
            "Rough estimate for CoT-PT K=3, C=1000, B=32 (not run here): unchunked activations "
            f"{estimate['unchunked_activations_gb']:.1f} GiB ({estimate['activation_dtype']}, "
            "not counting the text shared by all labels); with a budget, the step keeps about "
            f"the budget plus {estimate['features_and_grads_gb']:.2f} GiB of features and their "
            "gradients.",
        ]
    lines.append("")
    return "\n".join(lines)


def parse_memory_row(text: str) -> tuple[int, int, float | None]:
    labels, batch, budget = text.split(",")
    return int(labels), int(batch), None if budget == "auto" else float(budget)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--preset", default="cpu", choices=["smoke", "cpu", "gpu", "memory", "cpu-bf16"]
    )
    parser.add_argument(
        "--model", default="ViT-B-16", help="open_clip architecture (random weights)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ref-dtype", default="fp16", choices=["fp16", "fp32"])
    parser.add_argument("--output", default=None, help="Markdown report path")
    parser.add_argument("--json", default=None, help="raw results path")
    parser.add_argument(
        "--memory",
        action="append",
        default=None,
        metavar="C,B,BUDGET_MB",
        help="CoT-PT step-memory rows to run instead of the preset's (BUDGET_MB 'auto' for none)",
    )
    parser.add_argument(
        "--max-minutes", type=float, default=30.0, help="start no new case after this long"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = (os.getloadavg(),)
    started = time.perf_counter()
    torch.manual_seed(0)
    bench = Bench(args)
    cases, predict, memory = preset(args.preset)
    if args.memory:
        memory = [parse_memory_row(row) for row in args.memory]
    bench.run(cases, predict, memory)
    report = write_report(bench, args, started, load)
    print(report)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(report)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "results": [asdict(r) for r in bench.results],
                    "predict": bench.predict,
                    "memory": bench.memory,
                    "matmul_rate": bench.rate,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
