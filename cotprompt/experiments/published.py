"""Published reference numbers, shown beside a sweep's measured ones (never mixed with them).

Only numbers read in a source are listed, each with where it was read (a repository file at a
commit). None of them is a number cotprompt measured; the report prints them in rows of their own,
marked *published* with a footnote to their :class:`Source`.

The CoOp of these tables is the CoOp baseline of CoCoOp's paper: CoOp with 4 context vectors
initialised from "a photo of a" (CoOp's ``vit_b16_ctxv1`` config, the one
``scripts/cocoop/base2new_train.sh`` trains), which is cotprompt's preset ``coop_ctxv1``, not
``coop`` (16 vectors drawn at random, CoOp's own paper); its rows are attributed to
``coop_ctxv1``.

What is here (CLIP ViT-B/16, the backbone of these papers' main tables; the base-to-new source
states an average over 3 seeds):

- base-to-new, average over the 11 datasets: Base, New, H of zero-shot CLIP, CoOp and CoCoOp
  (the CoCoOp paper's baselines, Zhou et al., CVPR 2022, arXiv 2203.05557);
- cross-dataset transfer (trained on ImageNet): CoOp's and CoCoOp's ImageNet (source) accuracy
  and all three methods' average over the 10 target datasets;
- domain generalisation (trained on ImageNet): the three methods' average.

Not here, because no source that could be read gave them: per-dataset base-to-new rows,
per-target cross-dataset and domain-generalisation accuracies, zero-shot CLIP's ImageNet accuracy
in the transfer tables, few-shot curves (CoOp's paper shows them as figures) and anything of
CoT-PT.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["PUBLISHED", "SOURCES", "PublishedResult", "Source", "published_for"]


@dataclass(frozen=True)
class Source:
    """Where published numbers come from.

    Attributes:
        key: Short identifier (``"maple-readme"``).
        origin: The paper whose experiment produced the numbers, and its table, as the source
            attributes them.
        read_at: The file the numbers were read from (repository, path and commit).
        also_at: Other files that list the same numbers (read too; they agree).
        note: What the source leaves open.
    """

    key: str
    origin: str
    read_at: str
    also_at: tuple[str, ...] = ()
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        """A JSON-serialisable dictionary of the fields."""
        return {"key": self.key, "origin": self.origin, "read_at": self.read_at,
                "also_at": list(self.also_at), "note": self.note}


@dataclass(frozen=True)
class PublishedResult:
    """Published numbers of one method under one protocol.

    Attributes:
        protocol: ``base2new``, ``cross_dataset`` or ``domain_generalization``.
        method: cotprompt's name of the method whose measured rows the numbers compare with
            (``clip`` for zero-shot CLIP, ``coop_ctxv1`` for CoCoOp's CoOp baseline,
            ``cocoop``).
        label: The method's name in the papers (``"CoCoOp"``).
        values: Column -> accuracy in percent. ``base``, ``new``, ``h`` (base-to-new, over the
            11 datasets); ``source`` (ImageNet, what the model was trained on) and ``average``
            (over the target datasets) in the transfer tables.
        scope: What the numbers cover (``"average over 11 datasets"``).
        source: Where they come from.
        backbone: The CLIP image encoder of the experiment.
        source_dataset: The training dataset of the transfer protocols (``imagenet``).
        detail: What the label leaves out, shown after "published" (``"CoCoOp's ctxv1
            baseline"``).
    """

    protocol: str
    method: str
    label: str
    values: Mapping[str, float]
    scope: str
    source: Source
    backbone: str = "ViT-B/16"
    source_dataset: str | None = None
    detail: str = ""

    @property
    def display(self) -> str:
        """The row's label in a table (``"CoOp (published, CoCoOp's ctxv1 baseline)"``)."""
        return f"{self.label} (published{', ' + self.detail if self.detail else ''})"

    def to_dict(self) -> dict[str, object]:
        """A JSON-serialisable dictionary (the source by its key)."""
        return {"protocol": self.protocol, "method": self.method, "label": self.label,
                "detail": self.detail, "values": dict(self.values), "scope": self.scope,
                "source": self.source.key, "backbone": self.backbone,
                "source_dataset": self.source_dataset}


def _github(repo: str, commit: str, path: str) -> str:
    return f"https://github.com/{repo}/blob/{commit}/{path}"


_MAPLE = _github("muzairkhattak/multimodal-prompt-learning",
                 "0d62419f24cb8e65b43adfb0611f1a53620e7214", "README.md")
_PROMPTSRC = _github("muzairkhattak/PromptSRC", "1680500addc9ad1c04b4c282a4dde1daa83752cc",
                     "README.md")
_MMA = _github("ZjjConan/Multi-Modal-Adapter", "358dc90c97d41028a155c6eec48814a4eda04d6c",
               "README.md")
_LWEIB = _github("ZjjConan/VLM-LwEIB", "467f48ef5d876c45e4ecdca193315d8c66c44381", "README.md")
_MMAPP = _github("ZjjConan/VLM-MMApp", "55adadfe446b727d47bd21ef7391be0474d7b23e", "README.md")
_FUSEPROMPT = _github("muhammad-bilal-01/FusePrompt", "395abec7b72265c890c1140c7168a6e9ffb06dcf",
                      "README.md")

