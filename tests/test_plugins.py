"""Tests of the plugin registry (cotprompt.plugins.registry, cotprompt.plugins.hookspecs).

In-process tests build a :class:`Registry` from fake plugin modules (no entry points, no
built-ins), so they do not depend on what is installed. The ``slow`` tests build real plugin
distributions, pip-install them into a temporary site and inspect the registry from a
subprocess, the way a user's installation finds them.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from cotprompt import hookspecs, plugins
from cotprompt.config import ComponentConfig
from cotprompt.errors import ConfigError, PluginError, UnknownComponentError
from cotprompt.plugins.hookspecs import hookimpl
from cotprompt.plugins.registry import (
    ComponentInfo,
    Registry,
    create_component,
    get_registry,
    reset_registry,
)
from cotprompt.types import PromptChain, PromptStep, Task

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_DIR = REPO / "examples" / "cotprompt-plugin-example"


# -- fake components -------------------------------------------------------------------------


class FakeGenConfig(ComponentConfig):
    prefix: str = "a"
    repeats: int = 1


class FakeGenerator:
    name: ClassVar[str] = "fake-gen"
    Config: ClassVar[type[FakeGenConfig]] = FakeGenConfig

    def __init__(self, config: FakeGenConfig) -> None:
        self.config = config

    def generate(self, task: Task, backbone: object = None) -> PromptChain:
        texts = tuple((f"{self.config.prefix} {label}.",) for label in task.labels)
        return PromptChain(
            labels=task.labels,
            steps=(PromptStep(name="only", texts=texts),),
            zero_shot=texts,
        )


class OtherGenerator(FakeGenerator):
    name: ClassVar[str] = "other-gen"


class ImpostorGenerator(FakeGenerator):
    """Same registered name as FakeGenerator, another class."""


class FakeAggregator:
    name: ClassVar[str] = "fake-agg"
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig

    def __init__(self, config: ComponentConfig) -> None:
        self.config = config

    def bind(self, num_steps: int, embed_dim: int) -> None:
        self.bound = (num_steps, embed_dim)


class NoConfig:
    name: ClassVar[str] = "no-config"

    def generate(self, task: Task, backbone: object = None) -> PromptChain:
        raise NotImplementedError


class NotPydanticConfig(NoConfig):
    name: ClassVar[str] = "bad-config"
    Config = dict


class NoName(FakeGenerator):
    name = None  # type: ignore[assignment]


def make_plugin(name: str, **registrations: Iterable[object]) -> types.ModuleType:
    """A plugin module whose hooks register the given objects.

    Args:
        name: The module (and plugin) name.
        registrations: ``generators=[...]``, ``aggregators=[...]``, ``tuners=[...]``,
            ``backbones=[...]``; each object is passed to ``register``.
    """
    module = types.ModuleType(name)
    for kind, objects in registrations.items():
        hook_name = f"register_{kind}"
        setattr(module, hook_name, hookimpl(_registering_hook(hook_name, list(objects))))
    return module


def _registering_hook(hook_name: str, items: list[object]) -> Any:
    def hook(register: hookspecs.Register) -> None:
        for obj in items:
            register(obj)  # type: ignore[arg-type]

    hook.__name__ = hook_name
    return hook


def registry_of(*extra: object, builtins: object | None = None, **kwargs: Any) -> Registry:
    """A registry of only the given plugins (no installed entry points, no real built-ins)."""
    return Registry(extra_plugins=extra, builtins=builtins, entry_points=[], **kwargs)


@pytest.fixture
def fake_plugin() -> types.ModuleType:
    return make_plugin("fake_plugin", generators=[FakeGenerator, OtherGenerator])


@pytest.fixture(autouse=True)
def _no_strict_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(plugins.STRICT_ENV_VAR, raising=False)
    yield
    reset_registry()


# -- registration ----------------------------------------------------------------------------


def test_extra_plugin_components_are_registered(fake_plugin: types.ModuleType) -> None:
    agg_plugin = make_plugin("agg_plugin", aggregators=[FakeAggregator])
    registry = registry_of(fake_plugin, agg_plugin)

    assert registry.get("generator", "fake-gen") is FakeGenerator
    assert registry.get("aggregator", "fake-agg") is FakeAggregator
    assert [(c.kind, c.name) for c in registry.list()] == [
        ("aggregator", "fake-agg"),
        ("generator", "fake-gen"),
        ("generator", "other-gen"),
    ]
    assert registry.names("generator") == ["fake-gen", "other-gen"]
    assert ("generator", "fake-gen") in registry
    info = registry.info("generator", "fake-gen")
    assert info.plugin == "fake_plugin"
    assert info.package == "fake-plugin"  # not installed: the module name, normalised
    assert registry.find_class(OtherGenerator) == registry.info("generator", "other-gen")
    assert registry.find_class(ImpostorGenerator) is None
    assert registry.failures == []
    assert registry.duplicates == []


def test_to_json_list_rows(fake_plugin: types.ModuleType) -> None:
    rows = registry_of(fake_plugin).to_json_list()
    assert json.loads(json.dumps(rows)) == rows
    assert rows[0] == {
        "kind": "generator",
        "name": "fake-gen",
        "package": "fake-plugin",
        "version": None,
        "plugin": "fake_plugin",
        "class": f"{__name__}:FakeGenerator",
    }


def test_builtins_are_registered_as_cotprompt() -> None:
    builtins = make_plugin("fake_builtins", generators=[FakeGenerator])
    info = registry_of(builtins=builtins).info("generator", "fake-gen")
    assert info.package == "cotprompt"
    assert info.plugin == "cotprompt.builtins"
    assert info.version == importlib.metadata.version("cotprompt")


def test_missing_builtins_module_means_no_builtins() -> None:
    registry = registry_of(builtins="cotprompt._no_such_builtins_module")
    assert registry.list() == []
    assert registry.failures == []


def test_builtins_module_with_broken_import_is_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_builtins_mod.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = registry_of(builtins="broken_builtins_mod")
    failures = [(f.name, f.package) for f in registry.failures]
    assert failures == [("broken_builtins_mod", "cotprompt")]
    assert "no_such_dependency_xyz" in registry.failures[0].error


def test_list_rejects_unknown_kind(fake_plugin: types.ModuleType) -> None:
    with pytest.raises(UnknownComponentError, match="unknown component kind 'widget'"):
        registry_of(fake_plugin).list("widget")  # type: ignore[arg-type]


# -- unknown names ---------------------------------------------------------------------------


def test_unknown_name_lists_close_matches_and_available(fake_plugin: types.ModuleType) -> None:
    registry = registry_of(fake_plugin)
    with pytest.raises(UnknownComponentError) as excinfo:
        registry.get("generator", "fake-gne")
    message = str(excinfo.value)
    assert isinstance(excinfo.value, KeyError)
    assert "unknown generator 'fake-gne'" in message
    assert "Did you mean: 'fake-gen'" in message
    assert "Available generators: 'fake-gen', 'other-gen'." in message
    assert "install that package" in message
    assert "entry point in group 'cotprompt'" in message


def test_unknown_name_of_empty_kind(fake_plugin: types.ModuleType) -> None:
    with pytest.raises(UnknownComponentError, match="No tuners are registered"):
        registry_of(fake_plugin).get("tuner", "coop")


def test_unknown_name_with_package_says_what_to_pip_install(
    fake_plugin: types.ModuleType,
) -> None:
    with pytest.raises(UnknownComponentError) as excinfo:
        registry_of(fake_plugin).get("generator", "llm-descriptors", package="cotprompt-llm")
    message = str(excinfo.value)
    assert "`pip install cotprompt-llm`" in message
    assert "Did you mean" not in message


def test_unknown_name_mentions_failed_plugin(fake_plugin: types.ModuleType) -> None:
    broken = importlib.metadata.EntryPoint(
        name="fancy", value="cotprompt_no_such_module_xyz", group="cotprompt"
    )
    registry = Registry(extra_plugins=[fake_plugin], builtins=None, entry_points=[broken])
    with pytest.raises(UnknownComponentError) as by_name:
        registry.get("generator", "fancy")
    assert "Plugin 'fancy'" in str(by_name.value)
    assert "ModuleNotFoundError" in str(by_name.value)

    with pytest.raises(UnknownComponentError) as by_package:
        registry.get("generator", "fancy-gen", package="cotprompt_no_such_module_xyz")
    assert "Plugin 'fancy'" in str(by_package.value)

    with pytest.raises(UnknownComponentError) as unrelated:
        registry.get("generator", "other")
    assert "1 plugin(s) failed to load" in str(unrelated.value)


# -- duplicates ------------------------------------------------------------------------------


def test_duplicate_first_plugin_wins_and_is_reported(
    fake_plugin: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    second = make_plugin("second_plugin", generators=[ImpostorGenerator])
    with caplog.at_level(logging.WARNING, logger="cotprompt.plugins"):
        registry = registry_of(fake_plugin, second)

    assert registry.get("generator", "fake-gen") is FakeGenerator
    [duplicate] = registry.duplicates
    assert (duplicate.kind, duplicate.name) == ("generator", "fake-gen")
    assert duplicate.kept.package == "fake-plugin"
    assert duplicate.ignored.package == "second-plugin"
    assert duplicate.ignored.cls is ImpostorGenerator
    assert duplicate.to_dict()["ignored_package"] == "second-plugin"
    assert "registered by both fake-plugin" in caplog.text
    assert "second-plugin" in caplog.text
    assert registry.failures == []


def test_builtin_wins_over_plugin() -> None:
    builtins = make_plugin("fake_builtins", generators=[ImpostorGenerator])
    plugin = make_plugin("fake_plugin", generators=[FakeGenerator])
    registry = registry_of(plugin, builtins=builtins)

    assert registry.get("generator", "fake-gen") is ImpostorGenerator
    [duplicate] = registry.duplicates
    assert duplicate.kept.package == "cotprompt"
    assert duplicate.ignored.package == "fake-plugin"


def test_same_class_twice_is_not_a_duplicate(fake_plugin: types.ModuleType) -> None:
    again = make_plugin("again", generators=[FakeGenerator, FakeGenerator])
    registry = registry_of(fake_plugin, again)
    assert registry.duplicates == []
    assert registry.failures == []


# -- invalid registrations -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registered", "expected"),
    [
        (FakeGenerator(FakeGenConfig()), "which is not a class"),
        ("fake-gen", "which is not a class"),
        (NoConfig, "needs a class attribute `Config`"),
        (NotPydanticConfig, "`Config` must be a pydantic BaseModel subclass"),
        (NoName, "needs a class attribute `name: str`"),
        (FakeAggregator, "lacks method(s) generate"),
    ],
    ids=["instance", "string", "no-config", "config-not-pydantic", "no-name", "wrong-hook"],
)
def test_invalid_registration_is_reported_and_plugin_skipped(
    registered: object, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    bad = make_plugin("bad_plugin", generators=[OtherGenerator, registered])
    good = make_plugin("good_plugin", generators=[FakeGenerator])
    with caplog.at_level(logging.WARNING, logger="cotprompt.plugins"):
        registry = registry_of(bad, good)

    [failure] = registry.failures
    assert failure.name == "bad_plugin"
    assert failure.package == "bad-plugin"
    assert expected in failure.error
    # the whole plugin is skipped, its valid component too; the other plugin works
    assert registry.names("generator") == ["fake-gen"]
    assert not registry.plugin_manager.has_plugin("bad_plugin")
    assert "'bad_plugin' (package bad-plugin) failed" in caplog.text
    assert expected in caplog.text


def test_hook_raising_is_reported_with_traceback(fake_plugin: types.ModuleType) -> None:
    exploding = types.ModuleType("exploding")

    @hookimpl
    def register_tuners(register: hookspecs.Register) -> None:
        raise RuntimeError("boom")

    exploding.register_tuners = register_tuners  # type: ignore[attr-defined]
    registry = registry_of(exploding, fake_plugin)

    [failure] = registry.failures
    assert failure.error == "RuntimeError: boom"
    assert failure.traceback is not None and "boom" in failure.traceback
    assert registry.names("generator") == ["fake-gen", "other-gen"]


def test_import_failure_of_entry_point_is_reported(fake_plugin: types.ModuleType) -> None:
    broken = importlib.metadata.EntryPoint(
        name="broken", value="cotprompt_no_such_module_xyz", group="cotprompt"
    )
    registry = Registry(extra_plugins=[fake_plugin], builtins=None, entry_points=[broken])
    [failure] = registry.failures
    assert (failure.name, failure.package) == ("broken", "cotprompt-no-such-module-xyz")
    assert failure.error.startswith("ModuleNotFoundError: ")
    assert registry.names("generator") == ["fake-gen", "other-gen"]


def _write_installed_plugin(root: Path, dist: str, module: str, source: str) -> Path:
    """A plugin distribution "installed" in ``root``: ``module.py`` and its ``.dist-info``.

    The entry point (group ``"cotprompt"``) is named after the module without its
    ``cotprompt_`` prefix. Returns the ``.dist-info`` folder.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = root / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        f"[cotprompt]\n{module.removeprefix('cotprompt_')} = {module}\n", encoding="utf-8"
    )
    return info


