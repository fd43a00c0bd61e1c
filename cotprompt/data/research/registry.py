"""Datasets by name: the 15 layouts of the research code's ``DATASETS.md``, datasets that
plugins register, and a user's own data.

- Built-in names (:data:`BUILTIN_DATASETS`, in ``DATASETS.md`` order): ``imagenet``,
  ``caltech101``, ``oxford_pets``, ``stanford_cars``, ``oxford_flowers``, ``food101``,
  ``fgvc_aircraft``, ``sun397``, ``dtd``, ``eurosat``, ``ucf101``, ``imagenetv2``,
  ``imagenet_sketch``, ``imagenet_a``, ``imagenet_r``.
- Plugins add names with the ``register_datasets(register)`` hook
  (:mod:`cotprompt.plugins.hookspecs`): ``register(name, reader)``. Built-in names always win;
  between plugins the first registered wins; a plugin whose hook raises or registers something
  invalid is skipped as a whole with a warning (``COTPROMPT_STRICT_PLUGINS=1``: a
  :class:`~cotprompt.errors.PluginError`).
- A user's own data (:mod:`cotprompt.data.research.user`): ``folder:PATH``, ``csv:PATH`` and
  ``split:PATH`` (images relative to the file's folder) or ``split:PATH;image_root=DIR``.
  A relative ``PATH`` or ``DIR`` is taken from the ``$DATA`` folder; ``~`` is expanded.

``load_dataset(name, root, listing="os")`` lists the ImageNet folders (ImageNet and its four
variants) in ``os.listdir`` order, as the research code does on that machine and copy, instead of
sorted by name (the default); readers without a ``listing`` keyword ignore it.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cotprompt.data.research.aircraft import read_fgvc_aircraft
from cotprompt.data.research.base import DatasetReader, ResearchDataset
from cotprompt.data.research.imagenet import (
    read_imagenet,
    read_imagenet_a,
    read_imagenet_r,
    read_imagenet_sketch,
    read_imagenetv2,
)
from cotprompt.data.research.layout import LISTINGS, Listing
from cotprompt.data.research.split_file import (
    CALTECH101,
    DTD,
    EUROSAT,
    FOOD101,
    OXFORD_FLOWERS,
    OXFORD_PETS,
    STANFORD_CARS,
    SUN397,
    UCF101,
)
from cotprompt.data.research.user import (
    read_csv_dataset,
    read_folder_dataset,
    read_split_dataset,
)
from cotprompt.errors import ConfigError, DataError, PluginError, one_line
from cotprompt.plugins.loading import DATASETS_HOOK
from cotprompt.plugins.registry import Registry, get_registry

__all__ = [
    "BUILTIN_DATASETS",
    "GENERIC_KINDS",
    "IMAGENET_VARIANTS",
    "STANDARD_DATASETS",
    "dataset_names",
    "dataset_provider",
    "get_reader",
    "load_dataset",
]

logger = logging.getLogger(__name__)

BUILTIN_DATASETS: Mapping[str, DatasetReader] = MappingProxyType(
    {
        "imagenet": read_imagenet,
        "caltech101": CALTECH101,
        "oxford_pets": OXFORD_PETS,
        "stanford_cars": STANFORD_CARS,
        "oxford_flowers": OXFORD_FLOWERS,
        "food101": FOOD101,
        "fgvc_aircraft": read_fgvc_aircraft,
        "sun397": SUN397,
        "dtd": DTD,
        "eurosat": EUROSAT,
        "ucf101": UCF101,
        "imagenetv2": read_imagenetv2,
        "imagenet_sketch": read_imagenet_sketch,
        "imagenet_a": read_imagenet_a,
        "imagenet_r": read_imagenet_r,
    }
)
"""The 15 built-in readers by name, in the order of the research code's ``DATASETS.md``."""

STANDARD_DATASETS: tuple[str, ...] = tuple(list(BUILTIN_DATASETS)[:11])
"""The 11 datasets of base-to-new, cross-dataset and few-shot tables (ImageNet first)."""

IMAGENET_VARIANTS: tuple[str, ...] = tuple(list(BUILTIN_DATASETS)[11:])
"""The 4 test-only targets of domain generalisation (ImageNet-V2, -Sketch, -A, -R)."""

