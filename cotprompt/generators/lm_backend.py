"""The ``transformers`` side of the ``lm`` generator: loading a causal LM and batched decoding.

This module imports ``transformers`` at import time; :mod:`cotprompt.generators.lm` imports it
only when texts actually have to be generated, so that ``import cotprompt`` never does.

Batched generation equals one-by-one generation
-----------------------------------------------
Prompts are left-padded (with an attention mask, so padding is invisible to the model and the
positions of real tokens are unchanged) and decoded with the KV cache. Every decision that picks
a token is made per row:

* greedy decoding (``do_sample=False``) takes the row's arg-max;
* sampling (``do_sample=True``) is done by :class:`SeededSampler` with the *Gumbel-max trick*:
  the row's scores are divided by the temperature, restricted to the top-k and then to the
  top-p nucleus, and the token is the arg-max of those scores plus Gumbel noise. The noise of
  a candidate is a hash of (row seed, step, token id) (:func:`keyed_uniform`; the row seed
  comes from the generator seed, the prompt and the sample index). The arg-max of
  ``scores + Gumbel`` is an exact sample from ``softmax(scores)``; since the noise depends
  only on the row (and is the same on every device), a prompt gets the same text whatever
  batch it is in, even when near-equal scores swap ranks under rounding;
* stopping (end-of-sequence token, :class:`SentenceStop`) is decided per row.

So batch composition can only matter through floating-point rounding in the model's batched
matrix products, which would have to flip an arg-max between two scores equal to within
rounding error; the tests check batched and one-by-one outputs for equality.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import transformers
from packaging.version import Version
from torch import Tensor
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from cotprompt.errors import ConfigError
from cotprompt.generators.postprocess import ends_sentence

logger = logging.getLogger(__name__)

_DTYPE_KWARG = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


@dataclass
class LoadedLM:
    """A causal language model with its tokenizer, ready for left-padded batched decoding."""

    model: Any
    tokenizer: Any
    device: torch.device
    eos_token_ids: list[int]
    pad_token_id: int


@dataclass(frozen=True)
class DecodingParams:
    """Decoding options (see :class:`cotprompt.generators.lm.LMGeneratorConfig`)."""

    max_new_tokens: int
    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    no_repeat_ngram_size: int
    stop_at_sentence_end: bool


def load_causal_lm(
    model: str,
    *,
    revision: str | None,
    device: torch.device,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> LoadedLM:
    """Load a ``transformers`` causal LM and its tokenizer by hub id or local path.

    Raises:
        ConfigError: The model or tokenizer cannot be loaded, or is not a causal LM.
    """
    started = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model, revision=revision, trust_remote_code=trust_remote_code
        )
        lm = AutoModelForCausalLM.from_pretrained(
            model,
            revision=revision,
            trust_remote_code=trust_remote_code,
            # None lets transformers fall back to pickle-based weights; True refuses them
            use_safetensors=None if allow_pickle else True,
            **{_DTYPE_KWARG: dtype},
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"could not load the causal language model {model!r} (revision {revision!r}): "
            f"{exc}. Give a Hugging Face Hub id that is reachable, or a local folder with the "
            "model and tokenizer files (save_pretrained output); only safetensors weights load "
            "unless the caller sets allow_pickle=True."
        ) from exc
    if getattr(lm.config, "is_encoder_decoder", False):
        raise ConfigError(f"{model!r} is an encoder-decoder model; the lm generator needs a "
                          "decoder-only (causal) language model")
    lm = lm.to(device).eval().requires_grad_(False)  # type: ignore[arg-type]
    eos = lm.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    eos_ids = [int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
    pad = tokenizer.pad_token_id
    if pad is None:
        if not eos_ids:
            raise ConfigError(f"{model!r} has neither a padding nor an end-of-sequence token")
        pad = eos_ids[0]
        tokenizer.pad_token_id = pad
    tokenizer.padding_side = "left"
    logger.info("loaded %s (%s, %s) in %.1f s", model, device, dtype,
                time.perf_counter() - started)
    return LoadedLM(model=lm, tokenizer=tokenizer, device=device, eos_token_ids=eos_ids,
                    pad_token_id=int(pad))


_MASK32 = 0xFFFFFFFF


def _mulmod32(x: Tensor, constant: int) -> Tensor:
    """``x * constant mod 2**32`` for int64 ``x`` in ``[0, 2**32)``, without int64 overflow."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def _mix32(x: Tensor) -> Tensor:
    """A 32-bit integer hash with full avalanche (Wellons' "lowbias32"), on int64 tensors."""
    x = x ^ (x >> 16)
    x = _mulmod32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mulmod32(x, 0x846CA68B)
    return x ^ (x >> 16)


def keyed_uniform(seeds: Tensor, step: int, tokens: Tensor) -> Tensor:
    """Uniform numbers in ``(0, 1)`` that are a pure function of (seed, step, token id).

    Args:
        seeds: ``[B, 1]`` int64 row seeds (63 bits).
        step: Index of the token being generated (0 for the first new token).
        tokens: ``[B, k]`` int64 token ids.

    Returns:
        ``[B, k]`` float32, on the device of ``tokens``; identical on every device, since only
        exact integer arithmetic is involved.
    """
    h = _mix32((seeds & _MASK32) ^ _mix32((seeds >> 32) & _MASK32))
    h = _mix32(h ^ (step & _MASK32))
    h = _mix32(h ^ (tokens & _MASK32))
    # (2 * 23 bits + 1) / 2**24: exact in float32, never 0 or 1
    return ((h >> 9) * 2 + 1).float() / float(1 << 24)


