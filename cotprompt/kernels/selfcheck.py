"""Check the Triton kernels against their PyTorch references, forward and backward.

Run on a GPU::

    python -m cotprompt.kernels.selfcheck --device cuda

or on the CPU through Triton's interpreter (slow, small shapes)::

    TRITON_INTERPRET=1 python -m cotprompt.kernels.selfcheck --device cpu

Prints one JSON object per check (``name``, ``dtype``, ``shape``, the relative errors of the
outputs and gradients, ``tolerance``, ``ok``) and exits with status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor

from cotprompt.kernels import reference as ref
from cotprompt.kernels.ops import (
    AddLayerNormFunction,
    BiasActFunction,
    CosineCrossEntropyFunction,
)

TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def rel_err(actual: Tensor, expected: Tensor) -> float:
    """``max|a - e| / max|e|`` (normwise relative error)."""
    expected = expected.detach().float()
    scale = expected.abs().max().clamp_min(1e-30)
    return float((actual.detach().float() - expected).abs().max() / scale)


def _grads(
    fn: Callable[..., Sequence[Tensor]], inputs: Sequence[Tensor], seeds: Sequence[Tensor]
) -> tuple[list[Tensor], list[Tensor]]:
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    outs = fn(*leaves)
    # a tensor, not sum()'s start value 0: fn returns at least one output
    total = cast(Tensor, sum((o.float() * s).sum() for o, s in zip(outs, seeds, strict=True)))
    grads = torch.autograd.grad(total, leaves)
    return [o.detach() for o in outs], list(grads)


def _compare(name: str, dtype: torch.dtype, shape: Any, kernel, reference) -> dict[str, Any]:
    errors = {}
    for i, (a, e) in enumerate(zip(kernel[0], reference[0], strict=True)):
        errors[f"out{i}"] = rel_err(a, e)
    for i, (a, e) in enumerate(zip(kernel[1], reference[1], strict=True)):
        errors[f"grad{i}"] = rel_err(a, e)
    tol = TOLERANCE[dtype]
    return {
        "name": name,
        "dtype": str(dtype).replace("torch.", ""),
        "shape": list(shape),
        "errors": errors,
        "tolerance": tol,
        "ok": all(err <= tol for err in errors.values()),
    }


def check_add_layer_norm(shape, dtype, device, residual: bool = True) -> dict[str, Any]:
    """Kernel vs reference, computed from the same (rounded) inputs; the reference in fp32."""
    g = torch.Generator().manual_seed(1)
    n = shape[-1]
    x = torch.randn(shape, generator=g).to(device, dtype)
    r = torch.randn(shape, generator=g).to(device, dtype)
    w = (1 + 0.1 * torch.randn(n, generator=g)).to(device)
    b = (0.1 * torch.randn(n, generator=g)).to(device)
    seeds = [torch.randn(shape, generator=g).to(device) for _ in range(2)]
    kernel: Callable[..., Any]
    reference: Callable[..., Any]
    if residual:

        def kernel_fn(x, r):
            return AddLayerNormFunction.apply(x, r, w, b, 1e-5, None)

        def ref_fn(x, r):
            return ref.add_layer_norm_ref(x.float(), r.float(), w, b, 1e-5)

        kernel, reference = kernel_fn, ref_fn
        inputs = [x, r]
    else:

        def kernel_ln_fn(x):
            return (AddLayerNormFunction.apply(x, None, w, b, 1e-5, None),)

        def ref_ln_fn(x):
            return (ref.add_layer_norm_ref(x.float(), None, w, b, 1e-5)[1],)

        kernel, reference = kernel_ln_fn, ref_ln_fn
        inputs, seeds = [x], seeds[1:]
    name = "add_layer_norm" if residual else "layer_norm"
    return _compare(
        name, dtype, shape, _grads(kernel, inputs, seeds), _grads(reference, inputs, seeds)
    )


def check_bias_act(shape, dtype, device, activation: str) -> dict[str, Any]:
    """Kernel vs reference (fp32 reference on the same rounded inputs)."""
    g = torch.Generator().manual_seed(2)
    x = (2 * torch.randn(shape, generator=g)).to(device, dtype)
    bias = torch.randn(shape[-1], generator=g).to(device, dtype)
    seeds = [torch.randn(shape, generator=g).to(device)]

    def kernel_fn(x, bias):
        return (BiasActFunction.apply(x, bias, activation),)

    def ref_fn(x, bias):
        return (ref.bias_act_ref(x.float(), bias.float(), activation),)

    return _compare(
        f"bias_act[{activation}]",
        dtype,
        shape,
        _grads(kernel_fn, [x, bias], seeds),
        _grads(ref_fn, [x, bias], seeds),
    )


def check_cosine_ce(batch, shared, steps, classes, dim, dtype, device) -> dict[str, Any]:
    """Kernel vs reference loss and gradients (``reduction='mean'`` and ``'none'``)."""
    g = torch.Generator().manual_seed(3)
    image = torch.randn(batch, dim, generator=g).to(device, dtype)
    text = torch.randn(batch if not shared else 1, steps, classes, dim, generator=g)
    text = text.to(device, dtype)
    targets = torch.randint(0, classes, (batch,), generator=g).to(device)
    weights = torch.rand(batch, generator=g).to(device)
    scale = 30.0

    def kernel_fn(image, text):
        mean = CosineCrossEntropyFunction.apply(image, text, scale, targets, "mean")
        rows = CosineCrossEntropyFunction.apply(image, text, scale, targets, "none")
        return mean.reshape(1), rows

    def ref_fn(image, text):
        args = (image.float(), text.float(), scale, targets)
        return ref.cosine_cross_entropy_ref(*args).reshape(1), ref.cosine_cross_entropy_ref(
            *args, reduction="none"
        )

    seeds = [torch.ones(1, device=device), weights]
    return _compare(
        "cosine_cross_entropy[shared]" if shared else "cosine_cross_entropy[per-image]",
        dtype,
        (batch, steps, classes, dim),
        _grads(kernel_fn, [image, text], seeds),
        _grads(ref_fn, [image, text], seeds),
    )


def check_head_loss(batch, shared, classes, dim, dtype, device) -> dict[str, Any]:
    """``MeanAggregator.loss`` as training calls it (fp32 normalised image features, text
    features in ``dtype`` normalised by the tuner, a frozen logit scale): dispatched to the fused
    kernel vs the plain logits + cross-entropy (kernels switched off, fp32).

    Gradients are compared at the un-normalised features, as the tuners produce them: the
    kernel normalises again, so its gradient at a unit vector lacks the radial part that the
    tuner's own normalisation removes anyway."""
    import torch.nn.functional as F

    from cotprompt.aggregators import MeanAggregator
    from cotprompt.kernels.ops import kernels_disabled, uses_triton

    g = torch.Generator().manual_seed(5)
    image = torch.randn(batch, dim, generator=g).to(device)
    text = torch.randn(1 if shared else batch, 3, classes, dim, generator=g).to(device, dtype)
    targets = torch.randint(0, classes, (batch,), generator=g).to(device)
    scale = torch.tensor(100.0, device=device)
    aggregator = MeanAggregator()

    def loss_fn(image, text):
        image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
        return (aggregator.loss(image, text, scale, targets).reshape(1),)

    seeds = [torch.ones(1, device=device)]
    kernel = _grads(loss_fn, [image, text], seeds)
    with kernels_disabled():  # the plain computation in fp32, as the other checks' references
        plain = _grads(loss_fn, [image, text.float()], seeds)
    result = _compare(
        "head_loss[shared]" if shared else "head_loss[per-image]",
        dtype,
        (batch, 3, classes, dim),
        kernel,
        plain,
    )
    result["kernels"] = uses_triton(image, text)
    return result


