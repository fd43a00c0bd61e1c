"""The options that ``cotprompt`` subcommands share, and the checks of their values.

:func:`common_options` (``-v``, ``-q``, ``--debug``, after the subcommand) and
:func:`add_top_level_options` (the same, before it), ``--json``, ``--device`` / ``--threads``,
``--workers`` and ``--allow-pickle``; :func:`check_device` validates a device before anything is
built, :func:`require_positive` a count, :func:`torch_threads` applies ``--threads`` and
:func:`load_pipeline` loads a command's ``ARTIFACT``.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from cotprompt.errors import ConfigError

if TYPE_CHECKING:
    from cotprompt.pipeline import CoTPipeline

__all__ = [
    "add_allow_pickle",
    "add_device",
    "add_json",
    "add_top_level_options",
    "add_workers",
    "check_device",
    "common_options",
    "load_pipeline",
    "require_positive",
    "torch_threads",
]


def common_options() -> argparse.ArgumentParser:
    """The parent parser of every subcommand: ``-v``, ``-q`` and ``--debug``, accepted before or
    after the subcommand (``cotprompt -v train`` or ``cotprompt train -v``)."""
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


def add_top_level_options(parser: argparse.ArgumentParser) -> None:
    """The options of :func:`common_options` where they come before the subcommand, with their
    defaults and without help (the subcommands' help lists them)."""
    parser.add_argument("-v", "--verbose", action="count", default=0, help=argparse.SUPPRESS)
    parser.add_argument("-q", "--quiet", action="store_true", default=False, help=argparse.SUPPRESS)
    parser.add_argument("--debug", action="store_true", default=False, help=argparse.SUPPRESS)


def add_json(parser: argparse.ArgumentParser, help_text: str = "print JSON") -> None:
    """``--json``: machine-readable output, written with
    :func:`~cotprompt.cli._common.output.print_json`."""
    parser.add_argument("--json", action="store_true", help=help_text)


def add_device(
    parser: argparse.ArgumentParser,
    *,
    examples: str = "cpu, cuda, cuda:1, mps",
    threads_default: str | None = "torch's default",
) -> None:
    """``--device`` (checked by :func:`check_device` before the command runs) and ``--threads``
    (applied by :func:`torch_threads` around it).

    Args:
        examples: The devices named in ``--device``'s help.
        threads_default: What ``--threads``'s help gives as the default; ``None``: none.
    """
    parser.add_argument(
        "--device", default=None,
        help=f"where to run ({examples}); default: CUDA when available, else CPU",
    )
    parser.add_argument(
        "--threads", type=int, metavar="N",
        help="CPU threads for torch"
        + (f" (default: {threads_default})" if threads_default is not None else ""),
    )


def add_workers(parser: argparse.ArgumentParser) -> None:
    """``--workers N``: processes reading images while the model runs (an integer >= 0; else
    argparse's usage error naming the option)."""
    parser.add_argument("--workers", type=_worker_count, default=0, metavar="N",
                        help="processes reading images while the model runs (default: 0, "
                        "in this process)")


def _worker_count(value: str) -> int:
    if not (value.strip().isascii() and value.strip().isdecimal()):
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value!r}")
    return int(value)


def add_allow_pickle(parser: argparse.ArgumentParser) -> None:
    """``--allow-pickle``: the explicit opt-in to loading pickle-based weights."""
    parser.add_argument(
        "--allow-pickle", action="store_true",
        help="load pickle-based weights (torch.save files, TorchScript archives other than "
        "OpenAI's), which can run code; a loaded file can never allow this",
    )


def require_positive(option: str, value: int | None) -> None:
    """Refuse a count option below 1 (``None``, an option left out, passes).

    Raises:
        ConfigError: ``<option> must be >= 1, got <value>``.
    """
    if value is not None and value < 1:
        raise ConfigError(f"{option} must be >= 1, got {value}")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Use ``threads`` CPU threads for torch inside the block (``None``: leave as is).

    Raises:
        ConfigError: ``threads`` is below 1.
    """
    if threads is None:
        yield
        return
    require_positive("--threads", threads)
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def load_pipeline(args: argparse.Namespace) -> CoTPipeline:
    """The saved pipeline ``ARTIFACT`` (a folder or a Hub repository id) of a command, loaded
    with its ``--revision``, ``--device`` and ``--allow-pickle``."""
    from cotprompt.pipeline import CoTPipeline

    return CoTPipeline.from_pretrained(args.artifact, revision=args.revision, device=args.device,
                                       allow_pickle=args.allow_pickle)


_DEVICES = "cpu, cuda, cuda:N or mps"


def check_device(value: str | None) -> str | None:
    """Validate ``--device`` before anything is built: a device torch knows, and one that this
    machine has (``cuda`` without CUDA, ``cuda:3`` with two GPUs, ``gpu`` are refused).

    Returns:
        ``value`` stripped, or ``None`` (the default: CUDA when available, else CPU).

    Raises:
        ConfigError: The device is unknown, or not available here; the message says why and
            what to use instead.
    """
    if value is None:
        return None
    text = value.strip()
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigError(f"--device {value!r} is not a device; use {_DEVICES}") from exc
    if device.type == "cpu":
        return text
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU or driver was found")
            raise ConfigError(
                f"--device {text}: CUDA is not available on this machine ({why}); use "
                "--device cpu, or leave --device out to use CUDA only when available"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"--device {text}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
        return text
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {text}: Apple's MPS is not available on this machine; "
                              "use --device cpu")
        return text
    raise ConfigError(f"--device {value!r}: cotprompt runs on {_DEVICES}")
