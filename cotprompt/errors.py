"""Exceptions raised by cotprompt.

Every error a user can cause derives from :class:`CotpromptError`, so that applications can catch
the library's errors in one place; each subclass also derives from the built-in exception that
best describes it (``ValueError``, ``KeyError``, ...), so existing handlers keep working.
"""

from __future__ import annotations

import unicodedata


class CotpromptError(Exception):
    """Base class of every error raised on purpose by cotprompt."""


class UnknownComponentError(CotpromptError, KeyError):
    """A component name (backbone, generator, tuner, aggregator) is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class PluginError(CotpromptError, RuntimeError):
    """A third-party plugin failed to load or registered something invalid."""


class ConfigError(CotpromptError, ValueError):
    """A configuration value or file is invalid."""


class ArtifactError(CotpromptError, ValueError):
    """A saved pipeline (config or weights) is missing, corrupt or does not match."""


class DataError(CotpromptError, ValueError):
    """A dataset, split file, image or class list is invalid."""


class TrainingError(CotpromptError, RuntimeError):
    """Training cannot go on (for example the loss became NaN)."""


class NumericalError(CotpromptError, ValueError):
    """A computation produced NaN or infinite numbers where results need finite ones.

    Raised, for example, by :meth:`~cotprompt.CoTPipeline.predict` and
    :meth:`~cotprompt.CoTPipeline.evaluate` when a logit is NaN or infinite (from the
    prompt weights, the backbone, an image or a plugin), instead of returning a label with score
    ``nan`` or a meaningless accuracy; and by the command line instead of writing invalid JSON.
    The message names what is non-finite.
    """


class UnsafeSettingError(ConfigError):
    """A loaded file (artifact, Hub repository, config file) carries a setting that only the
    caller may make, such as an opt-in to pickle or remote code."""


def one_line(exc: BaseException | str, limit: int | None = None) -> str:
    """An exception's message on one line (white space collapsed), cut to ``limit`` characters;
    the exception's type name when it has no message. For error messages that quote a library's
    exception."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


#: The Unicode ``Bidi_Control`` characters (marks, embeddings, overrides, isolates): they can
#: show text reordered (a label reversed); :func:`is_control`.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                          "\u2066\u2067\u2068\u2069")
_CONTROL_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def is_control(char: str) -> bool:
    """Whether ``char`` (one character) is not shown as text but acts on the text or the
    terminal: a control character (Unicode category ``Cc``), a surrogate (``Cs``), a line or
    paragraph separator (``Zl``, ``Zp``) or a bidirectional control (:data:`BIDI_CONTROLS`).
    The zero-width (non-)joiners (U+200C, U+200D) and other format characters that scripts
    and emoji sequences use are text. For text read from files shown to a user (model cards,
    training histories, command-line tables)."""
    return char in BIDI_CONTROLS or unicodedata.category(char) in _CONTROL_CATEGORIES
