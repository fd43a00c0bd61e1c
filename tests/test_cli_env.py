"""``cotprompt env``: versions, devices, plugins and cache folders, as text and as JSON."""

from __future__ import annotations

import json

import pytest

from cotprompt._version import __version__
from cotprompt.cli import main


def test_env_json(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                  tmp_path) -> None:
    monkeypatch.setenv("COTPROMPT_CACHE_DIR", str(tmp_path))
    assert main(["env", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    versions = report["versions"]
    assert versions["cotprompt"] == __version__
    for name in ("python", "platform", "torch", "torch CUDA build", "open_clip",
                 "huggingface_hub", "accelerate", "pydantic", "transformers", "datasets",
                 "matplotlib"):
        assert versions[name], name
    assert set(report["devices"]) == {"cuda", "cuda_devices", "mps"}
    assert {"name": "cotprompt.builtins", "package": "cotprompt",
            "version": __version__} in report["plugins"]
    assert report["plugin_failures"] == []
    assert report["caches"]["cotprompt LM cache"] == f"{tmp_path / 'lm'} (none)"


def test_env_reports_missing_optional_packages(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "matplotlib":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "matplotlib        not installed" in out
    for heading in ("versions:", "CUDA available:", "MPS available:", "plugins:",
                    "cache folders:"):
        assert heading in out
