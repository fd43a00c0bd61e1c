"""The documentation site (mkdocs.yml, docs/, docs/api/) builds with ``mkdocs build --strict``:
no broken link or anchor, no docstring that griffe cannot parse; every page of docs/ is in the
nav; the API reference shows the docstrings of the public API, with its Sphinx roles as links
(issue 15).

Building needs the ``docs`` extra (mkdocs, mkdocs-material, mkdocstrings[python]): without it
the build tests skip, saying so, except where the ``CI`` environment variable is set, where
they fail."""

from __future__ import annotations

import html
import importlib.util
import inspect
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from cotprompt import CoTPipeline, TrainingConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SITE_PACKAGES = {"mkdocs": "mkdocs", "mkdocs-material": "material",
                 "mkdocstrings[python]": "mkdocstrings_handlers.python"}


def nav_pages(nav: Any) -> list[str]:
    """Every page path named in a mkdocs ``nav`` (nested lists and {title: page} mappings)."""
    if isinstance(nav, str):
        return [] if "://" in nav else [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return [page for item in nav for page in nav_pages(item)]


def doc_pages() -> set[str]:
    """The Markdown pages of the site: docs/**/*.md but the build's own files (docs/_mkdocs)."""
    return {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")
            if not path.relative_to(DOCS).as_posix().startswith("_mkdocs/")}


def test_every_docs_page_is_in_the_nav() -> None:
    nav = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
    missing = sorted(doc_pages() - set(nav))
    assert not missing, f"add these pages to the nav of mkdocs.yml: {missing}"
    absent = sorted(set(nav) - doc_pages())
    assert not absent, f"the nav of mkdocs.yml names pages that do not exist: {absent}"
    assert len(nav) == len(set(nav)), "a page is twice in the nav of mkdocs.yml"


def test_the_nav_check_sees_a_missing_page() -> None:
    nav = ["index.md", {"Guide": [{"Concepts": "concepts.md"}, "cli.md"]},
           {"API reference": ["api/index.md", {"Data": "api/data.md"}]}, {"Repo": "https://x.org"}]
    assert nav_pages(nav) == ["index.md", "concepts.md", "cli.md", "api/index.md", "api/data.md"]
    assert "configuration.md" in doc_pages() - set(nav_pages(nav))


# -- the strict build -------------------------------------------------------------------------


def require_mkdocs() -> None:
    missing = [name for name, module in SITE_PACKAGES.items()
               if importlib.util.find_spec(module.split(".")[0]) is None
               or importlib.util.find_spec(module) is None]
    if missing:
        message = (f"building the documentation site needs {', '.join(missing)} "
                   f"(pip install -e \".[docs]\")")
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI is set, so this is a failure, not a skip")
        pytest.skip(message)


def test_missing_mkdocs_skips_here_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if (
        name == "material") else find_spec(name, *args))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"needs mkdocs-material .*\.\[docs\]"):
        require_mkdocs()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_mkdocs()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module with ``mkdocs build --strict``."""
    require_mkdocs()
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)
    problems = [line for line in done.stderr.splitlines() if re.match(r"(WARNING|ERROR)", line)]
    assert done.returncode == 0, (
        "mkdocs build --strict failed:\n" + "\n".join(problems or done.stderr.splitlines()[-30:]))
    return out


def page_text(page: Path) -> str:
    """The visible text of an HTML page, whitespace collapsed."""
    text = re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8"))
    return " ".join(html.unescape(text).split())


def summary(obj: object) -> str:
    """The first paragraph of ``obj``'s docstring, as its page shows it (no reST markup)."""
    doc = inspect.getdoc(obj) or ""
    first = doc.split("\n\n")[0]
    first = re.sub(r":\w+:`~?([^`]+)`", lambda m: m[1].rsplit(".", 1)[-1], first)
    return " ".join(first.replace("``", "").replace("`", "").split())


def test_every_page_is_built(site: Path) -> None:
    for page in doc_pages():
        built = site / ("index.html" if page == "index.md" else page.removesuffix(".md")
                        .removesuffix("/index") + "/index.html")
        assert built.is_file(), f"{page}: no {built.relative_to(site)} in the site"


def test_api_reference_shows_the_docstrings(site: Path) -> None:
    page = site / "api" / "pipeline" / "index.html"
    source = page.read_text(encoding="utf-8")
    assert 'id="cotprompt.CoTPipeline.fit"' in source
    assert 'id="cotprompt.CoTPipeline.from_pretrained"' in source  # inherited from the mixins
    text = page_text(page)
    for method in (CoTPipeline.fit, CoTPipeline.predict, CoTPipeline.from_pretrained):
        assert summary(method) in text, f"{method.__qualname__}'s docstring is not on the page"
    assert "resume_from" in text and "Parameters:" in text  # the Args section, parsed


def test_api_reference_covers_the_public_names(site: Path) -> None:
    ids: set[str] = set()
    for page in (site / "api").rglob("*.html"):
        ids |= set(re.findall(r'id="([\w.]+)"', page.read_text(encoding="utf-8")))
    for module in ("cotprompt", "cotprompt.pipeline", "cotprompt.data", "cotprompt.tasks",
                   "cotprompt.hub", "cotprompt.plugins", "cotprompt.hookspecs",
                   "cotprompt.evaluation"):
        names = [n for n in importlib.import_module(module).__all__ if n != "__version__"]
        missing = [n for n in names if not any(i.endswith(f".{n}") for i in ids)]
        assert not missing, f"{module}: {missing} are not in the API reference"
    errors = importlib.import_module("cotprompt.errors")
    for name, value in vars(errors).items():
        if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == (
                errors.__name__):
            assert f"cotprompt.errors.{name}" in ids, f"errors.{name} is not documented"