GENERIC_KINDS: tuple[str, ...] = ("folder", "csv", "split")
"""The prefixes of a user's own data: ``folder:PATH``, ``csv:PATH``, ``split:PATH``."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_IMAGE_ROOT = ";image_root="


@dataclass(frozen=True)
class _PluginDatasets:
    """What the plugins of one component registry registered."""

    readers: dict[str, DatasetReader]
    plugin_of: dict[str, str]
    failures: list[str]


_cache: tuple[Registry, _PluginDatasets] | None = None
_lock = threading.Lock()


def _collect(registry: Registry) -> _PluginDatasets:
    """Call every plugin's ``register_datasets`` hook, one plugin at a time."""
    found = _PluginDatasets({}, {}, [])
    caller = getattr(registry.plugin_manager.hook, DATASETS_HOOK, None)
    for impl in caller.get_hookimpls() if caller is not None else []:
        staged: dict[str, DatasetReader] = {}

        def register(name: Any, reader: Any, *, _staged: dict[str, DatasetReader] = staged) -> None:
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise PluginError(
                    f"dataset name must be letters, digits, '_', '-' or '.', got {name!r}"
                )
            if not callable(reader):
                raise PluginError(f"dataset {name!r}: reader {reader!r} is not callable")
            if name in _staged and _staged[name] is not reader:
                raise PluginError(f"dataset {name!r} registered twice with different readers")
            _staged[name] = reader

        try:
            impl.function(**({"register": register} if "register" in impl.argnames else {}))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a plugin must not end the program
            error = f"plugin {impl.plugin_name!r} failed in {DATASETS_HOOK}: {one_line(exc)}"
            if registry.strict:
                raise PluginError(error) from exc
            logger.warning("%s; its datasets are skipped", error)
            found.failures.append(error)
            continue
        for name, reader in staged.items():
            if name in BUILTIN_DATASETS or name in found.readers:
                kept = "cotprompt" if name in BUILTIN_DATASETS else found.plugin_of[name]
                logger.warning(
                    "dataset %r of plugin %r is ignored: %s registers it first",
                    name,
                    impl.plugin_name,
                    kept,
                )
                continue
            found.readers[name] = reader
            found.plugin_of[name] = impl.plugin_name
    return found


def _plugin_datasets(registry: Registry | None = None) -> _PluginDatasets:
    """The datasets of ``registry``'s plugins (default: the process-wide one), collected once
    per registry (``reset_registry()`` makes the next call collect them again)."""
    global _cache
    registry = registry if registry is not None else get_registry()
    with _lock:
        if _cache is not None and _cache[0] is registry:
            return _cache[1]
    found = _collect(registry)  # not under the lock: plugin code runs here
    with _lock:
        _cache = (registry, found)
    return found


def dataset_names(*, registry: Registry | None = None) -> list[str]:
    """The registered dataset names: the 15 built-ins in ``DATASETS.md`` order, then those of
    plugins in load order (a user's own data is named by path, see :func:`get_reader`).

    Args:
        registry: The plugins to ask (default: the process-wide
            :func:`~cotprompt.plugins.get_registry`); a
            :class:`~cotprompt.plugins.Registry` built with ``extra_plugins`` tests a plugin.

    Raises:
        PluginError: In strict mode, a plugin's hook failed or registered something invalid.
    """
    return [*BUILTIN_DATASETS, *_plugin_datasets(registry).readers]


