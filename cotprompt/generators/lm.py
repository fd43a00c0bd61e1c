"""Generators ``lm`` and ``gpt2``: step texts written by a causal language model.

For every class and every step that has an ``instruction``, the language model continues the
filled instruction (for example ``"Q: What does a beagle look like?\\nA: It has"``)
``num_texts`` times; each continuation is cleaned up (first sentence, trimmed), filtered
(minimum length, optional class-name requirement, length budget in the backbone's tokens),
placed in the step's ``template`` (for example ``"{class}, which has {generated}."``) and
de-duplicated. The texts of one class and step are ensembled by the tuner.

The texts end up in the saved artifact (``chain`` in ``cotprompt_config.json``), so loading a
tuned pipeline never runs the language model. Raw continuations are cached in a JSON file keyed
by model, decoding parameters and class name (:mod:`cotprompt.generators.lm_cache`), so that a
second run does not even load it.

Needs the optional dependency ``transformers``: ``pip install ".[lm]"`` in a checkout, or
``pip install transformers``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from cotprompt.config import ComponentConfig, caller_only, machine_local
from cotprompt.errors import ConfigError
from cotprompt.generators.lm_cache import GenerationCache, default_cache_dir
from cotprompt.generators.lm_steps import LMStep, compose_texts, default_lm_steps
from cotprompt.generators.postprocess import (
    TokenBudget,
    fill,
    template_fields,
    zero_shot_texts,
)
from cotprompt.generators.rule_based import ZeroShotPreset
from cotprompt.types import PromptChain, PromptStep, Task

if TYPE_CHECKING:
    from cotprompt.backbones.base import Backbone
    from cotprompt.generators.lm_backend import DecodingParams, LoadedLM

logger = logging.getLogger(__name__)


def _progress_disabled() -> bool:
    """``TQDM_DISABLE`` as :func:`cotprompt.training.loop.progress_disabled` reads it (that
    module is a layer above the generators)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in {"1", "true", "yes", "on"}

INSTALL_HINT = 'pip install "transformers>=4.40" (the extra "lm")'

#: Version of the per-row seeding scheme; part of the cache key.
SEEDING_SCHEME = "gumbel-lowbias32-sha256-v1"