EXITING_PLUGIN = """
import sys

sys.exit(3)
"""


def test_plugin_calling_sys_exit_at_import_is_reported_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    info = _write_installed_plugin(
        tmp_path, "cotprompt-exiting", "cotprompt_exiting", EXITING_PLUGIN
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    entry_points = list(importlib.metadata.Distribution.at(info).entry_points)
    assert [ep.name for ep in entry_points] == ["exiting"]

    with caplog.at_level(logging.WARNING, logger="cotprompt.plugins"):
        registry = Registry(entry_points=entry_points)  # the real built-ins, then the plugin

    [failure] = registry.failures
    assert (failure.name, failure.package) == ("exiting", "cotprompt-exiting")
    assert failure.error == "SystemExit: the plugin called sys.exit(3)"
    assert failure.traceback is not None and "sys.exit(3)" in failure.traceback
    assert "plugin 'exiting' (package cotprompt-exiting) failed" in caplog.text
    assert "coop" in registry.names("tuner")
    assert "rule-based" in registry.names("generator")
    assert all(c.package == "cotprompt" for c in registry.list())


def test_plugin_calling_sys_exit_is_fatal_only_in_strict_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = _write_installed_plugin(
        tmp_path, "cotprompt-exiting", "cotprompt_exiting", EXITING_PLUGIN
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    entry_points = list(importlib.metadata.Distribution.at(info).entry_points)
    with pytest.raises(PluginError, match=r"'exiting'.*called sys\.exit\(3\)") as excinfo:
        Registry(builtins=None, entry_points=entry_points, strict=True)
    assert isinstance(excinfo.value.__cause__, SystemExit)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (SystemExit(3), "SystemExit: the plugin called sys.exit(3)"),
        (SystemExit(), "SystemExit: the plugin called sys.exit()"),
        (SystemExit("bye"), "SystemExit: the plugin called sys.exit('bye')"),
        (GeneratorExit("odd"), "GeneratorExit: odd"),
    ],
)
def test_base_exception_in_hook_is_reported_not_fatal(
    fake_plugin: types.ModuleType, exc: BaseException, expected: str
) -> None:
    exiting = types.ModuleType("exiting")

    @hookimpl
    def register_tuners(register: hookspecs.Register) -> None:
        raise exc

    exiting.register_tuners = register_tuners  # type: ignore[attr-defined]
    builtins = make_plugin("fake_builtins", aggregators=[FakeAggregator])
    registry = registry_of(exiting, fake_plugin, builtins=builtins)

    [failure] = registry.failures
    assert (failure.name, failure.error) == ("exiting", expected)
    assert not registry.plugin_manager.has_plugin("exiting")
    assert registry.names("aggregator") == ["fake-agg"]
    assert registry.names("generator") == ["fake-gen", "other-gen"]
    assert registry.names("tuner") == []


