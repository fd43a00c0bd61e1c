"""One seed for a whole run: parameter initialisation, the global random streams of training, and
the seeds derived from it.

Every random draw of a run is a function of ``training.seed``:

- **Parameter initialisation.** Tuners and aggregators create their parameters when they are
  bound to a label set (:meth:`CoTPipeline.set_classes`), which is usually before :meth:`fit`
  runs. Each component's ``bind`` therefore runs under the global random streams forked and
  seeded from ``(seed, "init", component)`` (:func:`seeded_init`): the values do not depend on
  what ran before in the process, on the process (this torch build seeds its global generator
  differently in every process), nor on the other component (the tuner's values are the same
  whichever aggregator is used). Any plugin component that draws from torch's global generator
  inherits this without doing anything. When :meth:`fit` then runs with another seed than the
  one the still untrained parameters were drawn with, they are drawn again with the run's seed
  (:func:`redraw_untrained`), so ``create(...)`` then ``fit(training={"seed": s})`` is the run
  of seed ``s``.
- **Steps.** Before every optimisation step the global generators are seeded from
  ``(seed, "step", global step, process)`` (:func:`seed_step`): dropout and any other draw of a
  step are a function of the step, so a run resumed from a checkpoint draws what the
  uninterrupted run drew.
- **Augmentation** (random crop and flip) differs by task:

  - *classification* (:meth:`CoTPipeline.fit`): a function of ``(seed, epoch, sample index)``
    (:mod:`cotprompt.training.augment`), never of the process or the batch that loads the
    sample, so N processes augment as one does;
  - *retrieval and VQA* (:mod:`cotprompt.tasks`): drawn from torch's global generator inside
    the step, so a function of ``(seed, step)`` (the step's seed, :func:`seed_step`): exact on
    resume, but a sample's crop depends on the step (and so the batch) it lands in. These tasks
    train in a single process.

- **Shuffling** is a function of ``(seed, epoch)``
  (:func:`~cotprompt.training.schedule.epoch_batches`), as is retrieval's choice of one caption
  per image (:func:`~cotprompt.tasks.retrieval.sample_captions`); DataLoader workers (kept for
  the whole run) are seeded from ``(seed, "train")`` (:func:`loader_generator`); augmentation
  does not draw from them, so the weights do not depend on the number of workers.

Seeds of generators are always derived with :func:`derive_seed` (63 bits, whatever the run's
seed: ``training.seed`` is in ``0 <= seed < 2**63``), never by arithmetic on the seed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

if TYPE_CHECKING:
    from cotprompt.model import PromptModel
    from cotprompt.types import PromptChain

logger = logging.getLogger(__name__)

_MASK63 = (1 << 63) - 1


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed that is a pure function of ``seed`` and ``parts`` (sha256 of their text)."""
    text = "\x00".join(str(part) for part in (int(seed), *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & _MASK63


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (every device) from ``seed``
    (``accelerate.utils.set_seed`` with a derived 32-bit seed, which NumPy requires)."""
    from accelerate.utils import set_seed

    set_seed(derive_seed(seed, "global") % (1 << 32))


def seed_step(seed: int, global_step: int, process_index: int = 0) -> None:
    """Seed torch's generators (every device) for optimisation step ``global_step``."""
    torch.manual_seed(derive_seed(seed, "step", global_step, process_index))


def loader_generator(seed: int, *parts: object) -> torch.Generator:
    """A CPU generator for a ``DataLoader``: its base seed (and so its workers' seeds) comes
    from it instead of torch's global generator, which the loader then leaves untouched."""
    return torch.Generator().manual_seed(derive_seed(seed, "loader", *parts))


@contextlib.contextmanager
def seeded_global_rng(seed: int, *, cuda: bool = False) -> Iterator[None]:
    """Run the block with torch's CPU generator, Python's ``random`` and NumPy's global generator
    (and, with ``cuda``, the current CUDA device's generator) seeded from ``seed``; their
    previous states are restored afterwards.

    With ``cuda``, only the current device's generator is forked and seeded, and only when CUDA
    is initialised already (``torch.cuda.is_initialized()``): this never creates a CUDA context,
    let alone one on every GPU of the machine in every process."""
    py_state = random.getstate()
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with torch's usual installs
        np = None  # type: ignore[assignment]
    np_state = np.random.get_state() if np is not None else None
    devices = [torch.cuda.current_device()] if cuda and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if devices:
            torch.cuda.manual_seed(seed)  # the current device's generator
        random.seed(seed)
        if np is not None:
            np.random.seed(seed % (1 << 32))
        try:
            yield
        finally:
            random.setstate(py_state)
            if np is not None and np_state is not None:
                np.random.set_state(np_state)


def seeded_init(seed: int, component: str) -> contextlib.AbstractContextManager[None]:
    """The random streams under which ``component`` (``"tuner"``, ``"aggregator"``) creates its
    parameters for a run of ``seed``.

    The built-in components draw on the CPU and move the values, so they are the same on every
    device. When CUDA is already initialised, the current device's generator is seeded too, for
    components that draw on a GPU; CUDA is never initialised here, nor other devices touched.
    """
    return seeded_global_rng(derive_seed(seed, "init", component), cuda=True)


def bind_components(model: PromptModel, chain: PromptChain, seed: int) -> None:
    """Bind ``model``'s tuner and aggregator to ``chain``, each under :func:`seeded_init`."""
    with seeded_init(seed, "tuner"):
        model.tuner.bind(model.backbone, chain)
    with seeded_init(seed, "aggregator"):
        model.aggregator.bind(chain.num_steps, model.backbone.embed_dim)


# -- untrained parameters ------------------------------------------------------------------------


@dataclass(frozen=True)
class InitRecord:
    """The seed that the pipeline's trainable parameters were drawn with (``None``: several
    seeds, bound at different times), and a digest of the values drawn (to tell whether they
    are still untrained)."""

    seed: int | None
    digest: str


def state_digest(model: PromptModel, names: set[str] | None = None) -> str:
    """sha256 over the names, dtypes, shapes and bytes of ``model``'s trainable tensors (those
    of ``names`` only, when given)."""
    digest = hashlib.sha256()
    for name, value in sorted(model.trainable_state().items()):
        if names is not None and name not in names:
            continue
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{name}\x00{tensor.dtype}\x00{tuple(tensor.shape)}\x00".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def record_init(model: PromptModel, seed: int, names_before: set[str],
                previous: InitRecord | None) -> InitRecord | None:
    """After a bind: the record of what the trainable parameters hold (``previous`` when the
    bind created none; ``None`` when parameters that existed before are trained, as none of them
    then count as untrained)."""
    names = set(model.trainable_state())
    if not names - names_before:
        return previous
    if names_before and not is_untrained(model, previous, names=names_before):
        return None
    recorded: int | None = seed
    if names_before and previous is not None and previous.seed != seed:
        recorded = None
    return InitRecord(recorded, state_digest(model))


def is_untrained(model: PromptModel, record: InitRecord | None, *,
                 names: set[str] | None = None) -> bool:
    """Whether the trainable parameters (``names`` only, when given: those recorded) still hold
    the values ``record`` was taken of at their creation."""
    if record is None:
        return False
    return state_digest(model, names) == record.digest


def redraw_untrained(model: PromptModel, chain: PromptChain | None, record: InitRecord | None,
                     seed: int) -> InitRecord | None:
    """Draw untrained parameters again for a run of ``seed`` (see the module's notes).

    Nothing happens when the parameters have been trained or loaded since they were created, or
    were already drawn with ``seed``. The tuner and aggregator are rebuilt from their configs
    (``type(component)(component.config)``), bound under :func:`seeded_init` and their values
    copied into the model's parameters (which keep their identity).

    Returns:
        The new record when the parameters were drawn again, else ``None``.
    """
    if record is None or record.seed == seed or chain is None:
        return None
    if not is_untrained(model, record):
        return None
    fresh = {}
    for kind in ("tuner", "aggregator"):
        component = getattr(model, kind)
        if not isinstance(component, nn.Module) or not any(
            p.requires_grad for p in component.parameters()
        ):
            continue
        try:
            # a tuner or an aggregator: its bind() below depends on the kind
            twin = cast(Any, type(component))(component.config)
        except Exception as exc:  # a plugin component built otherwise
            logger.warning(
                "the %s's parameters were drawn with seed %s, not the run's seed %d: it cannot "
                "be rebuilt from its config (%s); set the seed before binding classes, e.g. "
                "CoTPipeline.create(..., training={'seed': %d})", kind, record.seed, seed, exc,
                seed,
            )
            return None
        with seeded_init(seed, kind):
            if kind == "tuner":
                twin.bind(model.backbone, chain)
            else:
                twin.bind(chain.num_steps, model.backbone.embed_dim)
        fresh[kind] = (component, twin)
    for kind, (component, twin) in fresh.items():
        new = {n: p for n, p in twin.named_parameters() if p.requires_grad}
        old = {n: p for n, p in component.named_parameters() if p.requires_grad}
        if set(new) != set(old) or any(new[n].shape != old[n].shape for n in old):
            logger.warning("the %s's parameters were drawn with seed %s, not the run's seed %d: "
                           "a rebuilt %s has other parameters", kind, record.seed, seed, kind)
            return None
    with torch.no_grad():
        for component, twin in fresh.values():
            new = dict(twin.named_parameters())
            for name, value in component.named_parameters():
                if value.requires_grad:
                    value.copy_(new[name])
    logger.info("drew the untrained parameters again with the run's seed %d (they had been "
                "drawn with seed %s when the classes were bound)", seed, record.seed)
    return InitRecord(seed, state_digest(model))
