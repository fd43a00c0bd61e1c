"""The accelerator a run gets: ``accelerate launch --mixed_precision`` is respected when the
training options leave the precision to ``auto``; an explicit precision wins."""

from __future__ import annotations

import pytest
import torch

from cotprompt.errors import TrainingError
from cotprompt.training.loop import make_accelerator


@pytest.fixture(autouse=True)
def _fresh_state():
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    assert PartialState  # imported for the reset above


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU defaults")
def test_auto_is_fp32_on_the_cpu_without_a_launcher(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert make_accelerator("auto").mixed_precision == "no"


def test_auto_takes_the_launchers_mixed_precision(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert make_accelerator("auto").mixed_precision == "bf16"


def test_an_explicit_precision_wins_over_the_launcher(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert make_accelerator("fp32").mixed_precision == "no"


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(),
                    reason="fp16 is refused only without a GPU")
def test_a_launcher_asking_for_fp16_without_a_gpu_is_refused(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(TrainingError, match="fp16"):
        make_accelerator("auto")
