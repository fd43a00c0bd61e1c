"""DataLoaders whose image loading hides behind compute: worker processes decode and augment the
next batches while the model runs on the current one (prefetched, in pinned memory on CUDA).

Training keeps one loader, and so one set of worker processes, for the whole run
(:class:`RunLoader`): PyTorch's ``persistent_workers`` over a batch sampler that is given each
epoch's batches. Results do not depend on the number of workers: a training sample's
augmentation is a function of ``(seed, epoch, index)`` (:mod:`cotprompt.training.augment`),
whichever process loads it; :func:`seed_worker` seeds each worker's global generators besides,
for transforms that draw from them outside that scheme.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from cotprompt.errors import ConfigError
from cotprompt.training.config import usable_cpus
from cotprompt.training.loop import progress_disabled

logger = logging.getLogger(__name__)

#: Batches each worker loads ahead (PyTorch's default).
PREFETCH_FACTOR = 2
#: Encoding passes (evaluation, prediction) of more batches than this show a progress bar.
PROGRESS_MIN_BATCHES = 4

_T = TypeVar("_T")


def batch_progress(batches: Iterable[_T], total: int, desc: str, *,
                   enabled: bool = True) -> Iterator[_T]:
    """``batches`` with a tqdm bar (on stderr, removed when done) when ``enabled`` and there
    are more than :data:`PROGRESS_MIN_BATCHES` of them, unless ``TQDM_DISABLE`` turns bars off
    (:func:`~cotprompt.training.loop.progress_disabled`)."""
    disable = not enabled or total <= PROGRESS_MIN_BATCHES or progress_disabled()
    return iter(tqdm(batches, total=total, desc=desc, unit="batch", leave=False,
                     disable=disable))


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` of cotprompt's loaders: seed Python's ``random`` and NumPy from the
    worker's torch seed (the loader's base seed plus ``worker_id``, drawn from the loader's own
    generator), as PyTorch's reproducibility notes recommend."""
    seed = torch.initial_seed() % (1 << 32)
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with torch's usual installs
        return
    np.random.seed(seed)


def check_loader_options(num_workers: object, pin_memory: object = None) -> None:
    """What ``evaluate`` and ``predict`` check of their loader options before any work.

    Raises:
        ConfigError: ``num_workers`` not an integer >= 0, or ``pin_memory`` not ``True``,
            ``False`` or ``None``.
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    if pin_memory is not None and not isinstance(pin_memory, bool):
        raise ConfigError(f"pin_memory must be True, False or None, got {pin_memory!r}")


def loader_options(num_workers: int, device: torch.device | str | None, *,
                   persistent: bool = False, num_batches: int | None = None,
                   pin_memory: bool | None = None) -> dict[str, Any]:
    """``DataLoader`` keyword arguments for ``num_workers`` workers feeding ``device``.

    Args:
        num_workers: Worker processes asked for (``0``: load in the main process); at most
            the usable CPUs start (:func:`~cotprompt.training.config.usable_cpus`, logged
            when fewer than asked), more would only compete for them.
        device: Where the batches go.
        persistent: Keep the workers between passes (``persistent_workers``).
        num_batches: Batches the loader will load: no more workers than that start.
        pin_memory: Pinned memory (so that ``.to(device, non_blocking=True)`` overlaps the
            copy); ``None``: when ``device`` is CUDA.

    Returns:
        ``num_workers`` and ``pin_memory``, and with workers :func:`seed_worker`,
        :data:`PREFETCH_FACTOR` and ``persistent_workers``.
    """
    cpus = usable_cpus()
    if num_workers > cpus:  # also keeps PyTorch from warning about it on every loader
        logger.warning("num_workers=%d: starting %d worker processes, as many as the usable "
                       "CPUs", num_workers, cpus)
        num_workers = cpus
    if num_batches is not None:
        num_workers = min(num_workers, max(num_batches, 0))
    if pin_memory is None:
        pin_memory = device is not None and torch.device(device).type == "cuda"
    options: dict[str, Any] = {"num_workers": num_workers, "pin_memory": pin_memory}
    if num_workers > 0:
        options.update(worker_init_fn=seed_worker, prefetch_factor=PREFETCH_FACTOR,
                       persistent_workers=persistent)
    return options


class EpochBatches(Sampler[list[Any]]):
    """A batch sampler whose batches are set before each pass (:attr:`batches`): one
    ``DataLoader`` with persistent workers then serves every epoch of a run."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    def __iter__(self) -> Iterator[list[Any]]:
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


class RunLoader:
    """One ``DataLoader`` over ``dataset`` for a whole training run: worker processes start with
    the first epoch and serve every epoch (``persistent_workers``), and stop after the last one,
    when an epoch is abandoned (an error, an interrupt), or on :meth:`close`.

    Args:
        dataset: Indexed by the keys of the batches (for training: ``(epoch, index)``).
        num_workers: Worker processes (``0``: load in the main process).
        device: Where the batches go (pinned memory when it is CUDA).
        generator: The loader's own generator (the workers' base seed).
        epochs: The index of the last epoch plus one: the workers stop after it.
        num_batches: Batches of a whole epoch: no more workers than that start.
    """

    def __init__(self, dataset: Dataset[Any], *, num_workers: int,
                 device: torch.device | str | None, generator: torch.Generator,
                 epochs: int, num_batches: int | None = None) -> None:
        self.dataset = dataset
        self.num_workers = num_workers
        self.num_batches = num_batches
        self.device = device
        self.generator = generator
        self.epochs = epochs
        self.sampler = EpochBatches()
        self._loader: DataLoader[Any] | None = None

    def epoch(self, batches: Sequence[list[Any]], epoch: int) -> Iterator[Any]:
        """Yield the collated batches of ``batches`` (keys of ``dataset``) in order.

        The training loop takes one batch per step and need not exhaust this iterator: the
        workers stop before the last batch of the last epoch is yielded, or when the iterator
        is closed with batches not taken (an interrupted epoch)."""
        last_epoch = epoch + 1 >= self.epochs
        if not batches:  # nothing to load (a resume at the end of an epoch)
            if last_epoch:
                self.close()
            return
        self.sampler.batches = list(batches)
        if self._loader is None:
            self._loader = DataLoader(
                self.dataset, batch_sampler=self.sampler, generator=self.generator,
                **loader_options(self.num_workers, self.device, persistent=True,
                                 num_batches=self.num_batches),
            )
        iterator: Iterator[Any] | None = iter(self._loader)
        handed = 0
        try:
            for handed in range(1, len(batches) + 1):
                assert iterator is not None
                batch = next(iterator)
                if handed == len(batches) and last_epoch:
                    iterator = None  # nothing left to load: stop the workers now
                    self.close()
                yield batch
        finally:
            if handed < len(batches) or last_epoch:
                iterator = None
                self.close()

    def close(self) -> None:
        """Stop the worker processes (the last reference to the loader and its persistent
        iterator goes; PyTorch shuts the workers down)."""
        self._loader = None