class LMGeneratorConfig(ComponentConfig):
    """Options of the ``lm`` generator.

    Args:
        model: A ``transformers`` causal LM: Hub id (``gpt2``, ``Qwen/Qwen2.5-0.5B``...) or a
            local folder.
        revision: Hub branch, tag or commit (pin it for reproducible texts).
        device: ``"auto"`` (CUDA when available, else CPU) or a torch device string.
        dtype: ``"auto"``: float32 on CPU, bfloat16 on CUDA when supported, else float16.
        trust_remote_code: Passed to ``from_pretrained`` (runs the model repository's code).
            Only the caller may set it, in code or with ``--trust-remote-code``; a loaded file
            never can, and it is not saved.
        allow_pickle: Load a model whose weights are pickle-based (``pytorch_model.bin``); by
            default only safetensors weights load. Caller-only, like ``trust_remote_code``.
        steps: The chain, coarse to fine (:func:`default_lm_steps`).
        num_texts: Continuations per class and step (greedy decoding makes one: the others
            would be identical).
        batch_size: Prompts decoded together (left padding, KV cache). Texts do not depend on
            it: ``batch_size=1`` gives the same texts one prompt at a time.
        do_sample: Sample (``temperature``, ``top_k``, ``top_p``) instead of greedy decoding.
        temperature: Sampling temperature.
        top_k: Sample among the k most likely tokens (0: no limit; slower).
        top_p: Nucleus sampling mass.
        max_new_tokens: Longest continuation, in the language model's tokens.
        repetition_penalty: ``transformers``' repetition penalty (1.0: none).
        no_repeat_ngram_size: Forbid repeating n-grams of this size (0: off).
        seed: Seed of the per-prompt sampling noise: sample i of a prompt uses the row seed
            ``sha256(seed, prompt, i)``, and the Gumbel noise of a candidate token is a hash
            of (row seed, position, token id), so texts are reproducible and depend neither on
            batching, nor on the other classes, nor on the device.
        stop_at_sentence_end: Stop decoding a prompt at its first line break or finished
            sentence (faster; post-processing keeps only the first sentence anyway).
        one_sentence: Keep only the first sentence of a continuation.
        min_words: Drop continuations with fewer words (at least 1).
        require_class_name: Drop texts in which the class name does not occur (useful with
            templates such as ``"{generated}."`` where the model writes the whole sentence).
        n_ctx_budget: Learnable context vectors the texts must leave room for: a step text may
            use ``context_length - 2 - n_ctx_budget`` backbone tokens (exact with the backbone's
            tokenizer when ``generate`` gets a backbone, else a conservative estimate).
        overlong: ``"trim"``: drop words from the end of the continuation until the text fits;
            ``"drop"``: drop the text.
        fallback_template: The text of a class and step whose continuations were all dropped
            (logged as a warning).
        cache: Keep raw continuations in a JSON cache file.
        cache_dir: Folder of cache files (default :func:`~cotprompt.generators.lm_cache.
            default_cache_dir`).
        progress: Show a progress bar over classes (on terminals).
        zero_shot_templates: Sentences of the untuned classifier, as for ``rule-based``.
        dataset: Dataset name for ``zero_shot_templates="dataset"``.
    """

    model: str = "gpt2"
    revision: str | None = None
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    trust_remote_code: bool = caller_only(False, description="run the model repository's code")
    allow_pickle: bool = caller_only(False, description="load pickle-based LM weights")
    steps: list[LMStep] = Field(default_factory=default_lm_steps, min_length=1)
    num_texts: int = Field(default=3, ge=1)
    batch_size: int = Field(default=32, ge=1)
    do_sample: bool = True
    temperature: float = Field(default=0.8, gt=0)
    top_k: int = Field(default=50, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_new_tokens: int = Field(default=24, ge=1)
    repetition_penalty: float = Field(default=1.0, gt=0)
    no_repeat_ngram_size: int = Field(default=0, ge=0)
    seed: int = 0
    stop_at_sentence_end: bool = True
    one_sentence: bool = True
    min_words: int = Field(default=1, ge=1)
    require_class_name: bool = False
    n_ctx_budget: int = Field(default=16, ge=0)
    overlong: Literal["trim", "drop"] = "trim"
    fallback_template: str = "{class}."
    cache: bool = True
    cache_dir: str | None = machine_local(None, description="folder of LM cache files")
    progress: bool = True
    zero_shot_templates: list[str] | ZeroShotPreset = "dataset"
    dataset: str | None = None

    @model_validator(mode="after")
    def _check(self) -> LMGeneratorConfig:
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"step names must be unique, got {names}")
        if template_fields(self.fallback_template) - {"class", "article"}:
            raise ValueError("fallback_template may only use {class} and {article}")
        return self


@dataclass
class GenerationStats:
    """What the last :meth:`LMGenerator.generate` call did.

    Attributes:
        continuations: Language-model continuations the chain needed.
        cached: Of those, how many came from the cache.
        generated: How many were generated.
        seconds: Time spent loading the model and generating.
        model_loaded: Whether the model was loaded.
        dropped: Dropped texts by reason (``too_short``, ``no_class_name``, ``too_long``,
            ``duplicate``).
        trimmed: Texts shortened to fit the length budget.
        fallbacks: ``(label, step)`` cells that got ``fallback_template``.
    """

    continuations: int = 0
    cached: int = 0
    generated: int = 0
    seconds: float = 0.0
    model_loaded: bool = False
    dropped: Counter[str] = field(default_factory=Counter)
    trimmed: int = 0
    fallbacks: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Row:
    label_index: int
    step_index: int
    prompt: str
    sample: int
    seed: int