#: The sources, by key.
SOURCES: Mapping[str, Source] = MappingProxyType({s.key: s for s in (
    Source(
        key="cocoop-table1-avg",
        origin=("CoCoOp: Zhou et al., Conditional Prompt Learning for Vision-Language Models, "
                "CVPR 2022 (arXiv 2203.05557), base-to-new Table 1, average over 11 datasets"),
        read_at=f"{_MAPLE} (results table 'MaPLe in comparison with existing methods')",
        also_at=(_PROMPTSRC, _MMA),
        note=("read in the MaPLe README, which links each row to its paper and states: "
              "averaged over 11 datasets and 3 seeds; the CoCoOp paper itself was not read. "
              "H is the harmonic mean of the average Base and average New accuracies "
              "(2*69.34*74.22/(69.34+74.22) = 71.70)"),
    ),
    Source(
        key="xd-fuseprompt",
        origin=("CoCoOp (CVPR 2022) cross-dataset transfer (its Table 2 by the CoOp "
                "repository's COCOOP.md): CoOp and CoCoOp trained on ImageNet, 16 shots"),
        read_at=f"{_FUSEPROMPT} (table 'Cross-Dataset Evaluation')",
        also_at=(_LWEIB, _MMAPP),
        note=("a later paper's README quoting the baselines; the target averages (63.88, "
              "65.74) are also in the LwEIB and MMA++ READMEs; the CoCoOp paper itself was "
              "not read"),
    ),
    Source(
        key="xd-dg-lweib",
        origin=("Baselines of later papers' cross-dataset and domain-generalisation tables "
                "(CLIP, CoOp, CoCoOp trained on ImageNet, ViT-B/16)"),
        read_at=f"{_LWEIB} (table 'All Results over Three Benchmarks')",
        also_at=(_MMAPP,),
        note=("the README gives one average per benchmark; it does not say which datasets its "
              "domain-generalisation average covers (in the papers of this line it is the four "
              "ImageNet variants, not confirmed here)"),
    ),
)})

_B2N = SOURCES["cocoop-table1-avg"]
_XD = SOURCES["xd-fuseprompt"]
_LW = SOURCES["xd-dg-lweib"]
_AVG11 = "average over 11 datasets"
_XD_SCOPE = "ImageNet (source) and average over 10 target datasets"
_DG_SCOPE = "average over the target datasets, as the source lists it"
#: CoCoOp's CoOp baseline (scripts/cocoop/base2new_train.sh: CFG=vit_b16_ctxv1 for CoOp).
_COOP = "coop_ctxv1"
_COOP_DETAIL = "CoCoOp's ctxv1 baseline"

#: Every published number cotprompt shows (none for few-shot curves or CoT-PT).
PUBLISHED: tuple[PublishedResult, ...] = (
    PublishedResult("base2new", "clip", "CLIP", MappingProxyType(
        {"base": 69.34, "new": 74.22, "h": 71.70}), _AVG11, _B2N),
    PublishedResult("base2new", _COOP, "CoOp", MappingProxyType(
        {"base": 82.69, "new": 63.22, "h": 71.66}), _AVG11, _B2N, detail=_COOP_DETAIL),
    PublishedResult("base2new", "cocoop", "CoCoOp", MappingProxyType(
        {"base": 80.47, "new": 71.69, "h": 75.83}), _AVG11, _B2N),
    PublishedResult("cross_dataset", "clip", "CLIP", MappingProxyType({"average": 65.15}),
                    "average over 10 target datasets", _LW, source_dataset="imagenet"),
    PublishedResult("cross_dataset", _COOP, "CoOp", MappingProxyType(
        {"source": 71.51, "average": 63.88}), _XD_SCOPE, _XD,
        source_dataset="imagenet", detail=_COOP_DETAIL),
    PublishedResult("cross_dataset", "cocoop", "CoCoOp", MappingProxyType(
        {"source": 71.02, "average": 65.74}), _XD_SCOPE, _XD,
        source_dataset="imagenet"),
    PublishedResult("domain_generalization", "clip", "CLIP", MappingProxyType(
        {"average": 57.18}), _DG_SCOPE, _LW, source_dataset="imagenet"),
    PublishedResult("domain_generalization", _COOP, "CoOp", MappingProxyType(
        {"average": 59.28}), _DG_SCOPE, _LW, source_dataset="imagenet",
        detail=_COOP_DETAIL),
    PublishedResult("domain_generalization", "cocoop", "CoCoOp", MappingProxyType(
        {"average": 59.91}), _DG_SCOPE, _LW, source_dataset="imagenet"),
)


def published_for(protocol: str, source_dataset: str | None = None) -> list[PublishedResult]:
    """The published numbers of a protocol (for the transfer protocols: of models trained on
    ``source_dataset``; other sources have none)."""
    return [p for p in PUBLISHED if p.protocol == protocol
            and (p.source_dataset is None or p.source_dataset == source_dataset)]
