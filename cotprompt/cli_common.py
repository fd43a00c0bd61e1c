"""What the ``cotprompt`` subcommands share: exit statuses, options and the torch threads.

The exit statuses (:data:`EXIT_OK`, :data:`EXIT_FAILURE`, :data:`EXIT_USAGE`), the type of a
command's ``handler``, the options every subcommand accepts (``-v``, ``-q``, ``--debug``), the
``--device`` / ``--threads`` options, and the context that sets torch's CPU threads.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator

from cotprompt.errors import ConfigError

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "Handler"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # argparse's status for bad usage; also used for cotprompt's own errors

Handler = Callable[[argparse.Namespace], int]


def _common_options() -> argparse.ArgumentParser:
    """Options accepted before or after the subcommand (``cotprompt -v train`` or
    ``cotprompt train -v``)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("output options")
    group.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS,
        help="more log messages (-v: debug messages of cotprompt, -vv: of every library)",
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
        help="only warnings and errors on stderr, no progress bars",
    )
    group.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS,
        help="print the traceback of errors",
    )
    return common


def _add_device(parser: argparse.ArgumentParser, threads_default: str = "torch's default") -> None:
    parser.add_argument(
        "--device", default=None,
        help="where to run (cpu, cuda, cuda:1, ...); default: CUDA when available, else CPU",
    )
    parser.add_argument(
        "--threads", type=int, metavar="N",
        help=f"CPU threads for torch (default: {threads_default})",
    )


def _add_allow_pickle(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-pickle", action="store_true",
        help="load pickle-based weights (torch.save files, TorchScript archives other than "
        "OpenAI's), which can run code; a loaded file can never allow this",
    )


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Use ``threads`` CPU threads for torch inside the block (``None``: leave as is)."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
