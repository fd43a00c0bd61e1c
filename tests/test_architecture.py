"""The package's shape (issue 13): imports run one way through the layers below, with no import
cycle (type-only imports included); no module over 500 lines; a small top level; no private name
imported from another module; ``__all__`` lists public API only. See docs/architecture.md."""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import TypeVar

import pytest

import cotprompt

PACKAGE = Path(cotprompt.__file__).resolve().parent
MAX_LINES = 500

#: Layers from the bottom: a module may import its own layer and the layers below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("cotprompt._version", "cotprompt.errors", "cotprompt.types",
                    "cotprompt.protocols", "cotprompt.config", "cotprompt.io",
                    "cotprompt.folder_commit")),
    ("plugins", ("cotprompt.plugins", "cotprompt.hookspecs")),
    ("components", ("cotprompt.backbones", "cotprompt.generators", "cotprompt.tuners",
                    "cotprompt.aggregators", "cotprompt.kernels", "cotprompt.model")),
    ("data, evaluation, training", ("cotprompt.data", "cotprompt.evaluation",
                                    "cotprompt.training")),
    ("artifact", ("cotprompt.artifact",)),
    ("hub", ("cotprompt.hub",)),
    ("pipeline", ("cotprompt.pipeline",)),
    ("tasks", ("cotprompt.tasks", "cotprompt.builtins")),
    ("experiments", ("cotprompt.experiments",)),
    ("cli", ("cotprompt.cli", "cotprompt.__main__", "cotprompt")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or module.startswith(prefix + ".")
            if inside and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    assert best is not None, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return best[0]


def imports_of(module: str) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` of every cotprompt import of a module,
    at any depth (inside functions and ``if TYPE_CHECKING:`` too)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names
                      if a.name.split(".")[0] == "cotprompt"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] != "cotprompt":
                continue
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in MODULES:  # `from package import submodule`
                    found.append((target, None, node.lineno))
                else:
                    found.append((base, alias.name, node.lineno))
    return found


def owner(name: str) -> str:
    """The module an imported dotted name lives in."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def parents(module: str) -> list[str]:
    """The subpackages Python runs (their ``__init__``) before ``module``, below ``cotprompt``."""
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(2, len(parts))
            if ".".join(parts[:n]) in MODULES]


def edges(module: str) -> set[str]:
    """What importing ``module`` runs: each imported module and the subpackages above it that
    ``module`` is not itself inside (whose ``__init__`` is then run first)."""
    found = set()
    for target, _, _ in imports_of(module):
        found.add(owner(target))
        found.update(p for p in parents(owner(target))
                     if not (module == p or module.startswith(p + ".")))
    return found - {module}


GRAPH = {m: edges(m) for m in MODULES}


def test_every_module_is_in_a_layer():
    for module in MODULES:
        layer_of(module)


def test_imports_run_down_the_layers():
    upward = []
    for module in MODULES:
        for target, _, line in imports_of(module):
            if layer_of(owner(target)) > layer_of(module):
                upward.append(f"{module}:{line} imports {owner(target)} "
                              f"({LAYERS[layer_of(owner(target))][0]} is above "
                              f"{LAYERS[layer_of(module)][0]})")
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(GRAPH[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in MODULES:
        if module not in index:
            visit(module)
    assert not cycles, cycles


def test_the_cycle_check_finds_a_cycle():
    """The check above can fail: a graph with a cycle has a strongly connected component."""
    saved = dict(GRAPH)
    try:
        GRAPH["cotprompt.errors"] = GRAPH["cotprompt.errors"] | {"cotprompt.types"}
        GRAPH["cotprompt.types"] = GRAPH["cotprompt.types"] | {"cotprompt.errors"}
        with pytest.raises(AssertionError, match=r"cotprompt\.errors"):
            test_no_import_cycle()
    finally:
        GRAPH.clear()
        GRAPH.update(saved)


def test_no_module_over_the_size_limit():
    long = {m: n for m, p in MODULES.items()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


def test_the_top_level_is_small():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 12, top


def test_no_private_name_is_imported_from_another_module():
    private = []
    for module in MODULES:
        for target, name, line in imports_of(module):
            dunder = name is not None and name.startswith("__") and name.endswith("__")
            if name is not None and name.startswith("_") and not dunder \
                    and owner(target) != module:
                private.append(f"{module}:{line} imports {name} from {target}")
    assert not private, "\n".join(private)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_all_lists_public_api_only(module):
    import importlib

    imported = importlib.import_module(module)
    for name in getattr(imported, "__all__", ()):
        value = getattr(imported, name)
        assert not isinstance(value, (TypeVar, logging.Logger)), f"{module}.__all__: {name}"
        assert not name.startswith("_") or name == "__version__", f"{module}.__all__: {name}"


def test_layers_are_documented():
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    for name, prefixes in LAYERS:
        assert name in text
        for prefix in prefixes:
            assert prefix in text, prefix


def test_the_graph_sees_every_kind_of_import():
    """Plain, relative, ``from package import module``, in functions and type-only imports."""
    assert "cotprompt.pipeline.heads" in GRAPH["cotprompt.pipeline.core"]
    assert "cotprompt.pipeline.serialization" in GRAPH["cotprompt.pipeline.artifacts"]
    assert "cotprompt.model" in GRAPH["cotprompt.training.seeding"]  # under TYPE_CHECKING
    # importing cotprompt.plugins.hookspecs runs cotprompt/plugins/__init__.py first
    assert "cotprompt.plugins" in GRAPH["cotprompt.hookspecs"]
    assert sum(len(v) for v in GRAPH.values()) > 200
