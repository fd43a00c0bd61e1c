"""Training checkpoints: safetensors plus JSON (never pickle), written atomically.

A checkpoint folder ``checkpoint-<step>/`` holds ``state.safetensors`` (trainable parameters,
optimizer tensors, random-number-generator states) and ``state.json`` (counters, the losses of
the current epoch so far, optimizer hyper-parameters, a fingerprint of the run and what it was
computed from, so that a refused resume names the options that differ, and the run's name in
its trackers, so that a resumed run goes on under it). The folder is written
under a temporary name and renamed, so an interrupted save leaves no partial checkpoint.
Re-saving a step sets the previous folder aside as ``.checkpoint-<step>.<random>.old`` until the
new one is in place; if the save is stopped in between, the old folder is renamed back (at once,
or by the next :func:`list_checkpoints` after a kill), so one of the two always survives.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from cotprompt.errors import TrainingError
from cotprompt.io import current_umask, fsync_folder, save_safetensors_atomic, write_text_atomic
from cotprompt.training.config import check_tracker_name

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "state.safetensors"
META_FILE = "state.json"


@dataclass
class TrainingState:
    """Where training stands.

    Attributes:
        global_step: Optimisation steps done.
        epoch: Current epoch (0-based).
        step_in_epoch: Batches of ``epoch`` already done.
        history: Per-epoch metrics so far.
        epoch_losses: The losses of the batches of ``epoch`` already done (so that a resumed
            epoch's record averages all of its batches, not only those after the resume).
        run_name: The run's name in its trackers (``None``: none yet), so that a resumed run
            goes on logging under it. Not part of the run's fingerprint.
    """

    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    run_name: str | None = None


def save_checkpoint(
    directory: Path,
    state: TrainingState,
    parameters: dict[str, Tensor],
    optimizer: torch.optim.Optimizer,
    fingerprint: str,
    keep: int,
    run: dict[str, Any] | None = None,
) -> Path:
    """Write ``checkpoint-<global_step>`` under ``directory`` and prune old ones.

    ``run`` is what the fingerprint was computed from (see
    :func:`~cotprompt.training.trainer.run_record`): a resume of another run names the options
    that differ.

    Returns:
        The checkpoint folder.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"param.{name}": value for name, value in parameters.items()}
    optim_state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in optim_state["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = cuda_state
    meta = {
        "global_step": state.global_step,
        "epoch": state.epoch,
        "step_in_epoch": state.step_in_epoch,
        "history": state.history,
        "epoch_losses": state.epoch_losses,
        "fingerprint": fingerprint,
        "run": run,
        "run_name": state.run_name,
        "param_groups": optim_state["param_groups"],
        "optimizer_scalars": scalars,
    }
    final = directory / f"{CHECKPOINT_PREFIX}{state.global_step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=directory))
    replaced = tmp.with_name(tmp.name + ".old")
    try:
        cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        save_safetensors_atomic(cpu, tmp / STATE_FILE)
        write_text_atomic(tmp / META_FILE, json.dumps(meta, indent=1))
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp made it 0700; follow the umask
        fsync_folder(tmp)
        if final.exists():  # set aside, not deleted, until the new one is in place
            final.rename(replaced)
        tmp.rename(final)
        fsync_folder(directory)
    finally:
        if os.path.lexists(replaced) and not os.path.lexists(final):
            try:  # stopped between the two renames: the old checkpoint goes back in place
                replaced.rename(final)
            except OSError as exc:
                logger.warning("could not put %s back as %s (%s); the next listing of the "
                               "checkpoints does", replaced, final, exc)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if replaced.exists() and os.path.lexists(final):  # only once a checkpoint is in place
            shutil.rmtree(replaced, ignore_errors=True)
    for old in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    logger.info("saved checkpoint %s", final)
    return final


def _restore_set_aside(directory: Path) -> None:
    """Rename back a checkpoint that a re-save set aside (``.checkpoint-<step>.<random>.old``)
    and was killed before the new one was in place. One whose step has a checkpoint again is
    left alone."""
    for path in directory.iterdir():
        name = path.name
        if not (name.startswith(f".{CHECKPOINT_PREFIX}") and name.endswith(".old")):
            continue
        final_name = name[1:].split(".", 1)[0]
        if not final_name[len(CHECKPOINT_PREFIX):].isdigit() or path.is_symlink():
            continue
        if not path.is_dir() or not (path / META_FILE).is_file():
            continue
        final = directory / final_name
        if os.path.lexists(final):
            continue
        try:
            path.rename(final)
        except OSError as exc:
            logger.warning("cannot restore the checkpoint %s as %s: %s", path, final, exc)
        else:
            logger.warning("restored the checkpoint %s, set aside by a re-save that was "
                           "interrupted, as %s", path.name, final)


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoint folders under ``directory``, oldest first.

    A checkpoint that an interrupted re-save had set aside, with no replacement in place, is
    renamed back first.
    """
    if not directory.is_dir():
        return []
    _restore_set_aside(directory)
    found = []
    for path in directory.iterdir():
        suffix = path.name[len(CHECKPOINT_PREFIX) :]
        if (
            path.name.startswith(CHECKPOINT_PREFIX)
            and suffix.isdigit()
            and (path / META_FILE).is_file()
        ):
            found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


def resolve_checkpoint(resume_from: str | Path, checkpoint_dir: str | None) -> Path:
    """``"latest"`` -> the newest checkpoint in ``checkpoint_dir``; a folder -> itself, or its
    newest checkpoint when it contains several."""
    if str(resume_from) == "latest":
        if checkpoint_dir is None:
            raise TrainingError("resume_from='latest' needs training.checkpoint_dir")
        found = list_checkpoints(Path(checkpoint_dir))
        if not found:
            raise TrainingError(f"no checkpoint to resume from in {checkpoint_dir}")
        return found[-1]
    path = Path(resume_from)
    if (path / META_FILE).is_file():
        return path
    found = list_checkpoints(path)
    if not found:
        raise TrainingError(f"{path} is not a checkpoint folder and contains none")
    return found[-1]


def load_checkpoint(
    path: Path,
    parameters: dict[str, Tensor],
    optimizer: torch.optim.Optimizer,
    fingerprint: str,
    run: dict[str, Any] | None = None,
) -> TrainingState:
    """Restore parameters (in place), optimizer and RNG states; return the training state.

    Args:
        run: What ``fingerprint`` was computed from, to name the options that differ from the
            checkpoint's.

    Raises:
        TrainingError: The checkpoint is unreadable, lacks an entry or has a malformed one
            (the message names the folder and the entry; nothing has been changed then), or
            belongs to a different run.
    """
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(path / STATE_FILE))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, SafetensorError,
            RecursionError) as exc:  # RecursionError: JSON nested too deeply
        raise TrainingError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(meta, dict):
        raise TrainingError(f"checkpoint {path}: {META_FILE} must hold a JSON object, "
                            f"not {type(meta).__name__}")
    if meta.get("fingerprint") != fingerprint:
        raise TrainingError(
            f"checkpoint {path} was written by a different run: "
            f"{describe_differences(meta.get('run'), run)}; resume with the same configuration, "
            "or start afresh"
        )
    # everything is checked before anything changes: a spoilt checkpoint leaves all as it was
    state = _check_meta(path, meta)
    optim_state = _check_optimizer_state(path, meta, tensors, optimizer)
    for name, value in parameters.items():
        key = f"param.{name}"
        if key not in tensors or tensors[key].shape != value.shape:
            raise TrainingError(f"checkpoint {path} has no matching tensor for parameter {name!r}")
    rng = tensors.get("rng.cpu")
    expected_rng = torch.get_rng_state()
    if rng is None:
        raise TrainingError(f"checkpoint {path} lacks the tensor 'rng.cpu' (the CPU random "
                            f"state) in {STATE_FILE}")
    if rng.dtype != expected_rng.dtype or rng.shape != expected_rng.shape:
        raise TrainingError(f"checkpoint {path}: the tensor 'rng.cpu' is not a CPU random state "
                            f"({rng.dtype}, shape {tuple(rng.shape)})")
    optimizer.load_state_dict(optim_state)
    for name, value in parameters.items():
        with torch.no_grad():
            value.copy_(tensors[f"param.{name}"])
    torch.set_rng_state(rng)
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    logger.info("resumed from %s (step %d)", path, state.global_step)
    return state


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_meta(path: Path, meta: dict[str, Any]) -> TrainingState:
    """The counters and records of ``state.json``, checked."""
    where = f"checkpoint {path}, {META_FILE}"
    for key in ("global_step", "epoch", "step_in_epoch"):
        if key not in meta:
            raise TrainingError(f"{where} lacks the entry {key!r}")
        if not _is_int(meta[key]) or meta[key] < 0:
            raise TrainingError(f"{where}: {key!r} must be an integer >= 0, got {meta[key]!r}")
    history = meta.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise TrainingError(f"{where}: 'history' must be a list of objects")
    losses = meta.get("epoch_losses", [])
    if not isinstance(losses, list) or not all(_is_number(v) for v in losses):
        raise TrainingError(f"{where}: 'epoch_losses' must be a list of numbers")
    name = meta.get("run_name")  # absent from checkpoints written before it was kept
    if name is not None:
        try:
            check_tracker_name(name)
        except ValueError as exc:
            raise TrainingError(f"{where}: 'run_name' {exc}") from None
    return TrainingState(
        global_step=meta["global_step"],
        epoch=meta["epoch"],
        step_in_epoch=meta["step_in_epoch"],
        history=history,
        epoch_losses=[float(v) for v in losses],
        run_name=name,
    )


def _state_entries(optimizer: torch.optim.Optimizer) -> set[str]:
    """The entries of a parameter's state after a step of an optimizer like ``optimizer``
    (``exp_avg``, ``exp_avg_sq``, ``step`` for AdamW), found by stepping a copy on a probe; empty
    when that is not possible (an optimizer that cannot be built from its ``defaults``)."""
    probe = torch.zeros(1, requires_grad=True)
    probe.grad = torch.ones(1)
    try:
        accepted = inspect.signature(type(optimizer)).parameters
        options = {k: v for k, v in optimizer.defaults.items() if k in accepted}
        twin = type(optimizer)([probe], **options)
        twin.step()
    except Exception:  # a custom optimizer: only the consistency of the entries is checked
        return set()
    return set(twin.state[probe])


def _check_optimizer_state(
    path: Path,
    meta: dict[str, Any],
    tensors: dict[str, Tensor],
    optimizer: torch.optim.Optimizer,
) -> dict[str, Any]:
    """The optimizer state dict of the checkpoint, checked against ``optimizer``."""
    where = f"checkpoint {path}, {META_FILE}"
    if "param_groups" not in meta:
        raise TrainingError(f"{where} lacks the entry 'param_groups' (the optimizer's settings)")
    groups = meta["param_groups"]
    current = optimizer.param_groups
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise TrainingError(f"{where}: 'param_groups' must be a list of objects")
    if len(groups) != len(current):
        raise TrainingError(f"{where}: 'param_groups' has {len(groups)} group(s); the optimizer "
                            f"has {len(current)}")
    ids: list[int] = []
    for n, (saved, group) in enumerate(zip(groups, current, strict=True)):
        params = saved.get("params")
        if (not isinstance(params, list) or not all(_is_int(i) for i in params)
                or len(params) != len(group["params"])):
            raise TrainingError(f"{where}: param_groups[{n}].params must list "
                                f"{len(group['params'])} parameter index(es)")
        ids.extend(params)
        for key, value in group.items():  # the numeric settings (lr, betas, eps, ...)
            if key == "params" or not (_is_number(value) or isinstance(value, (list, tuple))):
                continue
            if key not in saved:
                raise TrainingError(f"{where}: param_groups[{n}] lacks the entry {key!r}")
            if _is_number(value) != _is_number(saved[key]):
                raise TrainingError(f"{where}: param_groups[{n}].{key} is malformed: "
                                    f"{saved[key]!r}")
    shapes = dict(zip(ids, (p.shape for g in current for p in g["params"]), strict=True))
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if not key.startswith("optim."):
            continue
        parts = key.split(".", 2)
        if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) not in shapes:
            raise TrainingError(f"checkpoint {path}: the tensor {key!r} names no parameter of "
                                "the optimizer")
        index = int(parts[1])
        if value.numel() > 1 and value.shape != shapes[index]:
            raise TrainingError(f"checkpoint {path}: the tensor {key!r} has shape "
                                f"{tuple(value.shape)}, its parameter {tuple(shapes[index])}")
        state.setdefault(index, {})[parts[2]] = value
    scalars = meta.get("optimizer_scalars", {})
    if not isinstance(scalars, dict):
        raise TrainingError(f"{where}: 'optimizer_scalars' must be an object")
    for index, entries in scalars.items():
        if not index.isdigit() or int(index) not in shapes or not isinstance(entries, dict):
            raise TrainingError(f"{where}: optimizer_scalars[{index!r}] is malformed")
        state.setdefault(int(index), {}).update(entries)
    names = _state_entries(optimizer) or {name for entries in state.values() for name in entries}
    for index, entries in state.items():  # every parameter's state has the same entries
        if set(entries) != names:
            absent = sorted(names - set(entries))
            raise TrainingError(f"checkpoint {path} lacks the optimizer state {absent} of "
                                f"parameter {index} (tensors 'optim.{index}.<name>')")
    return {"state": state, "param_groups": groups}


#: Differences named in a refusal to resume; the rest are counted.
MAX_DIFFERENCES = 8


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    """``{"a": {"b": 1}, "labels": ["x"]}`` -> ``{"a.b": 1, "labels[0]": "x"}`` (lists of
    numbers, such as shapes, stay whole)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and not all(isinstance(v, (int, float)) for v in value):
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}[{index}]", out)
    else:
        out[prefix] = value


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def describe_differences(saved: Any, current: Any) -> str:
    """What differs between a checkpoint's run record and this run's, one ``option: old in the
    checkpoint, new now`` per option (``training.lr: 0.002 in the checkpoint, 0.01 now``)."""
    if not isinstance(saved, dict) or not isinstance(current, dict):
        return ("other labels, components or training options (the checkpoint does not record "
                "which: it was written by an older version)")
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    _flatten(saved, "", old)
    _flatten(current, "", new)
    missing = object()
    lines = []
    # the training options first: they are what a user changes
    for key in sorted(set(old) | set(new), key=lambda k: (not k.startswith("config."), k)):
        a, b = old.get(key, missing), new.get(key, missing)
        if a == b:
            continue
        was = "absent" if a is missing else _show(a)
        now = "absent" if b is missing else _show(b)
        name = "training." + key[len("config."):] if key.startswith("config.") else key
        lines.append(f"{name}: {was} in the checkpoint, {now} now")
    if not lines:
        return "the options are the same but the fingerprints differ (another version?)"
    shown = lines[:MAX_DIFFERENCES]
    more = len(lines) - len(shown)
    return "; ".join(shown) + (f"; and {more} more difference(s)" if more else "")
