"""Names of open_clip models: the small architectures shipped with cotprompt (registered with
open_clip on first use), and ``pretrained`` files and ``local-dir:`` folders made absolute."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "LOCAL_DIR",
    "TINY_DEMO_MODEL",
    "TINY_MODEL",
    "TINY_MODELS",
    "absolute_local_dir",
    "absolute_path",
    "absolute_pretrained",
    "register_model_configs",
]

_CONFIG_DIR = Path(__file__).parent / "model_configs"
#: Small architectures shipped with cotprompt for offline use and tests (random weights only).
TINY_MODEL = "cotprompt-tiny"
#: The same with average-pooled patch tokens: random-weight image features are less collinear
#: than with the class token, so the offline demo shows prompt tuning at work.
TINY_DEMO_MODEL = "cotprompt-tiny-avgpool"
#: The shipped small architectures (random weights only).
TINY_MODELS = (TINY_MODEL, TINY_DEMO_MODEL)
_registered = False


def register_model_configs() -> None:
    """Make cotprompt's small model configs (``cotprompt-tiny``) known to open_clip."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(_CONFIG_DIR)
        _registered = True


_PATH_MARKS = ("/", "\\", ".")
LOCAL_DIR = "local-dir:"


def absolute_path(value: str, base_dir: Path) -> Path:
    """``value`` as a path (``~`` expanded), made absolute against ``base_dir`` when relative."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(os.path.abspath(base_dir / path))


def absolute_pretrained(value: str, base_dir: Path) -> str:
    """``pretrained`` with a relative file path made absolute against ``base_dir``; open_clip
    tags (which never hold ``/``, ``\\`` or ``.``, and name no file there) are kept."""
    if not value.strip():
        return value
    is_path = (
        value.startswith("~")
        or any(mark in value for mark in _PATH_MARKS)
        or (base_dir / value).is_file()
    )
    return str(absolute_path(value, base_dir)) if is_path else value


def absolute_local_dir(model_name: str, base_dir: Path) -> str:
    """A ``local-dir:`` model name with its folder made absolute against ``base_dir``; other
    names unchanged."""
    if not model_name.startswith(LOCAL_DIR) or not model_name.removeprefix(LOCAL_DIR).strip():
        return model_name
    return LOCAL_DIR + str(absolute_path(model_name.removeprefix(LOCAL_DIR), base_dir))
