"""Cutting the text encoder's work: activation budgets, length buckets and chunks.

:func:`resolve_budget` turns a user's ``memory_budget_mb`` (or none: half the free memory) into
bytes; :func:`length_buckets` groups sequences by end-of-text position so that each group is
truncated after its own longest sequence, making another group only when it saves enough padded
work to pay for one more encoder call; :func:`plan_chunks` cuts the groups into chunks that fit
the budget and :func:`run_chunks` runs them (recomputed in the backward pass when training needs
more than the budget), rows back in order.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

#: Fraction of the free device memory used as the activation budget when none is set.
AUTO_BUDGET_FRACTION = 0.5
#: Smallest automatic budget.
MIN_AUTO_BUDGET = 256 * 2**20
#: Extra length buckets must save at least this fraction of the padded tokens each.
BUCKET_GAIN = 0.03
MAX_BUCKETS = 4
#: Fixed cost of one more encoder call, in token positions: every call reads all the weights
#: (small calls are bound by memory bandwidth) and, on a GPU, launches every kernel again.
BUCKET_OVERHEAD_TOKENS = {"cpu": 64, "cuda": 4096}


def free_memory_bytes(device: torch.device) -> int:
    """Free memory on ``device``: CUDA's free memory, or the host's available memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def resolve_budget(budget_mb: float | None, device: torch.device) -> int:
    """Activation budget in bytes: ``budget_mb``, or half the free memory of ``device``."""
    if budget_mb is not None:
        return int(budget_mb * 2**20)
    return max(MIN_AUTO_BUDGET, int(AUTO_BUDGET_FRACTION * free_memory_bytes(device)))


def length_buckets(
    lengths: Tensor,
    weights: Tensor | None = None,
    max_buckets: int | None = None,
    overhead: int | None = None,
) -> list[Tensor]:
    """Split items into groups of similar length, minimising the padded work.

    Args:
        lengths: ``[T]`` positions each item needs.
        weights: ``[T]`` rows per item (default 1).
        max_buckets: At most this many groups (default :data:`MAX_BUCKETS`).
        overhead: Cost of one more group in token positions (default by device,
            :data:`BUCKET_OVERHEAD_TOKENS`).

    Returns:
        Index tensors (into ``lengths``), one per group, shortest group first. A further group is
        only made when it saves more than ``overhead`` token positions and at least
        :data:`BUCKET_GAIN` of the padded work.
    """
    lengths_cpu = lengths.detach().cpu().long()
    weight_cpu = torch.ones_like(lengths_cpu) if weights is None else weights.detach().cpu().long()
    if overhead is None:
        overhead = BUCKET_OVERHEAD_TOKENS.get(lengths.device.type, 64)
    bounds = _bucket_bounds(
        tuple(lengths_cpu.tolist()),
        tuple(weight_cpu.tolist()),
        max_buckets or MAX_BUCKETS,
        overhead,
    )
    groups = []
    for low, high in bounds:
        idx = torch.nonzero((lengths_cpu >= low) & (lengths_cpu <= high)).flatten()
        groups.append(idx.to(lengths.device))
    return groups


