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


# ``selfcheck --quick`` as the command line runs it, then the kernels at more shapes where an
# interpreted check is cheap (every kernel in float32 at two shapes or more); exits with 1 when a
# check fails, as the command line does
INTERPRETER_DRIVER = """
import json, sys, torch
from cotprompt.kernels import selfcheck as s
status = s.main(["--device", "cpu", "--quick"])
extra = [s.check_add_layer_norm((2, 9, 96), dtype, "cpu", residual=False)
         for dtype in (torch.float32, torch.bfloat16)]
extra += [s.check_bias_act((5, 256), torch.float32, "cpu", act)
          for act in ("quick_gelu", "gelu", "gelu_tanh")]
extra += [s.check_cosine_ce(*shape, torch.float32, "cpu")
          for shape in ((1, True, 1, 10, 16), (3, False, 2, 5, 16))]
extra += [s.check_head_loss(batch, shared, classes, dim, torch.float32, "cpu")
          for batch, shared, classes, dim in ((5, True, 19, 48), (1, False, 3, 8))]
for result in extra:
    print(json.dumps(result), flush=True)
sys.exit(status or int(not all(r["ok"] for r in extra)))
"""

KERNELS = ["add_layer_norm", "layer_norm", "bias_act", "cosine_cross_entropy", "head_loss",
           "text_encoder"]
# independent of the tolerance each check reports: fp32 kernels within 1e-5 of the fp32
# reference (relative to its largest value), bf16 within 1e-2; the whole text encoder (many
# kernels and matmuls) within 1e-4 of the plain path
MAX_ERROR = {"float32": 1e-5, "bfloat16": 1e-2}
MAX_ERROR_TEXT_ENCODER = 1e-4


@pytest.fixture(scope="module")
def interpreter_results():
    """The kernel checks, run once under ``TRITON_INTERPRET=1``. Skipped only where Triton is
    not installed; a run that cannot compare the kernels (Triton cannot start, a check crashes,
    no output) fails, showing the subprocess's error output."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed (it ships with CUDA builds of PyTorch): the "
                    "Triton kernels were NOT compared with their references")
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    env.pop("COTPROMPT_DISABLE_KERNELS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", INTERPRETER_DRIVER],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=240,
    )
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    expected_status = int(not all(r["ok"] for r in results))
    if not results or proc.returncode != expected_status:
        pytest.fail(
            f"Triton's interpreter could not compare the kernels with their references (exit "
            f"status {proc.returncode}, {len(results)} checks reported):\n{proc.stderr[-3000:]}",
            pytrace=False,
        )
    return results


def test_every_kernel_check_ran(interpreter_results):
    """No check is left out of the per-kernel tests below (nor silently missing from the run)."""
    assert {r["name"].split("[")[0] for r in interpreter_results} == set(KERNELS)


@pytest.mark.parametrize("kernel", KERNELS)
def test_triton_kernels_match_references_in_the_interpreter(interpreter_results, kernel):
    """Each kernel against its PyTorch reference: outputs and gradients, in fp32 at several
    shapes (and bf16), each error within the bound above; ``head_loss`` and the text encoder
    dispatched to Triton."""
    checks = [r for r in interpreter_results if r["name"].split("[")[0] == kernel]
    assert checks, f"no {kernel} checks ran"
    for check in checks:
        errors = check["errors"]
        assert any(k.startswith("out") for k in errors), check  # outputs compared
        assert any(k.startswith("grad") for k in errors), check  # and gradients
        bound = MAX_ERROR_TEXT_ENCODER if kernel == "text_encoder" else MAX_ERROR[check["dtype"]]
        worst = max(errors.values())
        assert 0 <= worst <= bound, json.dumps(check, indent=1)
        assert check["ok"], json.dumps(check, indent=1)
        if kernel in ("head_loss", "text_encoder"):
            assert check["kernels"], f"{check['name']} did not dispatch to Triton"
    fp32 = [r for r in checks if r["dtype"] == "float32"]
    if kernel == "text_encoder":
        assert fp32
    else:
        assert {r["dtype"] for r in checks} == {"float32", "bfloat16"}
        for variant in {r["name"] for r in fp32}:  # e.g. each activation, shared or not
            shapes = {tuple(r["shape"]) for r in fp32 if r["name"] == variant}
            assert len(shapes) >= 2, f"{variant}: fp32 compared at {shapes} only"


def test_rel_err_is_the_normwise_relative_error():
    from cotprompt.kernels.selfcheck import rel_err

    expected = torch.randn(10)
    error = torch.zeros(10)
    error[3] = 0.25
    assert rel_err(expected + error, expected) == pytest.approx(
        0.25 / float(expected.abs().max()), rel=1e-5)
    # bf16 rounding (8 significant bits: at most half a unit in the last place) is seen
    assert 0 < rel_err(expected.bfloat16(), expected) <= 2**-8
    assert rel_err(torch.zeros(3), torch.zeros(3)) == 0.0  # no 0 / 0
    assert rel_err(torch.ones(3), torch.zeros(3)) > 1e20
    assert [ops.triton_cdiv(n, 4) for n in (1, 4, 10, 12)] == [1, 1, 3, 3]


class _WrongBackward(torch.autograd.Function):
    """The reference forward with a gradient 1% off: what a kernel with a backward bug gives."""

    @staticmethod
    def forward(ctx, x, bias, activation):
        ctx.save_for_backward(x, bias)
        ctx.activation = activation
        return kernels.bias_act_ref(x, bias, activation)

    @staticmethod
    def backward(ctx, grad):
        x, bias = ctx.saved_tensors
        with torch.enable_grad():
            x, bias = x.detach().requires_grad_(), bias.detach().requires_grad_()
            out = kernels.bias_act_ref(x, bias, ctx.activation)
            dx, dbias = torch.autograd.grad(out, [x, bias], grad)
        return 1.01 * dx, dbias, None


@pytest.mark.parametrize(
    ("kernel", "bad"),
    [
        (lambda x, b, a: kernels.bias_act_ref(x, b, a), set()),
        (lambda x, b, a: kernels.bias_act_ref(x, b, "gelu"), {"out0", "grad0", "grad1"}),
        (lambda x, b, a: kernels.bias_act_ref(x, b, a) * (1 + 1e-4), {"out0", "grad0", "grad1"}),
        (_WrongBackward.apply, {"grad0"}),
    ],
    ids=["exact", "wrong-activation", "off-by-1e-4", "wrong-backward"],
)
def test_the_selfcheck_flags_a_kernel_that_differs_from_its_reference(monkeypatch, kernel, bad):
    """The harness the interpreter tests rely on: a kernel that equals the reference passes, one
    off in its output or only in its gradient fails, naming what differs."""
    from types import SimpleNamespace

    from cotprompt.kernels import selfcheck

    monkeypatch.setattr(selfcheck, "BiasActFunction", SimpleNamespace(apply=kernel))
    result = selfcheck.check_bias_act((3, 20), torch.float32, "cpu", "quick_gelu")
    assert set(result["errors"]) == {"out0", "grad0", "grad1"}
    assert {k for k, e in result["errors"].items() if e > result["tolerance"]} == bad
    assert result["ok"] == (not bad)
