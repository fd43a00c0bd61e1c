"""Output of the ``cotprompt`` command line: result lines, JSON, plain-text tables and logging.

Results go to stdout (:func:`write`, :func:`print_json`, :func:`table`); every JSON the
command line writes goes through :func:`json_text`, which refuses NaN and infinities (invalid
JSON) with a :class:`~cotprompt.errors.NumericalError`; :func:`configure_logging` sends log
records to stderr at the level that ``-v`` / ``--quiet`` ask for, around any progress bar.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import unicodedata
from collections.abc import Sequence
from typing import Any

from cotprompt.errors import NumericalError, is_control

__all__ = ["configure_logging", "json_text", "print_json", "printable", "table", "write"]


def write(text: str = "") -> None:
    """Write a line of the command's result to stdout."""
    sys.stdout.write(text + "\n")


def _find_non_finite(
    value: Any, path: str = "", _open: frozenset[int] = frozenset()
) -> tuple[str, float] | None:
    """Where the first NaN or infinity in a JSON-like value is: (``path``, the number)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "the value", value)
    if not isinstance(value, (dict, list, tuple)) or id(value) in _open:  # a cycle: not here
        return None
    _open = _open | {id(value)}
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, float) and not math.isfinite(key):
                return (f"a key of {path or 'the object'}", key)
            found = _find_non_finite(item, f"{path}.{key}" if path else str(key), _open)
            if found is not None:
                return found
        return None
    for index, item in enumerate(value):
        found = _find_non_finite(item, f"{path}[{index}]", _open)
        if found is not None:
            return found
    return None


def json_text(value: Any) -> str:
    """``value`` as indented JSON; NaN and infinities (not valid JSON) are refused.

    Raises:
        NumericalError: A number is NaN or infinite; the message says where (``results.tuned.
            accuracy``, ``[0].score``...).
    """
    try:
        return json.dumps(value, indent=2, allow_nan=False)
    except ValueError as exc:
        found = _find_non_finite(value)
        if found is None:
            raise
        where, number = found
        raise NumericalError(
            f"cannot write the result as JSON: {where} is {number!r} (not a finite number), "
            "which JSON cannot represent; a computation produced NaN/Inf"
        ) from exc


def print_json(value: Any) -> None:
    """Write ``value`` to stdout as JSON (see :func:`json_text`: NaN/Inf are refused)."""
    write(json_text(value))


def printable(text: str) -> str:
    """``text`` with every non-printable character (escape sequences, newlines, other control
    characters, separators, bidirectional controls) written as its Python escape, so that text
    read from a file (labels, step names of a shared artifact) cannot move the cursor, clear the
    terminal, fake a line or show reversed. Other format characters are text: the zero-width
    (non-)joiners (U+200C, U+200D) of scripts and emoji sequences are kept.
    """
    if text.isprintable():
        return text
    return "".join(c if _shown(c) else repr(c)[1:-1] for c in text)


def _shown(char: str) -> bool:
    return char.isprintable() or (unicodedata.category(char) == "Cf" and not is_control(char))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[bool]) -> str:
    """A plain-text table; ``right[i]`` right-aligns column i. Cells are made
    :func:`printable`."""
    cells = [[printable(str(h)) for h in headers]] + [
        ["" if c is None else printable(str(c)) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if align else cell.ljust(width)
            for cell, width, align in zip(row, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


_handler: logging.Handler | None = None
#: What ``--quiet`` turned off, for the next :func:`configure_logging` call to turn back on.
_quieted: dict[str, bool] = {"tqdm_env": False, "hub_bars": False}


class _ProgressAwareHandler(logging.StreamHandler):
    """Writes each record through ``tqdm.write``, which clears the progress bars drawn on the
    same terminal, prints the line and draws them again: a log line never lands inside a bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            from tqdm import tqdm

            tqdm.write(message, file=self.stream)
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


class _CliLogFilter(logging.Filter):
    """Drop records that a library's own handler already printed (huggingface_hub installs one),
    so that no message appears twice, and open_clip's warning that a model has random weights,
    which cotprompt only builds when asked to (``pretrained: null``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "root" and record.getMessage().startswith(
            "No pretrained weights loaded for model"
        ):
            return False
        current: logging.Logger | None = logging.getLogger(record.name)
        root = logging.getLogger()
        while current is not None and current is not root:
            if current.handlers:
                return False
            if not current.propagate:
                break
            current = current.parent
        return True


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Send log records to stderr at the level the flags ask for.

    Default: cotprompt's INFO messages and everyone's warnings; ``-v``: cotprompt's DEBUG
    messages; ``-vv``: every library's DEBUG messages; ``--quiet``: warnings and errors only.
    ``--quiet`` also turns progress bars off: cotprompt's and those of any tqdm imported later
    (``TQDM_DISABLE=1``) and huggingface_hub's download and upload bars.
    Records are written around progress bars (``tqdm.write``), never inside one.
    Calling it again replaces the handler it installed before (and nothing else), and turns back
    on the bars that an earlier ``--quiet`` call turned off.
    """
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _set_progress_bars(quiet)
    _handler = _ProgressAwareHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    _handler.addFilter(_CliLogFilter())
    root.addHandler(_handler)
    package = logging.getLogger("cotprompt")
    if quiet:
        package.setLevel(logging.WARNING)
        _handler.setLevel(logging.WARNING)
        return
    _handler.setLevel(logging.DEBUG)
    package.setLevel(logging.INFO if verbose == 0 else logging.DEBUG)
    if verbose >= 2:
        root.setLevel(logging.DEBUG)


def _set_progress_bars(quiet: bool) -> None:
    """``--quiet``: no progress bars (``TQDM_DISABLE``, huggingface_hub's switch); otherwise undo
    only what an earlier quiet call did, leaving a user's own settings alone."""
    if quiet:
        if not os.environ.get("TQDM_DISABLE"):
            os.environ["TQDM_DISABLE"] = "1"
            _quieted["tqdm_env"] = True
        try:
            from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars
        except ImportError:  # pragma: no cover - a dependency, but not needed to log
            return
        if not are_progress_bars_disabled():
            disable_progress_bars()
            _quieted["hub_bars"] = True
        return
    if _quieted["tqdm_env"]:
        os.environ.pop("TQDM_DISABLE", None)
        _quieted["tqdm_env"] = False
    if _quieted["hub_bars"]:
        from huggingface_hub.utils import enable_progress_bars

        enable_progress_bars()
        _quieted["hub_bars"] = False