def plan_chunks(
    groups: list[tuple[Tensor, int]],
    row_bytes: Callable[[int, torch.dtype, bool], int],
    dtype: torch.dtype,
    device: torch.device,
    budget_bytes: int | None,
    max_rows: int | None,
) -> tuple[list[tuple[Tensor, int, int]], bool, dict[str, Any]]:
    """Cut length groups into chunks that fit the activation budget.

    Args:
        groups: ``(rows, length)`` of each length bucket.
        row_bytes: Estimated activation bytes of one row: ``row_bytes(length, dtype, training)``.
        dtype: The dtype the encoder computes in.
        device: Where it runs (for the default budget, :func:`resolve_budget`).
        budget_bytes: The activation budget; ``None`` for half the free memory.
        max_rows: At most this many rows per chunk.

    Returns:
        The chunks ``(rows, length, group)``, whether to recompute them in the backward pass
        (training that needs more than the budget), and the plan that the encoder reports as
        ``last_plan`` (``bucket_lengths``, ``chunks``, ``recompute``, ``estimated_bytes``,
        ``budget_bytes``).
    """
    training = torch.is_grad_enabled()
    budget = budget_bytes if budget_bytes is not None else resolve_budget(None, device)
    need = sum(len(rows) * row_bytes(length, dtype, training) for rows, length in groups)
    recompute = training and need > budget
    chunks = []
    for g, (rows, length) in enumerate(groups):
        per_row = max(1, row_bytes(length, dtype, training))
        size = max(1, budget // per_row) if need > budget else len(rows)
        if max_rows is not None:
            size = min(size, max_rows)
        for start in range(0, len(rows), size):
            chunks.append((rows[start : start + size], length, g))
    plan = {
        "bucket_lengths": [length for _, length in groups],
        "chunks": len(chunks),
        "recompute": recompute,
        "estimated_bytes": need,
        "budget_bytes": budget,
    }
    return chunks, recompute, plan


def run_chunks(
    chunks: list[tuple[Tensor, int, int]],
    chunk_fn: Callable[..., Tensor],
    recompute: bool,
    num_rows: int,
) -> Tensor:
    """Run the chunks (recomputed in the backward pass when ``recompute``), rows in order.

    Args:
        chunks: ``(rows, length, group)`` from :func:`plan_chunks`.
        chunk_fn: ``chunk_fn(rows, length, group)`` -> the features of those rows.
        recompute: Checkpoint each chunk (activation recomputation).
        num_rows: The number of rows in all; the chunks must hold each once.

    Returns:
        ``[num_rows, E]`` features, in row order.
    """
    parts: list[Tensor] = []
    for idx, length, g in chunks:
        if recompute:
            parts.append(checkpoint(chunk_fn, idx, length, g, use_reentrant=False))
        else:
            parts.append(chunk_fn(idx, length, g))
    features = parts[0] if len(parts) == 1 else torch.cat(parts)
    perm = chunks[0][0] if len(chunks) == 1 else torch.cat([c[0] for c in chunks])
    if len(perm) != num_rows:
        raise RuntimeError("internal error: rows lost in bucketing")
    if torch.equal(perm, torch.arange(num_rows, device=perm.device)):
        return features
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(num_rows, device=perm.device)
    return features[inverse]


@functools.lru_cache(maxsize=64)
def _bucket_bounds(
    lengths: tuple[int, ...], weights: tuple[int, ...], max_buckets: int, overhead: int
) -> list[tuple[int, int]]:
    """``(low, high)`` length ranges of the buckets (a small dynamic programme, memoised)."""
    totals: dict[int, int] = {}
    for length, weight in zip(lengths, weights, strict=True):
        totals[length] = totals.get(length, 0) + weight
    values = sorted(totals)
    counts = [totals[v] for v in values]
    d = len(values)
    prefix = [0]
    for c in counts:
        prefix.append(prefix[-1] + c)

    def cost(i: int, j: int) -> int:  # items with values[i..j] padded to values[j]
        return values[j] * (prefix[j + 1] - prefix[i])

    inf = float("inf")
    best: list[list[float]] = [[inf] * d for _ in range(max_buckets + 1)]
    back: list[list[int]] = [[0] * d for _ in range(max_buckets + 1)]
    for j in range(d):
        best[1][j] = cost(0, j)
    for b in range(2, max_buckets + 1):
        for j in range(d):
            for i in range(1, j + 1):
                value = best[b - 1][i - 1] + cost(i, j)
                if value < best[b][j]:
                    best[b][j], back[b][j] = value, i
    chosen = 1
    for b in range(2, max_buckets + 1):
        saving = best[chosen][d - 1] - best[b][d - 1]
        if saving > overhead * (b - chosen) and saving >= BUCKET_GAIN * best[chosen][d - 1]:
            chosen = b
    bounds = []
    j = d - 1
    for b in range(chosen, 0, -1):
        i = back[b][j] if b > 1 else 0
        bounds.append((values[i], values[j]))
        j = i - 1
    return list(reversed(bounds))
