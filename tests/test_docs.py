"""The documentation is right and runs: docs/configuration.md documents every option of every
built-in component, of training, of the data section and of the config file, with the right
defaults; every code block of README.md and docs/*.md runs, parses or is skipped with a reason
(see below)."""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from test_hub import hf_home, serving  # noqa: F401 (hf_home: a fixture used by docs_hub)

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


# -- every code block of README.md and docs/*.md runs as written ------------------------------
#
# python  blocks run in order, one namespace per file, in a fresh working folder holding small
#         stand-ins for the data the blocks name (data/pets/..., data/train, beagle.jpg,
#         prompts/*.json, DATA/birds/...). A block whose first line is a comment naming a file
#         (`# my_plugin/__init__.py`) is that file: it is written to the working folder (which is
#         on sys.path), not executed. Functions named test_* that a block defines are called.
# toml / yaml / json  blocks parse; a pyproject.toml names its project and version; a `data:`
#         section validates as cotprompt.data.spec.DataSpec.
# console / sh  blocks: each `cotprompt ...` command (also after `python -m`, `torchrun ... -m`,
#         `accelerate launch ... -m`) parses with the cotprompt command-line parser; where some
#         lines start with `$ `, only those are commands, the rest is output. Untagged blocks
#         whose every line is a `cotprompt ...` command are checked the same way; other untagged
#         and `text` blocks are output or diagrams.
#
# COTPROMPT_DOCS_OFFLINE (default 1): the python blocks run offline: every open_clip backbone
# that names real weights (`ViT-B-16` / `openai`) is built as the random-weight
# cotprompt-tiny-avgpool instead, the Hub is a local test server (tests/hub_server) and `gpt2` is
# a tiny random GPT-2 saved to ./gpt2. Set COTPROMPT_DOCS_OFFLINE=0 on a machine with network
# access to run them with the real weights (the data stays the small stand-ins).
#
# A block preceded by `<!-- docs-test: skip (REASON) -->` is not run; the test of its file
# reports each skipped block with its reason. Keep these few.

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```[ \t]*$", re.S | re.M)
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)]*(?:\([^)]*\)[^)]*)*)\)\s*-->\s*$")
FILE_HEADER = re.compile(r"#\s*([\w./-]+\.py)\b")
SHELL_LANGS = {"console", "sh", "bash", "shell"}
OFFLINE = os.environ.get("COTPROMPT_DOCS_OFFLINE", "1").strip().lower() not in {"0", "false", "no"}


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    lang: str
    code: str
    skip: str | None

    def __str__(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line} ({self.lang or 'untagged'})"


def blocks(doc: Path) -> list[Block]:
    text = doc.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        found.append(Block(doc, text.count("\n", 0, match.start()) + 1, match["lang"].lower(),
                           match["code"], skip["reason"].strip() if skip else None))
    return found


ALL_BLOCKS = [block for doc in DOC_FILES for block in blocks(doc)]
PY_DOCS = sorted({b.doc for b in ALL_BLOCKS if b.lang == "python"})


def test_skip_markers_name_a_reason_and_a_block() -> None:
    for doc in DOC_FILES:
        lines = doc.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.lstrip().startswith("<!--") and "docs-test:" in line:
                assert SKIP.search(line) and SKIP.search(line)["reason"].strip(), (
                    f"{doc.name}:{i + 1}: write `<!-- docs-test: skip (REASON) -->`")
                assert i + 1 < len(lines) and lines[i + 1].startswith("```"), (
                    f"{doc.name}:{i + 1}: a skip marker goes on the line before a code block")


# -- console ----------------------------------------------------------------------------------


