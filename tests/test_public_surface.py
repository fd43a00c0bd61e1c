"""Every import path that the README, docs/, examples/ and benchmarks/ use keeps working, as do
``cotprompt.__all__``, the console script and the plugin entry points (issue 13)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest
import tomllib

import cotprompt

ROOT = Path(__file__).resolve().parents[1]
CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def documented_sources() -> list[tuple[str, str]]:
    """(where, Python source) of every code block of the docs and every example/benchmark."""
    sources = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for n, block in enumerate(CODE_BLOCK.findall(page.read_text(encoding="utf-8"))):
            sources.append((f"{page.relative_to(ROOT)} block {n}", block))
    for folder in ("examples", "benchmarks"):
        for file in sorted((ROOT / folder).rglob("*.py")):
            sources.append((str(file.relative_to(ROOT)), file.read_text(encoding="utf-8")))
    return sources


def cotprompt_imports() -> list[tuple[str, str, str | None]]:
    """(where, module, name or None) of every ``cotprompt`` import in the documented sources."""
    found = []
    for where, source in documented_sources():
        try:
            tree = ast.parse(source)
        except SyntaxError:  # a fragment; its imports are checked by the docs tests
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cotprompt"):
                found += [(where, node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                found += [(where, alias.name, None) for alias in node.names
                          if alias.name.startswith("cotprompt")]
    return found


IMPORTS = cotprompt_imports()


def test_the_docs_import_something():
    modules = {module for _, module, _ in IMPORTS}
    assert {"cotprompt", "cotprompt.data", "cotprompt.tasks"} <= modules


@pytest.mark.parametrize(("where", "module", "name"), IMPORTS,
                         ids=[f"{w}:{m}.{n or ''}" for w, m, n in IMPORTS])
def test_documented_import_works(where, module, name):
    imported = importlib.import_module(module)
    if name is not None and name != "*":
        assert hasattr(imported, name) or importlib.util.find_spec(f"{module}.{name}"), \
            f"{where}: from {module} import {name}"


@pytest.mark.parametrize("name", cotprompt.__all__)
def test_every_name_in_all_exists(name):
    assert getattr(cotprompt, name) is not None


def test_console_script_and_plugin_entry_points_resolve():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    targets = list(project["scripts"].values())
    for group in project.get("entry-points", {}).values():
        targets += list(group.values())
    assert targets
    for target in targets:
        module, _, attribute = target.partition(":")
        imported = importlib.import_module(module)
        assert not attribute or hasattr(imported, attribute), target
