"""How a failed ``cotprompt`` command ends: the exit statuses, and :func:`describe_failure`, which
turns any exception into the one line ``error: ...`` and the status."""

from __future__ import annotations

import re
import traceback
from typing import Any

from cotprompt.errors import CotpromptError, one_line

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "cli_syntax", "describe_failure"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # argparse's status for bad usage; also used for cotprompt's own errors


#: Library options that the command line sets with a flag of the same name (``--allow-pickle``).
CLI_FLAGS = ("allow_fewer", "allow_pickle", "trust_remote_code")
_FLAG = "|".join(CLI_FLAGS)
#: ``allow_pickle=True in code (...) or --allow-pickle on the command line``: the flag alone.
_IN_CODE_OR_FLAG = re.compile(
    rf"\b({_FLAG})=True in code \([^()]*\)(?: or --[\w-]+ on the command line)?")
#: ``(in code, or with --allow-pickle on the command line)``: ``(with --allow-pickle)``.
_IN_CODE_OR_WITH = re.compile(r"\(in code, or with (--[\w-]+) on the command line\)")
_ASSIGNMENT = re.compile(rf"\b({_FLAG})=True\b")


def cli_syntax(message: str) -> str:
    """A library message in command-line syntax: ``allow_fewer=True`` -> ``--allow-fewer``
    (for the options the command line has as flags, :data:`CLI_FLAGS`)."""

    def flag(match: re.Match[str]) -> str:
        return "--" + match.group(1).replace("_", "-")

    message = _IN_CODE_OR_FLAG.sub(flag, message)
    message = _IN_CODE_OR_WITH.sub(r"(with \1)", message)
    return _ASSIGNMENT.sub(flag, message)


def describe_failure(exc: BaseException) -> tuple[str, int]:
    """The one-line message (without ``error:``, in command-line syntax: see
    :func:`cli_syntax`) and the exit status of a failed command.

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
    message, status = _describe(exc)
    return cli_syntax(message), status


def _describe(exc: BaseException) -> tuple[str, int]:
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

    from cotprompt.config import error_message

    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'value'}: {error_message(error)}"
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
    frames: list[Any] = []
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