def shell_commands(block: Block) -> list[str]:
    lines = block.code.replace("\\\n", " ").splitlines()
    if any(line.startswith("$ ") for line in lines):
        return [line[2:] for line in lines if line.startswith("$ ")]
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def cotprompt_argvs(command: str) -> list[list[str]]:
    """The argument lists given to cotprompt in one shell command line."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    segments: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set(";&|()<>"):
            segments.append([])
        else:
            segments[-1].append(token)
    found = []
    loop_values: dict[str, str] = {}  # `for X in A B C; do ...`: X stands for A
    for words in segments:
        if len(words) >= 4 and words[0] == "for" and words[2] == "in":
            loop_values[words[1]] = words[3]
            continue
        for name, value in loop_values.items():
            words = [w.replace("${" + name + "}", value).replace("$" + name, value) for w in words]
        while words and (re.match(r"^\w+=", words[0]) or words[0] in {"do", "then", "else"}):
            words = words[1:]
        for i, word in enumerate(words):
            if word == "cotprompt" and (i == 0 or words[i - 1] == "-m"):
                found.append(words[i + 1:])
                break
    return found


CLI_BLOCKS = [b for b in ALL_BLOCKS if b.lang in SHELL_LANGS or (
    b.lang == "" and b.code.strip()
    and all(line.startswith("cotprompt ") for line in b.code.strip().splitlines()))]


@pytest.mark.parametrize("block", CLI_BLOCKS, ids=str)
def test_console_blocks_parse(block: Block) -> None:
    from cotprompt.cli.app import build_parser

    if block.skip:
        pytest.skip(f"{block}: {block.skip}")
    for command in shell_commands(block):
        for argv in cotprompt_argvs(command):
            if argv in (["--version"], ["--help"]) or "--help" in argv:
                continue
            try:
                build_parser().parse_args(argv)
            except SystemExit as exc:
                pytest.fail(f"{block}: `cotprompt {shlex.join(argv)}` does not parse ({exc})")


# -- toml, yaml, json -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "block", [b for b in ALL_BLOCKS if b.lang in {"toml", "yaml", "yml", "json"}], ids=str)
def test_data_blocks_parse(block: Block) -> None:
    import tomllib
    import yaml

    if block.lang == "toml":
        data = tomllib.loads(block.code)
        project = data.get("project")
        if project is not None:
            dynamic = set(project.get("dynamic", ()))
            for key in ("name", "version"):
                assert key in project or key in dynamic, f"{block}: [project] has no {key}"
    elif block.lang == "json":
        data = json.loads(block.code)
    else:
        data = yaml.safe_load(block.code)
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            DataSpec.model_validate(data["data"])


# -- python -----------------------------------------------------------------------------------


def _image(path: Path, channel: int, rng: Any, size: int = 40) -> None:
    import numpy as np
    from PIL import Image

    pixels = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
    pixels[..., channel % 3] = rng.integers(150, 255, size=(size, size), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _folders(root: Path, classes: list[str], train: int, test: int, rng: Any) -> None:
    for split, count in (("train", train), ("test", test)):
        for c, name in enumerate(classes):
            for i in range(count):
                _image(root / split / name / f"{i}.jpg", c, rng)


PETS = ["Abyssinian", "Persian", "beagle"]


def _workspace(root: Path) -> None:
    """The data the documentation's examples name, as small stand-ins."""
    import numpy as np

    rng = np.random.default_rng(0)
    _folders(root / "data" / "pets", PETS, train=16, test=4, rng=rng)
    _folders(root / "data", PETS, train=16, test=4, rng=rng)
    _folders(root / "DATA" / "birds", ["sparrow", "robin"], train=16, test=2, rng=rng)
    _image(root / "beagle.jpg", 2, rng)
    _image(root / "persian.jpg", 1, rng)
    prompts = root / "prompts"
    prompts.mkdir()
    shared = ROOT.parent / "shared" / "data" / "prompts"
    for name in ("descriptors_pets.json", "cupl_pets.json"):
        if (shared / name).is_file():
            (prompts / name).write_bytes((shared / name).read_bytes())
        else:
            texts = ["has soft fur", "is a pet"] if "descriptors" in name else [
                "A photo of a pet.", "A pet at home."]
            (prompts / name).write_text(json.dumps({p: texts for p in PETS}), encoding="utf-8")


def _tiny_gpt2(folder: Path) -> None:
    """./gpt2: a random 2-layer GPT-2 with a byte-level BPE trained here (no download)."""
    pytest.importorskip("transformers")
    from test_generators_lm import _tiny_gpt2 as save_model
    from test_generators_lm import _trained_bpe

    folder.mkdir()
    save_model(_trained_bpe(folder))


@pytest.fixture
def docs_offline(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Real weights -> cotprompt-tiny-avgpool, the Hub -> a local server (when offline)."""
    if not OFFLINE:
        return
    from cotprompt.backbones import TINY_DEMO_MODEL, TINY_MODELS, OpenCLIPBackbone

    original = OpenCLIPBackbone.__init__

    def tiny_init(self: Any, config: Any = None) -> None:
        config = config or OpenCLIPBackbone.Config()
        if config.model_name not in TINY_MODELS:
            config = config.model_copy(update={"model_name": TINY_DEMO_MODEL, "pretrained": None})
        original(self, config)

    monkeypatch.setattr(OpenCLIPBackbone, "__init__", tiny_init)
    monkeypatch.setenv("COTPROMPT_DOCS_OFFLINE", "1")


@pytest.fixture
def docs_hub(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A local Hub (tests/hub_server) with alice's token in HF_TOKEN."""
    if not OFFLINE:
        yield
        return
    from huggingface_hub import constants as hf_constants

    request.getfixturevalue("hf_home")
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)  # the server speaks LFS
    monkeypatch.setenv("HF_TOKEN", "tok-alice")
    with serving(monkeypatch):
        yield


@pytest.mark.parametrize("doc", PY_DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_python_blocks_run(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str],
                           docs_offline: None) -> None:
    import sys

    doc_blocks = [b for b in blocks(doc) if b.lang == "python"]
    if doc.name == "sharing.md":
        request.getfixturevalue("docs_hub")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    _workspace(tmp_path)
    if OFFLINE and any('"gpt2"' in b.code for b in doc_blocks if not b.skip):
        _tiny_gpt2(tmp_path / "gpt2")
    modules_before = set(sys.modules)
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    skipped = []
    try:
        for block in doc_blocks:
            if block.skip:
                skipped.append(f"{block}: {block.skip}")
                continue
            header = FILE_HEADER.match(block.code)
            if header:
                target = tmp_path / header[1]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(block.code, encoding="utf-8")
                continue
            before = set(namespace)
            try:
                exec(compile(block.code, str(block), "exec"), namespace)
                for name in sorted(set(namespace) - before):
                    if name.startswith("test_") and callable(namespace[name]):
                        namespace[name]()
            except Exception as exc:
                raise AssertionError(f"{block} fails as written: {exc!r}") from exc
    finally:
        for name in set(sys.modules) - modules_before:
            file = getattr(sys.modules[name], "__file__", None) or ""
            if file.startswith(str(tmp_path)):
                del sys.modules[name]
    with capsys.disabled():
        for line in skipped:
            print(f"\n  docs-test skip: {line}", end="")
