"""docs/configuration.md documents every option of every built-in component, of training, of the
data section and of the config file, with the right defaults."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from cotprompt.config import ComponentSpec
from cotprompt.data.spec import DataSpec
from cotprompt.pipeline import PipelineConfig
from cotprompt.plugins.registry import BUILTIN_PACKAGE, get_registry
from cotprompt.training.config import TrainingConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
SCALARS = (type(None), bool, int, float, str)


def sections() -> list[tuple[str, str]]:
    """(heading, body) of every heading of the document; a body runs to the next heading of the
    same or a higher level."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    heads = [(i, len(line) - len(line.lstrip("#"))) for i, line in enumerate(lines)
             if re.match(r"^#{1,6} ", line)]
    out = []
    for n, (i, level) in enumerate(heads):
        end = next((j for j, lvl in heads[n + 1:] if lvl <= level), len(lines))
        out.append((lines[i], "\n".join(lines[i + 1:end])))
    return out


def section(*words: str) -> str:
    """The body of the one section whose heading contains every word (case-insensitive)."""
    found = [body for head, body in sections() if all(w.lower() in head.lower() for w in words)]
    assert len(found) == 1, f"expected one section headed with {words}, found {len(found)}"
    return found[0]


def tables(body: str) -> list[list[dict[str, str]]]:
    """The tables in ``body``, each a list of rows {header: cell}."""
    found: list[list[dict[str, str]]] = []
    header: list[str] | None = None
    for line in body.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if header is None:
            header = cells
            found.append([])
        elif not set("".join(cells)) <= set("-: "):
            found[-1].append(dict(zip(header, cells, strict=False)))
    return found


def default_of(model: type[BaseModel], field: str) -> Any:
    info = model.model_fields[field]
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return info.default


def first_literal(cell: str) -> Any:
    match = re.search(r"`([^`]*)`", cell)
    assert match, f"no `literal` default in {cell!r}"
    return json.loads(match.group(1))


def check_model(body: str, model: type[BaseModel], column: str = "default") -> None:
    """Every field of ``model`` has a row in the first table of ``body`` whose ``column`` shows
    its default (for scalar defaults)."""
    found = tables(body)
    assert found, f"no option table for {model.__name__}"
    rows = {row.get("option", "").strip("`"): row for row in found[0]}
    for field in model.model_fields:
        assert field in rows, f"{model.__name__}.{field} is not documented in {DOC.name}"
        default = default_of(model, field)
        cell = rows[field].get(column)
        assert cell is not None, f"{model.__name__}.{field}: no {column!r} column"
        if default is PydanticUndefined:
            assert "required" in cell, f"{model.__name__}.{field} is required"
        elif isinstance(default, SCALARS):
            assert first_literal(cell) == default, (
                f"{model.__name__}.{field}: documented default {cell}, actual {default!r}")


def nested_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """Models used inside ``model``'s fields (list items, optional values), except specs."""
    found = []
    for info in model.model_fields.values():
        stack = [info.annotation]
        while stack:
            ann = stack.pop()
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                if ann is not ComponentSpec:
                    found.append(ann)
            else:
                stack.extend(getattr(ann, "__args__", ()))
    return found


BUILTINS = [info for info in get_registry().list() if info.package == BUILTIN_PACKAGE]


@pytest.mark.parametrize("info", BUILTINS, ids=lambda i: f"{i.kind}-{i.name}")
def test_every_builtin_option_is_documented(info: Any) -> None:
    config: type[BaseModel] = info.cls.Config
    body = section(info.kind, f"`{info.name}`")
    header_columns = {cell for table in tables(body) for row in table for cell in row}
    column = f"`{info.name}`" if f"`{info.name}`" in header_columns else "default"
    if config.model_fields:
        check_model(body, config, column)
    else:
        assert "no options" in body.lower()
    for nested in nested_models(config):
        for field in nested.model_fields:
            assert f"`{field}`" in body, f"{info.name}: {nested.__name__}.{field} not documented"


def test_training_options_are_documented() -> None:
    check_model(section("## Training"), TrainingConfig)


def test_data_options_are_documented() -> None:
    check_model(section("## Data"), DataSpec)


def test_config_file_sections_are_documented() -> None:
    body = section("The config file")
    rows = {row["option"].strip("`") for row in tables(body)[0]}
    assert set(PipelineConfig.model_fields) | {"data", "output"} <= rows
