"""The ``cotprompt completion`` command: the shell completion script (bash, zsh, tcsh) of the
whole ``cotprompt`` command line, written by `shtab <https://github.com/iterative/shtab>`_ (the
optional extra ``completion``: ``pip install ".[completion]"`` in a checkout, or ``pip install
shtab``).

Options and arguments that take paths complete as paths: those whose ``metavar`` is one of
:data:`FILE_METAVARS` as files, of :data:`DIRECTORY_METAVARS` as folders, and the few without
such a metavar listed in :data:`FILE_DESTS` / :data:`DIRECTORY_DESTS`; an action that already
has a ``complete`` attribute keeps it. Name a new path option's metavar ``FILE`` or ``DIR`` and
it completes as one.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from cotprompt.cli._common import EXIT_OK, write
from cotprompt.errors import ConfigError

__all__ = [
    "DIRECTORY_DESTS",
    "DIRECTORY_METAVARS",
    "FILE_DESTS",
    "FILE_METAVARS",
    "SHELLS",
    "add_commands",
    "completion_script",
]

#: The shells ``cotprompt completion`` writes a script for.
SHELLS = ("bash", "zsh", "tcsh")
#: Metavars of options that take a file (``--config FILE``, ``IMAGE``...).
FILE_METAVARS = frozenset({"FILE", "PATH", "IMAGE"})
#: Metavars of options that take a folder (``--output DIR``; ``ARTIFACT``, a folder or Hub id).
DIRECTORY_METAVARS = frozenset({"DIR", "OUTPUT", "ARTIFACT"})
#: Destinations of path options without such a metavar: a file (or an open_clip tag).
FILE_DESTS = frozenset({"pretrained"})
#: Destinations of folder options without such a metavar (``push FOLDER``, ``--resume``...).
DIRECTORY_DESTS = frozenset({"folder", "resume", "local_dir"})

_INSTALL = 'pip install "shtab>=1.7" (the extra "completion")'


def add_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``completion`` to the ``cotprompt`` parser.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.
        common: The parent parser of the options every subcommand accepts.
    """
    parser = subparsers.add_parser(
        "completion", parents=[common], help="print a shell completion script",
        description=(
            "Print the completion script of the cotprompt command line for SHELL, written by "
            f"shtab ({_INSTALL}); e.g. `cotprompt completion bash > "
            "~/.local/share/bash-completion/completions/cotprompt`. See docs/cli.md for zsh "
            "and tcsh."
        ),
    )
    parser.add_argument("shell", metavar="SHELL", choices=SHELLS,
                        help="the shell: " + ", ".join(SHELLS))
    parser.set_defaults(handler=_cmd_completion)


def _require_shtab() -> Any:
    try:
        import shtab
    except ImportError as exc:
        raise ConfigError(f"shell completion needs shtab, which is not installed: {_INSTALL}"
                          ) from exc
    return shtab


def _actions(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    """Every action of ``parser`` and of its subcommands' parsers (each parser once)."""
    seen: set[int] = set()
    stack = [parser]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        for action in current._actions:
            yield action
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())


def _path_kind(action: argparse.Action) -> str | None:
    """``"file"``, ``"directory"`` or ``None`` (not a path) for an action."""
    if action.nargs == 0 or action.choices is not None or action.help == argparse.SUPPRESS:
        return None
    metavar = action.metavar if isinstance(action.metavar, str) else None
    if metavar in FILE_METAVARS or action.dest in FILE_DESTS:
        return "file"
    if metavar in DIRECTORY_METAVARS or action.dest in DIRECTORY_DESTS:
        return "directory"
    return None


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of ``parser`` for ``shell``, with path options completing as files
    or folders (see the module's docstring); sets ``complete`` on those actions of ``parser``.

    Args:
        parser: The whole command line's parser (``cotprompt.cli.build_parser()``).
        shell: One of :data:`SHELLS`.

    Raises:
        ConfigError: shtab is not installed (the message says how to install it),
            or an unknown shell.
    """
    if shell not in SHELLS:
        raise ConfigError(f"no completion for shell {shell!r}; choose from {list(SHELLS)}")
    shtab = _require_shtab()
    kinds = {"file": shtab.FILE, "directory": shtab.DIRECTORY}
    for action in _actions(parser):
        kind = _path_kind(action)
        if kind is not None and not hasattr(action, "complete"):
            action.complete = kinds[kind]  # type: ignore[attr-defined]
    script: str = shtab.complete(parser, shell=shell)
    return script


def _cmd_completion(args: argparse.Namespace) -> int:
    write(completion_script(args.root_parser, args.shell).rstrip("\n"))
    return EXIT_OK
