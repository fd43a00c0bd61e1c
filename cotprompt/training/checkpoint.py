"""Training checkpoints: safetensors plus JSON (never pickle), written atomically.

A checkpoint folder ``checkpoint-<step>/`` holds ``state.safetensors`` (trainable parameters,
optimizer tensors, random-number-generator states) and ``state.json`` (counters, the losses of
the current epoch so far, optimizer hyper-parameters, a fingerprint of the run and what it was
computed from, so that a refused resume names the options that differ). The folder is written
under a temporary name and renamed, so an interrupted save leaves no partial checkpoint.
Re-saving a step sets the previous folder aside as ``.checkpoint-<step>.<random>.old`` until the
new one is in place; if the save is stopped in between, the old folder is renamed back (at once,
or by the next :func:`list_checkpoints` after a kill), so one of the two always survives.
"""

from __future__ import annotations

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
    """

    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)


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
        TrainingError: The checkpoint is unreadable or belongs to a different run.
    """
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(path / STATE_FILE))
    except (OSError, json.JSONDecodeError, SafetensorError) as exc:
        raise TrainingError(f"cannot read checkpoint {path}: {exc}") from exc
    if meta.get("fingerprint") != fingerprint:
        raise TrainingError(
            f"checkpoint {path} was written by a different run: "
            f"{describe_differences(meta.get('run'), run)}; resume with the same configuration, "
            "or start afresh"
        )
    for name, value in parameters.items():
        key = f"param.{name}"
        if key not in tensors or tensors[key].shape != value.shape:
            raise TrainingError(f"checkpoint {path} has no matching tensor for parameter {name!r}")
        with torch.no_grad():
            value.copy_(tensors[key])
    optim_state: dict[str, Any] = {"state": {}, "param_groups": meta["param_groups"]}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            optim_state["state"].setdefault(int(index), {})[name] = value
    for index, scalars in meta.get("optimizer_scalars", {}).items():
        optim_state["state"].setdefault(int(index), {}).update(scalars)
    optimizer.load_state_dict(optim_state)
    torch.set_rng_state(tensors["rng.cpu"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    logger.info("resumed from %s (step %d)", path, meta["global_step"])
    return TrainingState(
        global_step=meta["global_step"],
        epoch=meta["epoch"],
        step_in_epoch=meta["step_in_epoch"],
        history=meta.get("history", []),
        epoch_losses=[float(v) for v in meta.get("epoch_losses", [])],
    )


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