def check_text_encoder(device: str, dtype: torch.dtype, quick: bool = False) -> list[dict]:
    """The fast text-encoder path with the kernels (tiny backbone) vs the plain path without:
    CoOp (shared prefix) and, unless ``quick``, CoCoOp with class-specific context (no
    prefix)."""
    import torch.nn.functional as F

    from cotprompt.backbones import TINY_MODEL, OpenCLIPBackbone, OpenCLIPBackboneConfig
    from cotprompt.kernels.ops import kernels_disabled, uses_triton
    from cotprompt.tuners import CoCoOpConfig, CoCoOpTuner, CoOpConfig, CoOpTuner
    from cotprompt.types import PromptChain, PromptStep

    # quick: labels of one token each, so one length bucket (each interpreted launch is slow)
    labels = ("cat", "dog", "fox") if quick else ("beagle", "golden retriever", "sea turtle")
    chain = PromptChain(
        labels=labels,
        steps=(PromptStep("class", tuple((f"{c}.",) for c in labels)),),
        zero_shot=tuple((c,) for c in labels),
    )
    backbone = OpenCLIPBackbone(OpenCLIPBackboneConfig(model_name=TINY_MODEL, pretrained=None))
    backbone.to(device)
    results = []
    cases = [("coop", CoOpTuner, CoOpConfig()), ("cocoop-csc", CoCoOpTuner, CoCoOpConfig())]
    cases[1][2].class_specific = True
    if quick:
        cases = cases[:1]
    for name, cls, config in cases:
        torch.manual_seed(0)
        fast = cls(config.model_copy(update={"text_encoder": "fast"}))
        fast.bind(backbone, chain)
        with torch.no_grad():
            for p in fast.parameters():
                p.add_(0.05 * torch.randn_like(p))
        plain = cls(config.model_copy(update={"text_encoder": "plain"}))
        plain.bind(backbone, chain)
        plain.load_state_dict(fast.state_dict())
        features = F.normalize(torch.randn(3, backbone.embed_dim, device=device), dim=-1)
        seed = torch.randn(3, 1, len(labels), backbone.embed_dim, device=device)
        outs = []
        for tuner in (fast, plain):
            autocast = torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32)
            with autocast, kernels_disabled() if tuner is plain else _nothing():
                text = tuner.encode_text(backbone, features if tuner.image_conditioned else None)
            grads = torch.autograd.grad(
                (text.float() * seed[: text.shape[0]]).sum(), [p for p in tuner.parameters()]
            )
            outs.append(([text], list(grads)))
        result = _compare(f"text_encoder[{name}]", dtype, (3, len(labels)), outs[0], outs[1])
        result["tolerance"] = 1e-4 if dtype == torch.float32 else 5e-2
        result["ok"] = all(e <= result["tolerance"] for e in result["errors"].values())
        result["kernels"] = uses_triton(features)
        results.append(result)
    return results


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def run_checks(
    device: str, dtypes: Sequence[torch.dtype], large: bool = False, quick: bool = False
) -> list[dict]:
    """All checks; ``large`` adds GPU-sized shapes, ``quick`` keeps two shapes per kernel."""
    results = []
    ln_shapes = [(3, 5, 64), (7, 100), (2, 9, 96)]
    act_shapes = [(3, 7, 100), (5, 256)]
    ce_shapes = [(4, False, 3, 37, 64), (5, True, 2, 70, 48), (1, True, 1, 10, 16)]
    if quick:
        ln_shapes, act_shapes, ce_shapes = ln_shapes[:2], act_shapes[:1], ce_shapes[:2]
    if large:
        ln_shapes += [(64, 77, 512), (4096, 768)]
        act_shapes += [(64, 77, 2048)]
        ce_shapes += [(32, False, 3, 1000, 512), (32, True, 1, 1000, 512)]
    for dtype in dtypes:
        for shape in ln_shapes:
            results.append(check_add_layer_norm(shape, dtype, device))
        results.append(check_add_layer_norm(ln_shapes[0], dtype, device, residual=False))
        for shape in act_shapes:
            for activation in ("quick_gelu", "gelu", "gelu_tanh"):
                results.append(check_bias_act(shape, dtype, device, activation))
        for batch, shared, steps, classes, dim in ce_shapes:
            results.append(check_cosine_ce(batch, shared, steps, classes, dim, dtype, device))
        for shared in (True, False):
            results.append(check_head_loss(3, shared, 11, 32, dtype, device))
        if dtype == torch.float32 or device != "cpu":
            results.extend(check_text_encoder(device, dtype, quick))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32,fp16,bf16")
    parser.add_argument("--large", action="store_true", help="add GPU-sized shapes")
    parser.add_argument("--quick", action="store_true", help="two shapes per kernel")
    args = parser.parse_args(argv)
    dtypes = [DTYPES[d] for d in args.dtypes.split(",") if d]
    failed = 0
    for result in run_checks(args.device, dtypes, args.large, args.quick):
        failed += not result["ok"]
        print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