def test_sphinx_roles_become_links(site: Path) -> None:
    page = (site / "api" / "pipeline" / "index.html").read_text(encoding="utf-8")
    assert not re.search(r":(class|func|meth|mod|attr|data):`", page), "a role is left as text"
    # fit's docstring names :class:`~cotprompt.tasks.RetrievalDataset`, shown as a link
    # titled RetrievalDataset to its entry on the tasks page.
    assert ":class:`~cotprompt.tasks.RetrievalDataset`" in (inspect.getdoc(CoTPipeline.fit) or "")
    assert re.search(r'<a class="autorefs autorefs-internal"[^>]*'
                     r'href="\.\./tasks/#cotprompt\.tasks\.RetrievalDataset"[^>]*>'
                     r"<code>RetrievalDataset</code></a>", page)


def test_pydantic_models_show_their_options(site: Path) -> None:
    text = page_text(site / "api" / "pipeline" / "index.html")
    start = text.index("TrainingConfig( *,")
    last = list(TrainingConfig.model_fields)[-1]  # the signature ends after the last option
    signature = text[start:text.index(")", text.index(f" {last}:", start))]
    for name, info in TrainingConfig.model_fields.items():
        assert f" {name}:" in signature, f"TrainingConfig.{name} is not in the signature"
        if isinstance(info.default, (bool, int, str)) and info.default_factory is None:
            shown = signature.split(f" {name}:", 1)[1].split(":", 1)[0]  # up to the next option
            assert repr(info.default).replace("'", '"') in shown, (
                f"TrainingConfig.{name}: default {info.default!r} not shown")


# -- the build's hook: links out of docs/ ----------------------------------------------------


def load_hooks() -> Any:
    spec = importlib.util.spec_from_file_location("cotprompt_docs_hooks",
                                                  DOCS / "_mkdocs" / "hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_links_out_of_docs_become_repository_paths(caplog: pytest.LogCaptureFixture) -> None:
    hooks = load_hooks()
    page = SimpleNamespace(file=SimpleNamespace(abs_src_path=str(DOCS / "plugins.md"),
                                                src_uri="plugins.md"))
    config = {"docs_dir": str(DOCS), "config_file_path": str(ROOT / "mkdocs.yml")}
    markdown = ("See [the example](../examples/cotprompt-plugin-example/), "
                "[`pyproject.toml`](../pyproject.toml), [concepts](concepts.md#shapes) "
                "and [gone](../no/such/file.md).")
    with caplog.at_level(logging.WARNING):
        out = hooks.on_page_markdown(markdown, page=page, config=config, files=None)
    assert "the example (`examples/cotprompt-plugin-example/` in the repository)" in out
    assert "`pyproject.toml`," in out and "](../pyproject.toml)" not in out
    assert "[concepts](concepts.md#shapes)" in out  # pages of the site are left to mkdocs
    assert "[gone](../no/such/file.md)" in out
    assert [r.getMessage() for r in caplog.records] == [
        "Doc file 'plugins.md' links to '../no/such/file.md', which is not in the repository"]



# -- the build's griffe extensions -----------------------------------------------------------

EXAMPLE_PACKAGE = '''
from typing import ClassVar

from pydantic import BaseModel, Field


class Base(BaseModel):
    """Base options."""

    a: int = 1


class Options(Base):
    """Options.

    Args:
        a: A.
        b: B.
    """

    b: str = Field(default="x", min_length=1)
    c: list[int] = Field(default_factory=list)
    d: float = Field(...)
    _private: int = 0
    kind: ClassVar[str] = "k"


def helper() -> None:
    """See :class:`~pkg.Options`, :func:`helper`, :meth:`Options.model_dump`, :class:`nowhere.X`
    and :func:`Titled <helper>`.

    Example::

        helper()
    """
'''


def test_griffe_extensions(tmp_path: Path) -> None:
    require_mkdocs()  # mkdocstrings[python] brings griffe
    import griffe

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text(EXAMPLE_PACKAGE, encoding="utf-8")
    extensions = griffe.load_extensions(str(DOCS / "_mkdocs" / "griffe_cotprompt.py"))
    pkg = griffe.load("pkg", search_paths=[str(tmp_path)], extensions=extensions)

    # PydanticInit: fields of the model and its bases, keyword-only, with their defaults.
    init = pkg["Options"].members["__init__"]
    params = {p.name: p for p in init.parameters if p.name != "self"}
    assert list(params) == ["a", "b", "c", "d"]
    assert {p.kind for p in params.values()} == {griffe.ParameterKind.keyword_only}
    assert [str(p.default) for p in params.values()] == ["1", "'x'", "list()", "None"]
    assert "__init__" not in pkg["helper"].members

    # SphinxRoles: roles resolved in the docstring's scope, as optional cross-references.
    doc = pkg["helper"].docstring.value
    for identifier, title in (("pkg.Options", "Options"), ("pkg.helper", "helper"),
                              ("pkg.Options.model_dump", "Options.model_dump"),
                              ("nowhere.X", "nowhere.X"), ("pkg.helper", "Titled")):
        assert f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>' in doc
    assert ":class:`" not in doc and ":func:`" not in doc
    assert "Example:\n\n    helper()" in doc  # reST's literal-block marker
