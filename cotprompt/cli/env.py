"""The ``cotprompt env`` command: what a bug report needs to know about this installation.

Versions (cotprompt, Python, the platform, torch and its CUDA build, open_clip, huggingface_hub,
accelerate, pydantic and the optional transformers, datasets, matplotlib), devices (CUDA and its
device names, MPS), the registered plugins (and those that failed to load) and the cache
folders. Plain text by default, ``--json`` for a JSON object.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

from cotprompt.cli._common import EXIT_OK, add_json, print_json, table, write

__all__ = ["add_commands"]

#: The distributions whose versions are reported, in this order; the last three are optional.
PACKAGES = ("torch", "open_clip_torch", "huggingface_hub", "accelerate", "pydantic",
            "transformers", "datasets", "matplotlib")
NOT_INSTALLED = "not installed"


def add_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``env`` to the ``cotprompt`` parser.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.
        common: The parent parser of the options every subcommand accepts.
    """
    parser = subparsers.add_parser(
        "env", parents=[common], help="print versions, devices, plugins and cache folders",
        description=(
            "Print what a bug report needs: the versions of cotprompt, Python, the platform and "
            "the libraries cotprompt uses, the CUDA and MPS devices, the registered plugins "
            "(and those that failed to load) and the cache folders."
        ),
    )
    add_json(parser, "print a JSON object {versions, devices, plugins, plugin_failures, caches}")
    parser.set_defaults(handler=_cmd_env)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return NOT_INSTALLED


def _versions() -> dict[str, str]:
    from cotprompt._version import __version__

    versions = {
        "cotprompt": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for name in PACKAGES:
        versions["open_clip" if name == "open_clip_torch" else name] = _version(name)
    import torch

    versions["torch CUDA build"] = torch.version.cuda or "none (CPU build)"
    return versions


def _devices() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda \
        else []
    mps = getattr(torch.backends, "mps", None)
    return {"cuda": cuda, "cuda_devices": names,
            "mps": bool(mps is not None and mps.is_available())}


def _plugins() -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    from cotprompt.plugins.registry import get_registry

    registry = get_registry()
    plugins: dict[tuple[str, str], dict[str, Any]] = {}
    for component in registry.to_json_list():
        key = (str(component["plugin"]), str(component["package"]))
        plugins.setdefault(key, {"name": key[0], "package": key[1],
                                 "version": component["version"]})
    failures = [{"name": f.name, "package": f.package, "error": f.error}
                for f in registry.failures]
    return list(plugins.values()), failures


def _caches() -> dict[str, str]:
    from huggingface_hub import constants as hf_constants

    from cotprompt.generators.lm_cache import default_cache_dir

    lm_cache = default_cache_dir()
    return {
        "huggingface_hub": str(hf_constants.HF_HUB_CACHE),
        "open_clip": os.path.expanduser("~/.cache/clip"),
        "cotprompt LM cache": str(lm_cache) if Path(lm_cache).is_dir() else f"{lm_cache} (none)",
    }


def _cmd_env(args: argparse.Namespace) -> int:
    plugins, failures = _plugins()
    report: dict[str, Any] = {"versions": _versions(), "devices": _devices(), "plugins": plugins,
              "plugin_failures": failures, "caches": _caches()}
    if args.json:
        print_json(report)
        return EXIT_OK
    devices = report["devices"]
    cuda = ("yes: " + ", ".join(devices["cuda_devices"])) if devices["cuda"] else "no"
    write("versions:")
    write(table(("name", "version"), list(report["versions"].items()), (False, False)))
    write()
    write(f"CUDA available: {cuda}")
    write(f"MPS available: {'yes' if devices['mps'] else 'no'}")
    write()
    write("plugins:")
    write(table(("plugin", "package", "version"),
                [(p["name"], p["package"], p["version"] or "-") for p in plugins],
                (False, False, False)))
    for failure in failures:
        write(f"failed to load: plugin {failure['name']!r} (package {failure['package']}): "
              f"{failure['error']}")
    write()
    write("cache folders:")
    write(table(("cache", "folder"), list(report["caches"].items()), (False, False)))
    return EXIT_OK
