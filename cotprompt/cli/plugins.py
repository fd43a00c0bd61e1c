"""The ``cotprompt plugins`` command: list the registered components and the packages providing
them; plugins that failed to load, and names registered twice, are reported on stderr."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cotprompt.cli._common import EXIT_OK, add_json, print_json, table, write

__all__ = ["add_commands"]


def add_commands(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``plugins`` to the ``cotprompt`` parser.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.
        common: The parent parser of the options every subcommand accepts.
    """
    _add_plugins(subparsers, common)


def _add_plugins(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "plugins", parents=[common], help="list the registered components",
        description=(
            "List every registered backbone, generator, tuner and aggregator with the package "
            "providing it. Plugins that failed to load are reported on stderr."
        ),
    )
    add_json(parser, "print a JSON list of {kind, name, package, version, plugin, class}")
    parser.set_defaults(handler=_cmd_plugins)


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
        print_json(components)
        return EXIT_OK
    rows = [(c["kind"], c["name"], c["package"], c["version"] or "-") for c in components]
    write(table(("kind", "name", "package", "version"), rows, (False, False, False, False)))
    return EXIT_OK
