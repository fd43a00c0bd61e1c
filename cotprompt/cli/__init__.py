"""The ``cotprompt`` command line: one module per command group, what they share in
:mod:`cotprompt.cli._common`; ``main`` is the console script."""

from cotprompt.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
