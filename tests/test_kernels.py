"""Fused kernels: references, dispatch and switches here; the Triton kernels themselves through
Triton's CPU interpreter in a subprocess (``TRITON_INTERPRET=1`` must be set before ``triton`` is
imported, so it cannot share this process)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cotprompt import kernels
from cotprompt.aggregators import MeanAggregator
from cotprompt.kernels import ops

ROOT = Path(__file__).resolve().parents[1]


def test_switches(monkeypatch):
    monkeypatch.delenv("COTPROMPT_DISABLE_KERNELS", raising=False)
    kernels.set_kernels_enabled(None)
    assert kernels.kernels_enabled()
    monkeypatch.setenv("COTPROMPT_DISABLE_KERNELS", "1")
    assert not kernels.kernels_enabled()
    kernels.set_kernels_enabled(True)  # the function wins over the environment
    assert kernels.kernels_enabled()
    with kernels.kernels_disabled():
        assert not kernels.kernels_enabled()
    assert kernels.kernels_enabled()
    kernels.set_kernels_enabled(None)
    assert not kernels.kernels_enabled()


def test_cpu_tensors_take_the_reference(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randn(4, 8)
    assert not kernels.uses_triton(x)
    assert not kernels.uses_triton(x.double())
    assert not kernels.uses_triton()


def test_add_layer_norm_reference_matches_torch_modules():
    x, r = torch.randn(2, 3, 16), torch.randn(2, 3, 16)
    norm = torch.nn.LayerNorm(16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    y, h = kernels.add_layer_norm(x, r, norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(y, x + r)
    torch.testing.assert_close(h, norm(x + r))
    y, h = kernels.add_layer_norm(x, None, norm.weight, norm.bias, norm.eps, torch.bfloat16)
    assert y is x and h.dtype == torch.bfloat16


@pytest.mark.parametrize("activation", ["quick_gelu", "gelu", "gelu_tanh"])
def test_bias_act_reference(activation):
    x, b = torch.randn(5, 12), torch.randn(12)
    expected = {
        "quick_gelu": (x + b) * torch.sigmoid(1.702 * (x + b)),
        "gelu": F.gelu(x + b),
        "gelu_tanh": F.gelu(x + b, approximate="tanh"),
    }[activation]
    torch.testing.assert_close(kernels.bias_act(x, b, activation), expected)


@pytest.mark.parametrize("shared", [True, False])
def test_cosine_cross_entropy_equals_mean_aggregator_and_cross_entropy(shared):
    image = torch.randn(4, 16, requires_grad=True)
    text = torch.randn(1 if shared else 4, 3, 7, 16, requires_grad=True)
    targets = torch.tensor([0, 6, 3, 3])
    loss = kernels.cosine_cross_entropy(image, text, 20.0, targets)
    aggregator = MeanAggregator()
    logits = aggregator(F.normalize(image, dim=-1), F.normalize(text, dim=-1), torch.tensor(20.0))
    expected = F.cross_entropy(logits, targets)
    torch.testing.assert_close(loss, expected)
    grads = torch.autograd.grad(loss, [image, text])
    expected_grads = torch.autograd.grad(expected, [image, text])
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e)


@pytest.fixture(scope="module")
def interpreter_results():
    """Run ``cotprompt.kernels.selfcheck`` under ``TRITON_INTERPRET=1`` once."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed (it ships with CUDA builds of PyTorch)")
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "cotprompt.kernels.selfcheck", "--device", "cpu", "--quick"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=240,
    )
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if not results:
        pytest.skip(f"Triton's interpreter could not run the kernels here: {proc.stderr[-2000:]}")
    return results


@pytest.mark.parametrize(
    "kernel",
    [
        "add_layer_norm",
        "layer_norm",
        "bias_act",
        "cosine_cross_entropy",
        "head_loss",
        "text_encoder",
    ],
)
def test_triton_kernels_match_references_in_the_interpreter(interpreter_results, kernel):
    """fp32 within 1e-5 and bf16 within 1e-2 (relative to the largest value), outputs and
    gradients, several shapes; the fast text encoder with the kernels within 1e-4 of the plain
    path."""
    checks = [r for r in interpreter_results if r["name"].split("[")[0] == kernel]
    assert checks, f"no {kernel} checks ran"
    if kernel != "text_encoder":
        assert {r["dtype"] for r in checks} == {"float32", "bfloat16"}
    else:
        assert all(r["kernels"] for r in checks), "the encoder did not dispatch to Triton"
    failed = [r for r in checks if not r["ok"]]
    assert not failed, json.dumps(failed, indent=1)


def test_selfcheck_module_runs_the_reference_comparisons_without_triton_in_process():
    """The check helpers compare like with like (a reference against itself is exact)."""
    from cotprompt.kernels.selfcheck import rel_err

    a = torch.randn(10)
    assert rel_err(a, a) == 0.0
    assert ops.triton_cdiv(10, 4) == 3
