"""What the ``cotprompt`` command modules share; they import from here (never from this
package's modules) and from the library only.

- :mod:`~cotprompt.cli._common.failures`: the exit statuses (:data:`EXIT_OK`,
  :data:`EXIT_FAILURE`, :data:`EXIT_USAGE`) and :func:`describe_failure` (any exception -> the
  one line ``error: ...`` and the exit status);
- :mod:`~cotprompt.cli._common.options`: the options every subcommand accepts (``-v``, ``-q``,
  ``--debug``), ``--json``, ``--device`` / ``--threads``, ``--allow-pickle``, the checks of
  their values and loading a command's ``ARTIFACT``;
- :mod:`~cotprompt.cli._common.overrides`: ``--set KEY=VALUE`` overrides of a config file's
  keys;
- :mod:`~cotprompt.cli._common.output`: results on stdout (lines, JSON, tables) and logging to
  stderr;
- here: the type of a command's ``handler`` and the command line's :data:`logger`.

A command module exposes ``add_commands(subparsers, common)``, which adds its subcommands to the
``cotprompt`` parser (``parents=[common]``, see :func:`common_options`) and sets each one's
``handler``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from cotprompt.cli._common.failures import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, describe_failure
from cotprompt.cli._common.options import (
    add_allow_pickle,
    add_device,
    add_json,
    add_top_level_options,
    add_workers,
    check_device,
    common_options,
    load_pipeline,
    require_positive,
    torch_threads,
)
from cotprompt.cli._common.output import (
    configure_logging,
    json_text,
    print_json,
    printable,
    table,
    write,
)
from cotprompt.cli._common.overrides import (
    Override,
    apply_overrides,
    parse_overrides,
    validate_with_overrides,
)
from cotprompt.cli._common.plots import check_plots, write_plots

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "Handler",
    "Override",
    "add_allow_pickle",
    "add_device",
    "add_json",
    "add_top_level_options",
    "add_workers",
    "apply_overrides",
    "check_device",
    "check_plots",
    "common_options",
    "configure_logging",
    "describe_failure",
    "json_text",
    "load_pipeline",
    "parse_overrides",
    "print_json",
    "printable",
    "require_positive",
    "table",
    "torch_threads",
    "validate_with_overrides",
    "write",
    "write_plots",
]

#: A command's ``handler``: the parsed arguments -> the exit status.
Handler = Callable[[argparse.Namespace], int]

#: The command line's logger (``cotprompt.cli``), shared by its command modules.
logger = logging.getLogger("cotprompt.cli")
