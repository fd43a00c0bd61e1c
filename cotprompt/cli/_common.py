"""What the ``cotprompt`` subcommands share: exit statuses, options, failures, torch threads.

The exit statuses (:data:`EXIT_OK`, :data:`EXIT_FAILURE`, :data:`EXIT_USAGE`), the type of a
command's ``handler``, the options every subcommand accepts (``-v``, ``-q``, ``--debug``), the
``--device`` / ``--threads`` options (:func:`check_device` validates a device before anything is
built), :func:`describe_failure` (any exception -> the one line ``error: ...`` and the exit
status), and the context that sets torch's CPU threads.
"""

from __future__ import annotations

import argparse
import contextlib
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from cotprompt.errors import ConfigError, CotpromptError, one_line

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "Handler", "check_device", "describe_failure"]

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
        help="where to run (cpu, cuda, cuda:1, mps); default: CUDA when available, else CPU",
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


# -- devices ----------------------------------------------------------------------------------

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


# -- failures ---------------------------------------------------------------------------------


def describe_failure(exc: BaseException) -> tuple[str, int]:
    """The one-line message (without ``error:``) and the exit status of a failed command.

    - a cotprompt error (:class:`~cotprompt.errors.CotpromptError`): its message, status 2;
    - an exception raised by a plugin's component (its class, or code of its module, is on the
      traceback): which component of which package failed, and how; status 2;
    - a file-system error (``OSError``): its message, status 1;
    - invalid values (pydantic's ``ValidationError``), undecodable text (``UnicodeDecodeError``),
      running out of memory: said so, status 2;
    - anything else is a bug (cotprompt checks its inputs where it reads them, so a bare
      ``KeyError`` or ``TypeError`` is not a malformed input): ``internal error: <type>:
      <message>``, asking for a report, status 2 (``--debug`` shows the traceback).
    """
    if isinstance(exc, CotpromptError):
        return one_line(exc), EXIT_USAGE
    component = _failing_component(exc)
    if component is not None:
        return (
            f"the {component.kind} {component.name!r} of package {component.package} failed: "
            f"{type(exc).__name__}: {one_line(exc)}"
        ), EXIT_USAGE
    if isinstance(exc, SystemExit):  # code run by a command (a library) called sys.exit()
        return f"sys.exit({exc.code!r}) was called{_origin(exc)}", EXIT_USAGE
    if isinstance(exc, OSError):
        return one_line(exc), EXIT_FAILURE
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'value'}: {error['msg']}"
            for error in exc.errors()
        )
        return f"invalid value ({exc.title}): {problems}", EXIT_USAGE
    where = _origin(exc)
    if isinstance(exc, UnicodeDecodeError):
        return (f"cannot read a text file as UTF-8 ({exc.reason} at byte {exc.start}){where}; "
                "save it as UTF-8"), EXIT_USAGE
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return (f"out of memory{where}: {one_line(exc)}; try a smaller --batch-size or "
                "another --device"), EXIT_USAGE
    return (f"internal error: {type(exc).__name__}: {one_line(exc)} (please report it; "
            "--debug shows the traceback)"), EXIT_USAGE


def _frames(exc: BaseException) -> list[Any]:
    """The frames of ``exc``'s traceback and of the exceptions it was raised from."""
    frames = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames.extend(frame for frame, _ in traceback.walk_tb(current.__traceback__))
        current = current.__cause__
    return frames


def _failing_component(exc: BaseException) -> Any:
    """The registered plugin component (not a built-in) whose code raised ``exc``, if any."""
    try:
        from cotprompt.plugins.registry import get_registry

        components = [c for c in get_registry().list() if c.package != "cotprompt"]
    except Exception:  # no registry: no plugin can have failed
        return None
    if not components:
        return None
    by_module = {c.cls.__module__: c for c in components}
    found = None
    for frame in _frames(exc):
        owner = frame.f_locals.get("self")
        match = next((c for c in components if owner is not None and isinstance(owner, c.cls)),
                     None)
        found = match or by_module.get(frame.f_globals.get("__name__", "")) or found
    return found


def _origin(exc: BaseException) -> str:
    """`` in module.function`` of the innermost cotprompt frame of ``exc``, or ``""``."""
    origin = ""
    for frame in _frames(exc):
        module = frame.f_globals.get("__name__", "")
        if module == "cotprompt" or module.startswith("cotprompt."):
            origin = f" in {module}.{frame.f_code.co_name}"
    return origin