def _path(text: str, root: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else root / path


def _generic_reader(name: str, kind: str, spec: str) -> DatasetReader:
    if not spec.strip():
        raise ConfigError(f"dataset {name!r}: give a path after '{kind}:'")
    if kind == "folder":
        return lambda root: read_folder_dataset(_path(spec, Path(root)), root=root, name=name)
    if kind == "csv":
        return lambda root: read_csv_dataset(_path(spec, Path(root)), root=root, name=name)
    file, _, image_root = spec.partition(_IMAGE_ROOT)
    if _IMAGE_ROOT in spec and not image_root.strip():
        raise ConfigError(f"dataset {name!r}: give a folder after 'image_root='")

    def read(root: Path) -> ResearchDataset:
        folder = _path(image_root, Path(root)) if image_root else None
        return read_split_dataset(
            _path(file, Path(root)), root=Path(root), image_root=folder, name=name
        )

    return read


def _unknown(name: str, registry: Registry | None) -> ConfigError:
    plugins = _plugin_datasets(registry)
    known = [*BUILTIN_DATASETS, *plugins.readers]

    def norm(text: str) -> str:
        return re.sub(r"[^a-z0-9]", "", text.lower())

    by_norm = {norm(k): k for k in known}
    close = difflib.get_close_matches(norm(name), list(by_norm), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(repr(by_norm[c]) for c in close)}? " if close else ""
    failed = f" ({'; '.join(plugins.failures)})" if plugins.failures else ""
    return ConfigError(
        f"unknown dataset {name!r}; {hint}known datasets: {', '.join(known)}; a user's own "
        f"data: folder:PATH, csv:PATH, split:PATH{failed}"
    )


def get_reader(name: str, *, registry: Registry | None = None) -> DatasetReader:
    """The reader of a dataset name.

    Args:
        name: A registered name (:func:`dataset_names`) or a user's own data:
            ``folder:PATH``, ``csv:PATH``, ``split:PATH`` or ``split:PATH;image_root=DIR``.
        registry: The plugins to ask (see :func:`dataset_names`).

    Returns:
        A callable taking the ``$DATA`` folder and returning the :class:`ResearchDataset`.

    Raises:
        ConfigError: The name is unknown (with close matches and the known names) or a generic
            entry has no path.
    """
    if not isinstance(name, str):
        raise ConfigError(f"a dataset name must be a string, got {name!r}")
    if name in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[name]
    kind, sep, spec = name.partition(":")
    if sep and kind in GENERIC_KINDS:
        return _generic_reader(name, kind, spec)
    reader = _plugin_datasets(registry).readers.get(name)
    if reader is None:
        raise _unknown(name, registry)
    return reader


def _takes_listing(reader: DatasetReader) -> bool:
    try:
        parameters = inspect.signature(reader).parameters
    except (TypeError, ValueError):  # no signature to read: pass nothing
        return False
    parameter = parameters.get("listing")
    return parameter is not None and parameter.kind in (
        inspect.Parameter.KEYWORD_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    )


def load_dataset(
    name: str,
    root: str | Path,
    *,
    registry: Registry | None = None,
    listing: Listing | None = None,
) -> ResearchDataset:
    """Read a dataset by name from the ``$DATA`` folder.

    Args:
        name: See :func:`get_reader`.
        root: The ``$DATA`` folder (``~`` expanded).
        registry: The plugins to ask (see :func:`dataset_names`).
        listing: The order of the images of a class folder, for the readers that list folders
            (ImageNet and its variants, a plugin's reader with a ``listing`` keyword):
            ``"sorted"`` (their default, the same on every machine) or ``"os"`` (the research
            code's ``os.listdir`` order, which reproduces its ImageNet few-shot picks on the
            same copy of the files). ``None``: the reader's default. The other readers ignore
            it (their order is their split file's).

    Returns:
        The dataset.

    Raises:
        ConfigError: The name or ``listing`` is unknown.
        DataError: ``root`` is not a folder, or the reader refuses the layout (naming the file).
        PluginError: A plugin's reader returned something other than a ``ResearchDataset``.
    """
    if listing is not None and listing not in LISTINGS:
        raise ConfigError(f"listing must be one of {list(LISTINGS)}, got {listing!r}")
    reader = get_reader(name, registry=registry)
    folder = Path(root).expanduser()
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "is missing"
        raise DataError(f"$DATA folder {str(folder)!r} {state}")
    if listing is not None and _takes_listing(reader):
        dataset = reader(folder, listing=listing)  # type: ignore[call-arg]
    else:
        dataset = reader(folder)
    if not isinstance(dataset, ResearchDataset):
        raise PluginError(
            f"the reader of dataset {name!r} returned {type(dataset).__name__}, "
            "not a ResearchDataset"
        )
    return dataset


def dataset_provider(name: str, *, registry: Registry | None = None) -> str:
    """Who provides a dataset name: ``"cotprompt"``, the plugin's name, or ``"user"`` for a
    generic entry (``registry``: see :func:`dataset_names`).

    Raises:
        ConfigError: The name is unknown.
    """
    if name in BUILTIN_DATASETS:
        return "cotprompt"
    if name.partition(":")[0] in GENERIC_KINDS and ":" in name:
        return "user"
    plugins = _plugin_datasets(registry)
    if name not in plugins.plugin_of:
        raise _unknown(name, registry)
    return plugins.plugin_of[name]