def test_keyboard_interrupt_in_plugin_is_not_swallowed(fake_plugin: types.ModuleType) -> None:
    interrupting = types.ModuleType("interrupting")

    @hookimpl
    def register_generators(register: hookspecs.Register) -> None:
        raise KeyboardInterrupt

    interrupting.register_generators = register_generators  # type: ignore[attr-defined]
    with pytest.raises(KeyboardInterrupt):
        registry_of(fake_plugin, interrupting)


def test_builtins_module_calling_sys_exit_is_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "exiting_builtins_mod.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = registry_of(builtins="exiting_builtins_mod")
    [failure] = registry.failures
    assert (failure.name, failure.package) == ("exiting_builtins_mod", "cotprompt")
    assert failure.error == "SystemExit: the plugin called sys.exit(3)"


def test_cli_survives_plugin_calling_sys_exit(tmp_path: Path) -> None:
    """The real ``cotprompt plugins --json`` with an exiting plugin on PYTHONPATH."""
    site = tmp_path / "site"
    _write_installed_plugin(site, "cotprompt-exiting", "cotprompt_exiting", EXITING_PLUGIN)
    env = {k: v for k, v in os.environ.items() if k not in {plugins.STRICT_ENV_VAR, "PYTHONPATH"}}
    env["PYTHONPATH"] = str(site)
    result = subprocess.run(
        [sys.executable, "-m", "cotprompt", "plugins", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    found = {(c["kind"], c["name"]): c["package"] for c in json.loads(result.stdout)}
    for key in [("tuner", "coop"), ("generator", "rule-based"), ("aggregator", "mean")]:
        assert found.get(key) == "cotprompt", key
    assert (
        "warning: plugin 'exiting' (package cotprompt-exiting) failed to load and was skipped: "
        "SystemExit: the plugin called sys.exit(3)"
    ) in result.stderr


def test_strict_mode_raises_plugin_error() -> None:
    bad = make_plugin("bad_plugin", generators=[NoConfig])
    with pytest.raises(PluginError) as excinfo:
        registry_of(bad, strict=True)
    message = str(excinfo.value)
    assert "'bad_plugin' (package bad-plugin)" in message
    assert "needs a class attribute `Config`" in message


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_strict_mode_from_environment(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(plugins.STRICT_ENV_VAR, value)
    broken = importlib.metadata.EntryPoint(
        name="broken", value="cotprompt_no_such_module_xyz", group="cotprompt"
    )
    with pytest.raises(PluginError, match=r"'broken'.*ModuleNotFoundError"):
        Registry(builtins=None, entry_points=[broken])


def test_strict_env_off_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(plugins.STRICT_ENV_VAR, "0")
    bad = make_plugin("bad_plugin", generators=[NoConfig])
    assert len(registry_of(bad).failures) == 1


def test_unknown_hook_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    typo = make_plugin("typo_plugin", generators=[FakeGenerator])

    @hookimpl
    def register_generator(register: hookspecs.Register) -> None:  # missing "s"
        raise AssertionError("never called")

    typo.register_generator = register_generator  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger="cotprompt.plugins"):
        registry = registry_of(typo)
    assert "unknown hook 'register_generator'" in caplog.text
    assert registry.names("generator") == ["fake-gen"]


# -- creating components ---------------------------------------------------------------------


def test_create_validates_config(fake_plugin: types.ModuleType) -> None:
    registry = registry_of(fake_plugin)
    gen = registry.create("generator", "fake-gen", {"prefix": "the", "repeats": 3})
    assert isinstance(gen, FakeGenerator)
    assert gen.config == FakeGenConfig(prefix="the", repeats=3)
    assert registry.create("generator", "fake-gen").config == FakeGenConfig()
    instance = FakeGenConfig(prefix="x")
    assert registry.create("generator", "fake-gen", instance).config is instance
    chain = gen.generate(Task.classification(["cat"]))
    assert chain.steps[0].texts == (("the cat.",),)


def test_create_config_error_names_component_and_options(fake_plugin: types.ModuleType) -> None:
    registry = registry_of(fake_plugin)
    with pytest.raises(ConfigError) as excinfo:
        registry.create("generator", "fake-gen", {"repeats": "many", "prefx": "the"})
    message = str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)
    assert message.startswith("invalid config for generator 'fake-gen' (FakeGenConfig):")
    assert "repeats: Input should be a valid integer" in message
    assert "'many'" in message
    assert "prefx: unknown option" in message
    assert "Valid options: prefix, repeats." in message


def test_create_rejects_other_config_model(fake_plugin: types.ModuleType) -> None:
    class Other(BaseModel):
        prefix: str = "a"

    with pytest.raises(ConfigError, match="expected a FakeGenConfig or a mapping"):
        registry_of(fake_plugin).create("generator", "fake-gen", Other())


def test_get_registry_is_cached_and_reset(
    fake_plugin: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert get_registry() is get_registry()
    fake = registry_of(fake_plugin)
    monkeypatch.setattr("cotprompt.plugins.registry._registry", fake)
    assert get_registry() is fake
    gen = create_component("generator", "other-gen", {"prefix": "b"})
    assert isinstance(gen, OtherGenerator)
    with pytest.raises(ConfigError, match="generator 'other-gen'"):
        create_component("generator", "other-gen", {"repeats": -1.5})
    with pytest.raises(UnknownComponentError, match="`pip install cotprompt-xyz`"):
        create_component("tuner", "xyz", package="cotprompt-xyz")
    reset_registry()
    assert get_registry() is not fake


# -- documentation ---------------------------------------------------------------------------


def _hookspec_names() -> list[str]:
    return [
        name
        for name, func in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(func, f"{hookspecs.PROJECT_NAME}_spec")
    ]


def test_hookspecs_are_the_four_kinds_and_datasets() -> None:
    expected = [*plugins.HOOK_NAMES.values(), "register_datasets"]  # datasets: not a kind
    assert sorted(_hookspec_names()) == sorted(expected)


@pytest.mark.parametrize("hook", _hookspec_names())
def test_every_hookspec_is_documented(hook: str) -> None:
    docs = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    assert f"### {hook}(register)" in docs
    func = getattr(hookspecs, hook)
    assert func.__doc__ and "register" in func.__doc__
    assert list(inspect.signature(func).parameters) == ["register"]


# -- installed distributions (subprocess) ----------------------------------------------------

THROWAWAY_INIT = """
from pydantic import BaseModel

from cotprompt.plugins.hookspecs import hookimpl
from cotprompt.types import PromptChain, PromptStep


class ThrowawayConfig(BaseModel):
    greeting: str = "hello"


class ThrowawayGenerator:
    name = "throwaway-gen"
    Config = ThrowawayConfig

    def __init__(self, config):
        self.config = config

    def generate(self, task, backbone=None):
        texts = tuple((f"{self.config.greeting} {label}.",) for label in task.labels)
        return PromptChain(task.labels, (PromptStep("greet", texts),), texts)


@hookimpl
def register_generators(register):
    register(ThrowawayGenerator)
"""

LIST_SCRIPT = """
import json, torch
from cotprompt.plugins.registry import create_component, get_registry
from cotprompt.types import Task

registry = get_registry()
task = Task.classification(["cat", "dog"])
out = {
    "components": registry.to_json_list(),
    "failures": [f.to_dict() for f in registry.failures],
}
gen = create_component("generator", "throwaway-gen", {"greeting": "hi"})
out["throwaway_texts"] = gen.generate(task).to_dict()["steps"][0]["texts"]
styles = create_component("generator", "example-photo-styles", {"styles": ["bright", "dark"]})
out["example_chain"] = styles.generate(task).to_dict()
agg = create_component("aggregator", "example-max")
agg.bind(num_steps=2, embed_dim=4)
image = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
text = torch.nn.functional.normalize(torch.randn(1, 2, 2, 4), dim=-1)
logits = agg(image, text, torch.tensor(10.0))
expected = 10.0 * torch.einsum("be,kce->bkc", image, text[0]).amax(dim=1)
out["example_logits_shape"] = list(logits.shape)
out["example_logits_ok"] = bool(torch.allclose(logits, expected))
print(json.dumps(out))
"""


def _write_distribution(root: Path, dist: str, module: str, init: str, version: str) -> Path:
    pkg = root / dist
    (pkg / module).mkdir(parents=True)
    (pkg / module / "__init__.py").write_text(textwrap.dedent(init), encoding="utf-8")
    (pkg / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{dist}"
            version = "{version}"

            [project.entry-points.cotprompt]
            {module.removeprefix("cotprompt_")} = "{module}"

            [tool.setuptools]
            packages = ["{module}"]
            """
        ),
        encoding="utf-8",
    )
    return pkg


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site directory with three plugin distributions installed by pip.

    ``cotprompt-throwaway`` (works), ``cotprompt-broken`` (raises ImportError at import) and the
    example package from ``examples/cotprompt-plugin-example``.
    """
    root = tmp_path_factory.mktemp("plugins")
    throwaway = _write_distribution(
        root, "cotprompt-throwaway", "cotprompt_throwaway", THROWAWAY_INIT, "1.2.3"
    )
    broken = _write_distribution(
        root,
        "cotprompt-broken",
        "cotprompt_broken",
        'raise ImportError("this plugin is broken on purpose")\n',
        "0.0.1",
    )
    # build a copy, so that pip's build/ and *.egg-info do not land in the source tree
    example = root / "cotprompt-plugin-example"
    shutil.copytree(
        EXAMPLE_DIR, example, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    site = root / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
            "--target",
            str(site),
            str(throwaway),
            str(broken),
            str(example),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=root,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return site


def _run_in_site(
    site: Path, script: str, *, strict: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {plugins.STRICT_ENV_VAR, "PYTHONPATH"}}
    env["PYTHONPATH"] = str(site)
    if strict:
        env[plugins.STRICT_ENV_VAR] = "1"
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=site,
    )


@pytest.fixture(scope="module")
def site_listing(plugin_site: Path) -> dict[str, Any]:
    result = _run_in_site(plugin_site, LIST_SCRIPT)
    assert result.returncode == 0, result.stderr
    listing: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    listing["stderr"] = result.stderr
    return listing


def _component(listing: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    matches = [c for c in listing["components"] if (c["kind"], c["name"]) == (kind, name)]
    assert len(matches) == 1, listing["components"]
    return matches[0]


@pytest.mark.slow
def test_installed_plugin_is_listed_and_creatable(site_listing: dict[str, Any]) -> None:
    assert _component(site_listing, "generator", "throwaway-gen") == {
        "kind": "generator",
        "name": "throwaway-gen",
        "package": "cotprompt-throwaway",
        "version": "1.2.3",
        "plugin": "throwaway",
        "class": "cotprompt_throwaway:ThrowawayGenerator",
    }
    assert site_listing["throwaway_texts"] == [["hi cat."], ["hi dog."]]
    rows = site_listing["components"]
    assert rows == sorted(rows, key=lambda c: (c["kind"], c["name"]))


@pytest.mark.slow
def test_broken_installed_plugin_is_reported_not_fatal(site_listing: dict[str, Any]) -> None:
    broken = [f for f in site_listing["failures"] if f["name"] == "broken"]
    assert len(broken) == 1, site_listing["failures"]
    assert broken[0]["package"] == "cotprompt-broken"
    assert broken[0]["error"] == "ImportError: this plugin is broken on purpose"
    assert "plugin 'broken' (package cotprompt-broken) failed" in site_listing["stderr"]
    assert not any(c["package"] == "cotprompt-broken" for c in site_listing["components"])


@pytest.mark.slow
def test_broken_installed_plugin_is_fatal_in_strict_mode(plugin_site: Path) -> None:
    script = "from cotprompt.plugins.registry import get_registry; get_registry()"
    result = _run_in_site(plugin_site, script, strict=True)
    assert result.returncode != 0
    assert "cotprompt.errors.PluginError" in result.stderr
    assert "plugin 'broken' (package cotprompt-broken) failed" in result.stderr
    assert "ImportError: this plugin is broken on purpose" in result.stderr


@pytest.mark.slow
def test_example_plugin_package(site_listing: dict[str, Any]) -> None:
    for kind, name, cls in [
        ("generator", "example-photo-styles", "PhotoStylesGenerator"),
        ("aggregator", "example-max", "MaxAggregator"),
    ]:
        row = _component(site_listing, kind, name)
        assert row["package"] == "cotprompt-plugin-example"
        assert row["version"] == "0.1.0"
        assert row["plugin"] == "example"
        assert row["class"] == f"cotprompt_plugin_example:{cls}"
    chain = site_listing["example_chain"]
    assert [step["name"] for step in chain["steps"]] == ["label", "style"]
    assert chain["steps"][0]["texts"] == [["cat."], ["dog."]]
    assert chain["steps"][1]["texts"][0] == ["cat, in a bright photo.", "cat, in a dark photo."]
    assert chain["zero_shot"] == [["a photo of a cat."], ["a photo of a dog."]]
    assert site_listing["example_logits_shape"] == [3, 2]
    assert site_listing["example_logits_ok"] is True


def test_component_info_class_path() -> None:
    info = ComponentInfo("generator", "fake-gen", "pkg", "1", FakeGenerator, "plug")
    assert info.class_path == f"{__name__}:FakeGenerator"
