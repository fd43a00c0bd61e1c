"""``history.json``: the per-epoch records of the training run that made an artifact's prompts.

What :meth:`CoTPipeline.fit` returned as ``TrainingResult.history``: a JSON list of flat objects
(``epoch``, ``loss``, ``lr``, ``seconds``, validation metrics...), numbers finite or ``null``.
:func:`encode_history` writes it, :func:`parse_history` reads it back as untrusted input: size
cap, JSON without ``NaN``/``Infinity``, schema; the artifact config records its SHA-256 (see
:func:`cotprompt.artifact.format.read_history`). Keys and text values are shown in the model
card: they may hold no control characters, ``<``, ``>`` or ``|`` (nor may a history be saved
with them), and the card escapes them as it escapes every text read from a file.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any

from cotprompt.errors import ArtifactError, ConfigError, is_control

__all__ = ["HISTORY_NAME", "MAX_HISTORY_BYTES", "MAX_HISTORY_KEYS", "check_history",
           "encode_history", "parse_history"]

HISTORY_NAME = "history.json"
#: The largest ``history.json`` read (a 10 000-epoch run with a dozen metrics is ~2 MB).
MAX_HISTORY_BYTES = 8 << 20
#: The most keys one epoch's record may have, and the longest key or text value.
MAX_HISTORY_KEYS = 256
_MAX_TEXT = 1000
#: What a key or text value may not hold: markup (``<``, ``>``), table cell ends (``|``).
_REFUSED = re.compile(r"[<>|]")
Value = bool | int | float | str | None


def _clean(value: Any) -> Value:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None  # JSON has no NaN: null
    return str(value)


def encode_history(history: Sequence[Mapping[str, Any]]) -> str:
    """The ``history.json`` text of ``history``: one object per epoch, keys as text; numbers
    (numpy's too) as JSON numbers, non-finite ones as ``null``, other values as text.

    Exactly what :func:`parse_history` reads back is written, so that a save never writes what
    loading or pushing would refuse.

    Raises:
        ConfigError: ``history`` is not a sequence of mappings, or a record that
            :func:`parse_history` would refuse (a key or text with a control character, ``<``,
            ``>`` or ``|``; an empty key; too many keys; overlong text), or the text is over
            :data:`MAX_HISTORY_BYTES` (one line naming ``training_history``; nothing is
            written). A ``ValueError``.
    """
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
        raise _refused(f"a training history is a list of per-epoch records, not "
                       f"{type(history).__name__}")
    records: list[dict[str, Value]] = []
    for record in history:
        if not isinstance(record, Mapping):
            raise _refused(f"a training history's records are mappings, not "
                           f"{type(record).__name__} (record {len(records) + 1})")
        cleaned = {str(key): _clean(value) for key, value in record.items()}
        problem = _record_problem(cleaned)
        if problem:
            raise _refused(f"a training history's record {len(records) + 1} {problem}")
        records.append(cleaned)
    text = json.dumps(records, indent=1, allow_nan=False) + "\n"
    size = len(text.encode("utf-8"))
    if size > MAX_HISTORY_BYTES:
        raise _refused(f"a training history of {len(records)} records is {size} bytes as "
                       f"{HISTORY_NAME}, over the {MAX_HISTORY_BYTES} loading accepts")
    return text


def check_history(history: Any) -> list[dict[str, Any]]:
    """``history`` (a pipeline's ``training_history``) as a list of dicts, after the checks of
    :func:`encode_history`: what a save would refuse is refused before anything is written.

    Raises:
        ConfigError: See :func:`encode_history`.
    """
    encode_history(history)
    return [dict(record) for record in history]


def _refused(problem: str) -> ConfigError:
    return ConfigError(f"cannot save training_history: {problem}")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def parse_history(data: bytes, source: str) -> list[dict[str, Value]]:
    """The records of a ``history.json`` read from an untrusted place.

    Raises:
        ArtifactError: Over :data:`MAX_HISTORY_BYTES`, not UTF-8 JSON, ``NaN``/``Infinity``, or
            not a list of flat objects with text keys and number, text, boolean or null values;
            a key or text value holding a control character (newlines included), ``<``, ``>``
            or ``|`` (one line naming ``source`` and the first problem).
    """
    if len(data) > MAX_HISTORY_BYTES:
        raise ArtifactError(f"{source} is {len(data)} bytes, over the {MAX_HISTORY_BYTES} a "
                            "training history may have")
    try:
        records = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArtifactError(f"{source} is not a JSON training history: "
                            f"{str(exc).splitlines()[0][:200]}") from exc
    if not isinstance(records, list):
        raise ArtifactError(f"{source} does not hold a list of per-epoch records")
    for n, record in enumerate(records):
        problem = _record_problem(record)
        if problem:
            raise ArtifactError(f"{source}: record {n + 1} {problem}")
    return records


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"is {type(record).__name__}, not an object"
    if len(record) > MAX_HISTORY_KEYS:
        return f"has {len(record)} keys, over {MAX_HISTORY_KEYS}"
    for key, value in record.items():
        if not key or len(key) > _MAX_TEXT:
            return "has an empty or overlong key"
        if _unsafe(key):
            return f"has a key with a control character, '<', '>' or '|': {key[:40]!r}"
        if isinstance(value, str) and len(value) > _MAX_TEXT:
            return f"has an overlong text under {key[:40]!r}"
        if isinstance(value, str) and _unsafe(value):
            return f"has a text with a control character, '<', '>' or '|' under {key[:40]!r}"
        if value is not None and not isinstance(value, (bool, int, float, str)):
            return f"has a {type(value).__name__} under {key[:40]!r}, not a number or text"
        if isinstance(value, float) and not math.isfinite(value):  # 1e999 parses to inf
            return f"has a non-finite number under {key[:40]!r}"
    return None


def _unsafe(text: str) -> bool:
    """Whether ``text`` holds a character no key or text value may have (a control character,
    :func:`~cotprompt.errors.is_control`, or markup: ``<``, ``>``, ``|``)."""
    return bool(_REFUSED.search(text)) or any(is_control(c) for c in text)
