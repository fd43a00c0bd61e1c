"""The ``cotprompt`` command line: the parser, built from the command modules, and :func:`main`.

Every command module (listed in :data:`COMMAND_MODULES`, in help order) exposes
``add_commands(subparsers, common)``, which adds its subcommands with ``parents=[common]`` and
sets each one's ``handler`` (a function of the parsed arguments returning the exit status):
``train``, ``eval`` and ``predict`` in :mod:`cotprompt.cli.pipeline`, ``plugins`` in
:mod:`cotprompt.cli.plugins`, ``demo`` in :mod:`cotprompt.cli.demo`, ``push`` and ``pull`` in
:mod:`cotprompt.cli.hub`, ``eval-retrieval`` and ``eval-vqa`` in :mod:`cotprompt.cli.tasks`,
``sweep`` in :mod:`cotprompt.cli.experiments`, ``report`` in :mod:`cotprompt.cli.report`, ``env`` in
:mod:`cotprompt.cli.env`, ``interpret`` in :mod:`cotprompt.cli.interpret`, ``completion`` in
:mod:`cotprompt.cli.completion`.
The parsed arguments of every command carry the whole parser as ``root_parser``.
What they share (exit statuses, options, output, logging) is in :mod:`cotprompt.cli._common`.
Building the parser stays light: command modules import only the standard library and light
cotprompt modules at the top (torch, open_clip, pydantic... inside their handlers), so
``--version`` and every ``--help`` answer without importing torch (tests/test_cli_startup.py).

Every failure is printed as one line ``error: ...`` on stderr, never as a traceback (``--debug``
adds it): errors that cotprompt raises on purpose (:class:`~cotprompt.errors.CotpromptError`),
bad usage and any other exception exit with status 2, file-system errors with status 1 (see
:func:`cotprompt.cli._common.describe_failure`); ``--device`` is checked before anything is built.
Results go to stdout (``--json`` for machine-readable output); logs and progress bars go to
stderr.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from types import ModuleType
from typing import NoReturn

from cotprompt._version import __version__
from cotprompt.cli import (
    completion,
    demo,
    env,
    experiments,
    hub,
    interpret,
    pipeline,
    plugins,
    report,
    tasks,
)
from cotprompt.cli._common import (
    EXIT_USAGE,
    Handler,
    add_top_level_options,
    check_device,
    common_options,
    configure_logging,
    describe_failure,
    torch_threads,
)
from cotprompt.errors import one_line

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

#: The command modules, in help order. To add commands, write a module with
#: ``add_commands(subparsers, common)`` and list it here.
COMMAND_MODULES: list[ModuleType] = [
    pipeline,
    plugins,
    demo,
    hub,
    tasks,
    experiments,
    report,
    env,
    interpret,
    completion,
]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line ``error: ...`` (status 2), like every
    other failure of the command line; sub-parsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {one_line(message)} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``cotprompt`` argument parser with the subcommands of every module of
    :data:`COMMAND_MODULES`."""
    parser = _Parser(
        prog="cotprompt",
        description=(
            "Few-shot prompt tuning of CLIP models: CoOp, CoCoOp and chain-of-thought prompt "
            "tuning (CoT-PT)."
        ),
        epilog="Run `cotprompt COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"cotprompt {__version__}")
    parser.set_defaults(root_parser=parser)
    add_top_level_options(parser)
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    subparsers.required = True
    common = common_options()
    for module in COMMAND_MODULES:
        module.add_commands(subparsers, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``cotprompt`` command line.

    Args:
        argv: The arguments after the program name; default ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 1 on a file-system error, 2 on bad usage, a cotprompt
        error or any other failure (each printed as one line ``error: ...`` on stderr, see
        :func:`cotprompt.cli._common.describe_failure`), 130 when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    configure_logging(getattr(args, "verbose", 0) or 0, bool(getattr(args, "quiet", False)))
    handler: Handler = args.handler
    try:
        if getattr(args, "device", None) is not None:
            args.device = check_device(args.device)
        with torch_threads(getattr(args, "threads", None)):
            return handler(args)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except (Exception, SystemExit) as exc:  # every failure: one line, the traceback with --debug
        if debug:
            traceback.print_exc()
        message, status = describe_failure(exc)
        sys.stderr.write(f"error: {message}\n")
        return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
