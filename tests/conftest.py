"""Shared fixtures: a small random open_clip backbone and the shared real data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cotprompt.backbones import TINY_MODEL, OpenCLIPBackbone, OpenCLIPBackboneConfig

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_backbone() -> OpenCLIPBackbone:
    """cotprompt-tiny with random weights (no pretrained weights can be downloaded here)."""
    return OpenCLIPBackbone(OpenCLIPBackboneConfig(model_name=TINY_MODEL, pretrained=None))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests using it skip where it is absent (a user's machine)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """The tests' tiny models gain nothing from more threads; on a busy 2-core machine thread
    hand-off makes every small op many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "loader_workers: keep num_workers='auto' resolving to worker processes")


@pytest.fixture(autouse=True)
def _main_process_loading(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """``num_workers="auto"`` loads in the main process, except in tests marked
    ``loader_workers``: starting worker processes for every tiny run makes the suite much slower
    on a busy machine (results do not depend on it: tests/test_data_loading.py)."""
    if request.node.get_closest_marker("loader_workers") is None:
        import cotprompt.training.config as training_config

        monkeypatch.setattr(training_config, "default_num_workers", lambda: 0)
