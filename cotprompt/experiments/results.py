"""One run of a sweep and its ``results.json``: what was run (the :class:`RunSpec`) and what it
measured. The file is written atomically once the run is complete, so its presence means the run
is done (a killed sweep skips it when resumed).

``results.json`` (format 1)::

    {
      "format": 1,
      "run": {"protocol", "method", "dataset", "seed", "shots", "train_classes",
              "eval": [{"dataset", "classes"}, ...]},
      "method": {...},            # the method's resolved components and training options
      "train_images": [...],      # paths relative to $DATA, in training order (empty: zero-shot)
      "metrics": {"<dataset>/<classes>": {"accuracy", "mean_per_class_accuracy", "num_images"}},
      "seconds": {"train", "eval", "total"},
      "versions": {"cotprompt", "torch", "open_clip", "python"},
      "backbone": {"model_name", "pretrained"},
      "fingerprint": "..."        # what else decides the numbers (see RunResult.fingerprint)
    }
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from cotprompt.errors import DataError
from cotprompt.io import write_text_atomic

FORMAT = 1
RESULTS_NAME = "results.json"

Classes = Literal["all", "base", "new"]


@dataclass(frozen=True)
class EvalTarget:
    """One evaluation of a run: a dataset's test split, on all, base or new classes."""

    dataset: str
    classes: Classes = "all"

    @property
    def key(self) -> str:
        """The key of its metrics in ``results.json`` (``"caltech101/new"``)."""
        return f"{self.dataset}/{self.classes}"


_SAFE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def path_part(name: str) -> str:
    """``name`` as one safe folder name (letters, digits, ``.``, ``_``, ``-``; no ``..``).

    A name that is one already (``caltech101``, ``coop_ctxv1``) is kept; any other (a user's
    dataset ``folder:PATH``, ``csv:PATH``, ``split:PATH;image_root=DIR``) becomes
    ``<kind>-<slug>-<8 hex of sha256(name)>``: different names give different folders.
    """
    if _SAFE_PART.fullmatch(name) and ".." not in name:
        return name
    kind, colon, rest = name.partition(":")
    parts = [kind, rest] if colon else [name]
    slugs = []
    for part in parts:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", part)
        slug = re.sub(r"\.{2,}", ".", re.sub(r"[-.]*-[-.]*", "-", slug))
        slugs.append(slug.strip("-.")[:40].strip("-."))
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return "-".join([*(s for s in slugs if s), digest])


@dataclass(frozen=True)
class RunSpec:
    """What one run trains and evaluates.

    Attributes:
        protocol: ``base2new``, ``cross_dataset``, ``domain_generalization`` or ``few_shot``.
        method: Method name (a preset such as ``coop`` or a user's method file's name).
        dataset: The training dataset (for zero-shot: the dataset whose classes are bound).
        seed: The run's seed (few-shot sampling, initialisation, training).
        shots: Images per class for training (K).
        train_classes: ``all`` or ``base`` (base-to-new).
        eval: Where it is evaluated.
    """

    protocol: str
    method: str
    dataset: str
    seed: int
    shots: int
    train_classes: Classes = "all"
    eval: tuple[EvalTarget, ...] = ()

    @property
    def run_id(self) -> str:
        """The run's folder under the sweep's output (stable across sweeps): four path parts,
        each a :func:`path_part` (a user's dataset name such as ``folder:a/../b`` becomes
        ``folder-a-b-<8 hex>``, inside the output; ``run.dataset`` keeps the real name)."""
        return (f"{path_part(self.protocol)}/{path_part(self.dataset)}/{path_part(self.method)}"
                f"/shots{self.shots}_seed{self.seed}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["eval"] = [asdict(t) for t in self.eval]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        return cls(**{**data, "eval": tuple(EvalTarget(**t) for t in data.get("eval", ()))})


@dataclass
class RunResult:
    """A finished run (the contents of its ``results.json``).

    ``fingerprint`` identifies everything besides the :class:`RunSpec` that decides its numbers
    (the method's resolved components and training options, the backbone, how features were
    shared): a sweep refuses to skip a finished run whose fingerprint differs from the one it
    would run, and a report refuses to average runs of different fingerprints.
    """

    run: RunSpec
    method: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    train_images: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    backbone: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "run": self.run.to_dict(), "method": self.method,
                "train_images": self.train_images, "metrics": self.metrics,
                "seconds": self.seconds, "versions": self.versions, "backbone": self.backbone,
                "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "results") -> RunResult:
        """Raises:
            DataError: Another format, or missing entries (naming ``source``).
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError(f"{source}: not a cotprompt results file of format {FORMAT}")
        try:
            return cls(run=RunSpec.from_dict(data["run"]), method=dict(data["method"]),
                       metrics={k: dict(v) for k, v in data["metrics"].items()},
                       train_images=list(data.get("train_images", [])),
                       seconds=dict(data.get("seconds", {})),
                       versions=dict(data.get("versions", {})),
                       backbone=dict(data.get("backbone", {})),
                       fingerprint=str(data.get("fingerprint", "")))
        except (KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{source}: malformed results ({exc})") from exc


def write_result(folder: Path, result: RunResult) -> Path:
    """Write ``folder/results.json`` atomically (the run's completion marker); returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RESULTS_NAME
    write_text_atomic(path, json.dumps(result.to_dict(), indent=2, sort_keys=False) + "\n")
    return path


def read_result(path: Path) -> RunResult:
    """Read one ``results.json``.

    Raises:
        DataError: Unreadable, not JSON, or not a results file (naming the file).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return RunResult.from_dict(data, source=str(path))


def find_results(output: Path) -> list[RunResult]:
    """Every finished run under a sweep's output folder (shards merged), sorted by run id."""
    results = [read_result(p) for p in sorted(Path(output).rglob(RESULTS_NAME))]
    return sorted(results, key=lambda r: r.run.run_id)


def library_versions() -> dict[str, str]:
    """The versions a result records (what a comparison needs)."""
    import open_clip
    import torch

    from cotprompt._version import __version__

    return {"cotprompt": __version__, "torch": torch.__version__,
            "open_clip": getattr(open_clip, "__version__", "?"),
            "python": platform.python_version()}
