"""The ``cotprompt`` command line: train, evaluate, predict, list plugins, run the offline demo.

Every subcommand is added by one ``_add_<name>`` function listed in :data:`SUBCOMMANDS`, which
builds its parser and sets ``handler`` (a function of the parsed arguments returning the exit
status); adding a command is adding such a function to the list.

Every failure is printed as one line ``error: ...`` on stderr, never as a traceback (``--debug``
adds it): errors that cotprompt raises on purpose (:class:`~cotprompt.errors.CotpromptError`),
bad usage and any other exception exit with status 2, file-system errors with status 1 (see
:func:`cotprompt.cli._common.describe_failure`); ``--device`` is checked before anything is built.
Results go to stdout (``--json`` for machine-readable output); logs and progress bars go to
stderr.

This module assembles the parser, runs the entry point :func:`main` and holds the small
``plugins`` command. The other commands live in their own modules: ``train``, ``eval`` and
``predict`` in :mod:`cotprompt.cli.pipeline`, ``demo`` in :mod:`cotprompt.cli.demo`, ``push``
and ``pull`` in :mod:`cotprompt.cli.hub`, ``eval-retrieval`` and ``eval-vqa`` in
:mod:`cotprompt.cli.tasks`; what they share is in :mod:`cotprompt.cli._common` (exit statuses,
common options) and :mod:`cotprompt.cli.output` (output helpers, logging).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from cotprompt._version import __version__
from cotprompt.cli._common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    Handler,
    _common_options,
    _torch_threads,
    check_device,
    describe_failure,
)
from cotprompt.cli.demo import (
    DEMO_OUTPUT,
    RANDOM_BACKBONE_EPOCHS,
    RANDOM_BACKBONE_TRAINING,
    _add_demo,
    demo_training,
)
from cotprompt.cli.hub import add_hub_commands
from cotprompt.cli.output import _out, _print_json, _table, configure_logging
from cotprompt.cli.pipeline import TRAIN_OUTPUT, _add_eval, _add_predict, _add_train
from cotprompt.cli.tasks import add_task_commands
from cotprompt.errors import one_line

__all__ = [
    "DEMO_OUTPUT",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "RANDOM_BACKBONE_EPOCHS",
    "RANDOM_BACKBONE_TRAINING",
    "SUBCOMMANDS",
    "TRAIN_OUTPUT",
    "Handler",
    "build_parser",
    "configure_logging",
    "demo_training",
    "main",
]


def _add_plugins(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "plugins", parents=[common], help="list the registered components",
        description=(
            "List every registered backbone, generator, tuner and aggregator with the package "
            "providing it. Plugins that failed to load are reported on stderr."
        ),
    )
    parser.add_argument(
        "--json", action="store_true",
        help="print a JSON list of {kind, name, package, version, plugin, class}",
    )
    parser.set_defaults(handler=_cmd_plugins)


#: The subcommands, in help order. To add one, write ``_add_<name>(subparsers, common)``.
SUBCOMMANDS: list[Callable[[Any, argparse.ArgumentParser], None]] = [
    _add_train,
    _add_eval,
    _add_predict,
    _add_plugins,
    _add_demo,
    add_hub_commands,
    add_task_commands,
]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line ``error: ...`` (status 2), like every
    other failure of the command line; sub-parsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {one_line(message)} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``cotprompt`` argument parser with every subcommand of :data:`SUBCOMMANDS`."""
    parser = _Parser(
        prog="cotprompt",
        description=(
            "Few-shot prompt tuning of CLIP models: CoOp, CoCoOp and chain-of-thought prompt "
            "tuning (CoT-PT)."
        ),
        epilog="Run `cotprompt COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"cotprompt {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help=argparse.SUPPRESS)
    parser.add_argument("-q", "--quiet", action="store_true", default=False, help=argparse.SUPPRESS)
    parser.add_argument("--debug", action="store_true", default=False, help=argparse.SUPPRESS)
    _add_subparsers(parser)
    return parser


def _add_subparsers(parser: argparse.ArgumentParser) -> None:
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    subparsers.required = True
    common = _common_options()
    for add in SUBCOMMANDS:
        add(subparsers, common)


def _cmd_plugins(args: argparse.Namespace) -> int:
    from cotprompt.plugins.registry import get_registry

    registry = get_registry()
    for failure in registry.failures:
        sys.stderr.write(
            f"warning: plugin {failure.name!r} (package {failure.package}) failed to load and "
            f"was skipped: {failure.error}\n"
        )
        if getattr(args, "debug", False) and failure.traceback:
            sys.stderr.write(failure.traceback)
    for duplicate in registry.duplicates:
        sys.stderr.write(
            f"warning: {duplicate.kind} {duplicate.name!r} is registered by "
            f"{duplicate.kept.package} and {duplicate.ignored.package}; using "
            f"{duplicate.kept.package}'s\n"
        )
    components = registry.to_json_list()
    if args.json:
        _print_json(components)
        return EXIT_OK
    rows = [(c["kind"], c["name"], c["package"], c["version"] or "-") for c in components]
    _out(_table(("kind", "name", "package", "version"), rows, (False, False, False, False)))
    return EXIT_OK


# -- entry point ------------------------------------------------------------------------------


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
        with _torch_threads(getattr(args, "threads", None)):
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