class SeededSampler(LogitsProcessor):
    """Temperature, top-k and top-p sampling with per-row, per-token noise (Gumbel-max).

    The token of a row is the arg-max of its tempered, truncated scores plus Gumbel noise
    ``-log(-log(u))``, where ``u = keyed_uniform(row seed, step, token id)``: the noise of a
    candidate token depends only on the row's seed, the position and the token id, never on
    the batch, the device or the order in which candidates are ranked (so near-equal scores
    that swap ranks under rounding do not change the draw). Returns scores that are 0 at the
    sampled token and ``-inf`` elsewhere, so that greedy decoding picks exactly that token.

    Args:
        seeds: One seed per batch row.
        temperature: Scores are divided by it.
        top_k: Keep the k highest scores (0: all).
        top_p: Keep the smallest set of top tokens whose probability reaches ``top_p``.
        prompt_length: Length of the (padded) prompts: the step index is the number of tokens
            generated so far.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_k: int, top_p: float,
                 prompt_length: int) -> None:
        self.seeds = torch.tensor([int(s) for s in seeds], dtype=torch.int64)[:, None]
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.prompt_length = prompt_length

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        """Sample one token per row; ``scores`` is ``[B, V]``."""
        batch, vocab = scores.shape
        if batch != self.seeds.shape[0]:
            raise RuntimeError(f"SeededSampler got {batch} rows for {self.seeds.shape[0]} seeds")
        scaled = scores.float() / self.temperature
        if 0 < self.top_k < vocab:
            values, index = scaled.topk(self.top_k, dim=-1)
        elif self.top_p < 1.0:
            values, index = scaled.sort(dim=-1, descending=True)
        else:
            values = scaled
            index = torch.arange(vocab, device=scores.device).expand(batch, vocab)
        if self.top_p < 1.0:  # values are sorted, highest first
            probs = values.softmax(dim=-1)
            before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above
            values = values.masked_fill(before >= self.top_p, float("-inf"))
        step = input_ids.shape[1] - self.prompt_length
        u = keyed_uniform(self.seeds.to(index.device), step, index)
        choice = (values - torch.log(-torch.log(u))).argmax(dim=-1, keepdim=True)
        token = index.gather(-1, choice)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, token, 0.0)


class SentenceStop(StoppingCriteria):
    """Stops a row once its continuation has a line break or a finished sentence."""

    def __init__(self, tokenizer: Any, prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length

    def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs: Any) -> Tensor:
        """A ``[B]`` bool tensor, True for rows that are done."""
        new = input_ids[:, self.prompt_length :].tolist()
        done = [ends_sentence(self.tokenizer.decode(row, skip_special_tokens=True))
                for row in new]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def generate_batch(lm: LoadedLM, prompts: Sequence[str], seeds: Sequence[int],
                   params: DecodingParams) -> list[str]:
    """Continuations of ``prompts`` (one batch, left-padded), as decoded text."""
    enc = lm.tokenizer(list(prompts), return_tensors="pt", padding=True)
    input_ids = enc["input_ids"].to(lm.device)
    attention_mask = enc["attention_mask"].to(lm.device)
    length = input_ids.shape[1]
    config = GenerationConfig(
        max_new_tokens=params.max_new_tokens,
        do_sample=False,  # sampling, when asked for, is done by SeededSampler (per row)
        num_beams=1,
        repetition_penalty=params.repetition_penalty,
        no_repeat_ngram_size=params.no_repeat_ngram_size,
        pad_token_id=lm.pad_token_id,
        eos_token_id=lm.eos_token_ids or None,
        use_cache=True,
    )
    processors = LogitsProcessorList()
    if params.do_sample:
        processors.append(SeededSampler(seeds, params.temperature, params.top_k, params.top_p,
                                        prompt_length=length))
    stopping = StoppingCriteriaList()
    if params.stop_at_sentence_end:
        stopping.append(SentenceStop(lm.tokenizer, length))
    with torch.inference_mode():
        output = lm.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=config,
            logits_processor=processors,
            stopping_criteria=stopping,
        )
    return [lm.tokenizer.decode(row, skip_special_tokens=True)
            for row in output[:, length:].tolist()]


def generate_rows(
    lm: LoadedLM,
    prompts: Sequence[str],
    seeds: Sequence[int],
    params: DecodingParams,
    batch_size: int,
    on_batch: Callable[[list[int], list[str]], None],
) -> None:
    """Generate every prompt, ``batch_size`` at a time, calling ``on_batch(indices, texts)``.

    Prompts are grouped by token length (less padding); results do not depend on the grouping.
    """
    lengths = [len(ids) for ids in lm.tokenizer(list(prompts))["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        texts = generate_batch(lm, [prompts[i] for i in chunk], [seeds[i] for i in chunk], params)
        on_batch(chunk, texts)