def row_seed(seed: int, prompt: str, sample: int) -> int:
    """The seed of sample ``sample`` of ``prompt``: 63 bits of ``sha256(seed, prompt, sample)``."""
    digest = hashlib.sha256(f"{seed}\x00{prompt}\x00{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def transformers_available() -> bool:
    """Whether ``transformers`` can be imported."""
    return importlib.util.find_spec("transformers") is not None


class LMGenerator:
    """Prompt chains written by a ``transformers`` causal language model (default ``gpt2``).

    Building the generator loads nothing; the model is loaded on the first :meth:`generate`
    that needs texts not in the cache, and kept until :meth:`unload`.

    Raises:
        ConfigError: ``transformers`` is not installed (the message says how to install it).
    """

    name: ClassVar[str] = "lm"
    Config: ClassVar[type[LMGeneratorConfig]] = LMGeneratorConfig

    def __init__(self, config: LMGeneratorConfig | None = None) -> None:
        if not transformers_available():
            raise ConfigError(
                f"the {self.name!r} generator needs the `transformers` package: "
                f"{INSTALL_HINT}"
            )
        self.config = config or self.Config()
        self.stats = GenerationStats()
        self._lm: LoadedLM | None = None

    # -- model -------------------------------------------------------------------------------

    def _device(self) -> torch.device:
        if self.config.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.config.device)

    def _dtype(self) -> torch.dtype:
        name = self.config.dtype
        if name == "auto":
            device = self._device()
            if device.type == "cuda":
                return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.float32
        return getattr(torch, name)

    def _load(self) -> LoadedLM:
        if self._lm is None:
            from cotprompt.generators import lm_backend

            cfg = self.config
            logger.info("loading language model %s", cfg.model)
            self._lm = lm_backend.load_causal_lm(
                cfg.model, revision=cfg.revision, device=self._device(), dtype=self._dtype(),
                trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle,
            )
            self.stats.model_loaded = True
        return self._lm

    def unload(self) -> None:
        """Free the language model (it is reloaded when needed)."""
        self._lm = None

    def _decoding(self) -> DecodingParams:
        from cotprompt.generators.lm_backend import DecodingParams

        cfg = self.config
        return DecodingParams(
            max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample,
            temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
            repetition_penalty=cfg.repetition_penalty,
            no_repeat_ngram_size=cfg.no_repeat_ngram_size,
            stop_at_sentence_end=cfg.stop_at_sentence_end,
        )

    def cache_meta(self) -> dict[str, Any]:
        """Everything raw continuations depend on (names the cache file)."""
        cfg = self.config
        sampling = ({"temperature": cfg.temperature, "top_k": cfg.top_k, "top_p": cfg.top_p,
                     "seed": cfg.seed, "scheme": SEEDING_SCHEME} if cfg.do_sample else None)
        return {
            "model": cfg.model,
            "revision": cfg.revision,
            "dtype": str(self._dtype()).removeprefix("torch."),
            "do_sample": cfg.do_sample,
            "sampling": sampling,
            "max_new_tokens": cfg.max_new_tokens,
            "repetition_penalty": cfg.repetition_penalty,
            "no_repeat_ngram_size": cfg.no_repeat_ngram_size,
            "stop_at_sentence_end": cfg.stop_at_sentence_end,
        }

    # -- generation ---------------------------------------------------------------------------

    def _texts_per_step(self, step: LMStep) -> int:
        n = step.num_texts or self.config.num_texts
        return n if self.config.do_sample else 1

    def _rows(self, task: Task) -> list[_Row]:
        if not self.config.do_sample and any(
            (s.num_texts or self.config.num_texts) > 1 for s in self.config.steps
        ):
            logger.info("greedy decoding (do_sample=False) makes one text per class and step")
        rows = []
        for k, step in enumerate(self.config.steps):
            if step.instruction is None:
                continue
            for c, label in enumerate(task.labels):
                prompt = fill(step.instruction, label)
                for i in range(self._texts_per_step(step)):
                    rows.append(_Row(c, k, prompt, i, row_seed(self.config.seed, prompt, i)))
        return rows

    def _continuations(self, task: Task, rows: list[_Row]) -> list[str]:
        cfg = self.config
        cache = (GenerationCache(cfg.cache_dir or default_cache_dir(), self.cache_meta())
                 if cfg.cache else None)
        results: list[str | None] = [None] * len(rows)
        if cache is not None:
            for i, row in enumerate(rows):
                results[i] = cache.get(task.labels[row.label_index], row.prompt, row.sample)
        missing = [i for i, text in enumerate(results) if text is None]
        self.stats.continuations, self.stats.cached = len(rows), len(rows) - len(missing)
        remaining = Counter(rows[i].label_index for i in missing)
        logger.info(
            "lm generator (%s): %d classes, %d continuations, %d cached, %d to generate",
            cfg.model, task.num_labels, len(rows), len(rows) - len(missing), len(missing),
        )
        # disable=None: off where stderr is not a terminal; True: off (TQDM_DISABLE, as every
        # cotprompt bar: an explicit disable= hides tqdm's own reading of it)
        bar = tqdm(total=task.num_labels, desc=f"lm {cfg.model}", unit="class",
                   disable=None if cfg.progress and not _progress_disabled() else True)
        bar.update(task.num_labels - len(remaining))
        started = time.perf_counter()
        last_save = started
        try:
            if missing:
                from cotprompt.generators import lm_backend

                lm = self._load()

                def on_batch(indices: list[int], texts: list[str]) -> None:
                    nonlocal last_save
                    done = 0
                    for j, text in zip(indices, texts, strict=True):
                        row = rows[missing[j]]
                        results[missing[j]] = text
                        if cache is not None:
                            cache.put(task.labels[row.label_index], row.prompt, row.sample, text)
                        remaining[row.label_index] -= 1
                        done += remaining[row.label_index] == 0
                    bar.update(done)
                    if cache is not None and time.perf_counter() - last_save > 30:
                        cache.save()
                        last_save = time.perf_counter()

                lm_backend.generate_rows(
                    lm, [rows[i].prompt for i in missing], [rows[i].seed for i in missing],
                    self._decoding(), cfg.batch_size, on_batch,
                )
        finally:
            bar.close()
            if cache is not None:
                cache.save()
        self.stats.generated = len(missing)
        self.stats.seconds = time.perf_counter() - started
        if missing:
            logger.info("generated %d continuations in %.1f s", len(missing), self.stats.seconds)
        assert all(text is not None for text in results)
        return [text for text in results if text is not None]

    def _finish(self, label: str, step: LMStep, raws: list[str], budget: TokenBudget
                ) -> tuple[str, ...]:
        """Clean, filter, compose and de-duplicate the continuations of one class and step."""
        cfg, stats = self.config, self.stats
        composed = compose_texts(
            label, step, raws, budget, one_sentence=cfg.one_sentence, min_words=cfg.min_words,
            trim=cfg.overlong == "trim", require_class_name=cfg.require_class_name,
        )
        stats.dropped.update(composed.dropped)
        stats.trimmed += composed.trimmed
        if not composed.texts:
            stats.fallbacks.append((label, step.name))
            return (fill(cfg.fallback_template, label),)
        return composed.texts

    def generate(self, task: Task, backbone: Backbone | None = None) -> PromptChain:
        """Write the chain for ``task`` (texts from the cache where possible).

        Args:
            task: The labels.
            backbone: The backbone the prompts are for; its tokenizer measures the length
                budget (without it, a conservative estimate is used).

        Returns:
            A chain with ``len(steps)`` steps; :attr:`stats` describes what was done.
        """
        self.stats = GenerationStats()
        cfg = self.config
        budget = TokenBudget(backbone, cfg.n_ctx_budget)
        rows = self._rows(task)
        raws = self._continuations(task, rows) if rows else []
        by_cell: dict[tuple[int, int], list[str]] = {}
        for row, raw in zip(rows, raws, strict=True):
            by_cell.setdefault((row.step_index, row.label_index), []).append(raw)
        steps = []
        for k, step in enumerate(cfg.steps):
            per_label: list[tuple[str, ...]] = []
            for c, label in enumerate(task.labels):
                if step.instruction is None:
                    text = fill(step.template, label)
                    if not budget.fits(text):
                        logger.warning("step %r text %r is longer than the budget of %d tokens",
                                       step.name, text, budget.limit)
                    per_label.append((text,))
                else:
                    per_label.append(self._finish(label, step, by_cell[(k, c)], budget))
            steps.append(PromptStep(name=step.name, texts=tuple(per_label)))
        self._report(budget)
        zero_shot = zero_shot_texts(task, cfg.zero_shot_templates, cfg.dataset)
        return PromptChain(labels=task.labels, steps=tuple(steps), zero_shot=zero_shot)

    def _report(self, budget: TokenBudget) -> None:
        stats = self.stats
        dropped = {k: v for k, v in stats.dropped.items() if v}
        if dropped or stats.trimmed:
            logger.info("lm generator post-processing: dropped %s, trimmed %d to fit %d tokens",
                        dropped, stats.trimmed, budget.limit)
        if stats.fallbacks:
            shown = ", ".join(f"{label!r}/{step}" for label, step in stats.fallbacks[:5])
            logger.warning(
                "%d class/step cells kept no generated text and use fallback_template %r "
                "(%s%s); consider more num_texts, other sampling or other filters",
                len(stats.fallbacks), self.config.fallback_template, shown,
                ", ..." if len(stats.fallbacks) > 5 else "",
            )


class GPT2GeneratorConfig(LMGeneratorConfig):
    """Options of the ``gpt2`` generator: those of ``lm``, with ``model="gpt2"``."""

    model: str = "gpt2"


class GPT2Generator(LMGenerator):
    """Alias of ``lm`` whose default model is OpenAI's GPT-2 (124M) from the Hugging Face Hub."""

    name: ClassVar[str] = "gpt2"
    Config: ClassVar[type[LMGeneratorConfig]] = GPT2GeneratorConfig


__all__ = [
    "GPT2Generator",
    "GPT2GeneratorConfig",
    "GenerationStats",
    "LMGenerator",
    "LMGeneratorConfig",
    "LMStep",
    "default_lm_steps",
    "row_seed",
]
