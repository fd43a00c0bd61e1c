"""What the learned context means (``cotprompt.pipeline.interpret``, ``cotprompt interpret``):
the nearest tokens of the tiny backbone's real CLIP vocabulary to each context vector, the
context shifted by an image's meta-net output, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cotprompt.backbones import OpenCLIPBackbone
from cotprompt.cli.app import main
from cotprompt.errors import ConfigError, DataError
from cotprompt.pipeline import CoTPipeline, learned_context, nearest_words

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["cat", "dog"]


def token_ids(backbone: OpenCLIPBackbone, words: str) -> list[int]:
    """The ids of ``words`` (one BPE token each), without the start and end tokens."""
    tokens = backbone.tokenize([words])[0]
    end = int(backbone.end_of_text_index(tokens[None])[0])
    return tokens[1:end].tolist()


def embeddings(backbone: OpenCLIPBackbone, words: str) -> torch.Tensor:
    """``[n, W]`` token embeddings of ``words``."""
    ids = torch.tensor([token_ids(backbone, words)])
    return backbone.embed_tokens(ids)[0].float().detach()


def set_context(pipeline: CoTPipeline, step: int, value: torch.Tensor) -> None:
    with torch.no_grad():
        pipeline.tuner.ctx[step].copy_(value)


def red_image() -> Image.Image:
    return Image.new("RGB", (40, 40), (220, 30, 20))


@pytest.fixture(scope="module")
def coop(tiny_backbone: OpenCLIPBackbone) -> CoTPipeline:
    """coop with its two context vectors set to the embeddings of "dog" and "photo"."""
    pipeline = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES,
                                      tuner_config={"n_ctx": 2}, device="cpu")
    set_context(pipeline, 0, embeddings(tiny_backbone, "dog photo"))
    return pipeline


@pytest.fixture(scope="module")
def cotpt(tiny_backbone: OpenCLIPBackbone) -> CoTPipeline:
    """cotpt (three steps) with each step's context set to other words and chained meta-nets."""
    pipeline = CoTPipeline.for_method("cotpt", backbone=tiny_backbone, class_names=CLASSES,
                                      device="cpu")
    for step, words in enumerate(["a photo of a", "a drawing of the", "one picture with my"]):
        set_context(pipeline, step, embeddings(tiny_backbone, words))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # the links start at zero: make the chaining matter
        for link in pipeline.tuner.chain_links:
            link.proj.weight.copy_(torch.randn(link.proj.weight.shape, generator=generator))
    return pipeline


# -- nearest words ----------------------------------------------------------------------------


def test_context_set_to_token_embeddings_finds_those_words_at_distance_zero(
        coop: CoTPipeline) -> None:
    result = nearest_words(coop, top_k=3)
    assert result.tuner == "coop" and result.metric == "euclidean" and result.image is None
    assert result.vocabulary_size == 49408
    (step,) = result.steps
    assert [c.position for c in step.contexts] == [0, 1]
    assert result.words() == ["dog</w>", "photo</w>"]
    dog, photo = (c.nearest[0] for c in step.contexts)
    assert dog.token_id == token_ids(coop.backbone, "dog")[0]
    assert photo.token_id == token_ids(coop.backbone, "photo")[0]
    assert dog.distance < 1e-6 and photo.distance < 1e-6
    assert all(c.nearest[1].distance > 1e-3 for c in step.contexts)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("top_k", [1, 7])
def test_nearest_tokens_are_the_k_smallest_distances_in_order(
        coop: CoTPipeline, metric: str, top_k: int) -> None:
    with torch.no_grad():  # a vector that is no token's embedding
        coop.tuner.ctx[0][1].add_(0.05 * torch.randn(coop.tuner.ctx[0].shape[-1]))
    try:
        result = nearest_words(coop, top_k=top_k, metric=metric)  # type: ignore[arg-type]
        table = coop.backbone.text.token_embedding.weight.detach().float()
        for context, vector in zip(result.steps[0].contexts, coop.tuner.ctx[0].detach(),
                                   strict=True):
            if metric == "euclidean":
                by_hand = (table - vector).norm(dim=-1)
            else:
                by_hand = 1 - F.cosine_similarity(table, vector[None], dim=-1)
            distances = [t.distance for t in context.nearest]
            assert len(context.nearest) == top_k
            assert distances == sorted(distances)
            expected = by_hand.topk(top_k, largest=False)
            assert torch.allclose(torch.tensor(distances), expected.values, atol=1e-5)
            assert distances[-1] <= float(by_hand.sort().values[top_k]) + 1e-6
    finally:
        set_context(coop, 0, embeddings(coop.backbone, "dog photo"))


def test_class_specific_context_is_interpreted_per_label(tiny_backbone: OpenCLIPBackbone) -> None:
    pipeline = CoTPipeline.for_method("coop", backbone=tiny_backbone, class_names=CLASSES,
                                      tuner_config={"n_ctx": 2, "class_specific": True},
                                      device="cpu")
    set_context(pipeline, 0, torch.stack([embeddings(tiny_backbone, "furry kitten"),
                                          embeddings(tiny_backbone, "loyal puppy")]))
    result = nearest_words(pipeline, top_k=2)
    keys = [(c.position, c.label) for c in result.steps[0].contexts]
    assert keys == [(0, "cat"), (0, "dog"), (1, "cat"), (1, "dog")]
    assert result.words(label="cat") == ["furry</w>", "kitten</w>"]
    assert result.words(label="dog") == ["loyal</w>", "puppy</w>"]


def test_every_chain_step_of_cotpt_is_interpreted(cotpt: CoTPipeline) -> None:
    result = nearest_words(cotpt, top_k=2)
    assert cotpt.chain is not None and len(result.steps) == 3
    assert [s.name for s in result.steps] == [s.name for s in cotpt.chain.steps]
    assert [s.index for s in result.steps] == [0, 1, 2]
    assert result.words(0) == ["a</w>", "photo</w>", "of</w>", "a</w>"]
    assert result.words(1) == ["a</w>", "drawing</w>", "of</w>", "the</w>"]
    assert result.words(2) == ["one</w>", "picture</w>", "with</w>", "my</w>"]


# -- the context shifted by an image ----------------------------------------------------------


def shifted_by_hand(pipeline: CoTPipeline, image: Image.Image) -> list[torch.Tensor]:
    """ctx_k + meta_net_k(x_k), x_0 = x and x_k = x + P_k shift_{k-1} (additive chaining)."""
    backbone, tuner = pipeline.backbone, pipeline.tuner
    pixels = backbone.image_transform(train=False)(image)[None]
    with torch.no_grad():
        x = F.normalize(backbone.encode_images(pixels).float(), dim=-1)[0]
        shifts = []
        for k, net in enumerate(tuner.meta_nets):
            step_input = x
            if k > 0 and tuner.chain_links is not None:
                step_input = x + tuner.chain_links[k - 1].proj.weight @ shifts[-1]
            hidden = torch.relu(net.linear1.weight @ step_input + net.linear1.bias)
            shifts.append(net.linear2.weight @ hidden + net.linear2.bias)
        return [ctx.detach() + shift for ctx, shift in zip(tuner.ctx, shifts, strict=True)]


@pytest.mark.parametrize("method", ["cocoop", "cotpt"])
def test_image_shifts_the_context_by_the_meta_net_output(
        method: str, cotpt: CoTPipeline, tiny_backbone: OpenCLIPBackbone) -> None:
    pipeline = cotpt if method == "cotpt" else CoTPipeline.for_method(
        "cocoop", backbone=tiny_backbone, class_names=CLASSES, device="cpu")
    plain = learned_context(pipeline)
    shifted = learned_context(pipeline, image=red_image())
    expected = shifted_by_hand(pipeline, red_image())
    assert len(shifted) == len(expected) == (3 if method == "cotpt" else 1)
    for k, (got, want, unshifted) in enumerate(zip(shifted, expected, plain, strict=True)):
        assert got.shape == unshifted.shape
        assert not torch.allclose(got, unshifted, atol=1e-4), f"step {k} not shifted"
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)

    result = nearest_words(pipeline, top_k=1, image=red_image())
    assert result.image == "<PIL image>"
    assert result.steps[0].contexts[1].nearest[0].distance > 1e-3  # no longer "photo" itself


def test_image_path_is_read_as_predict_reads_it(cotpt: CoTPipeline, tmp_path: Path) -> None:
    path = tmp_path / "red.png"
    red_image().save(path)
    result = nearest_words(cotpt, top_k=2, image=path)
    assert result.image == str(path)
    by_object = nearest_words(cotpt, top_k=2, image=red_image())
    assert result.to_json()["steps"] == by_object.to_json()["steps"]


def test_multimodal_interprets_its_text_context_and_says_what_it_left_out(
        tiny_backbone: OpenCLIPBackbone) -> None:
    pipeline = CoTPipeline.create(backbone=tiny_backbone, tuner="multimodal",
                                  tuner_config={"text": {"name": "coop",
                                                         "config": {"n_ctx": 2}}},
                                  class_names=CLASSES, device="cpu")
    with torch.no_grad():
        pipeline.tuner.text.ctx[0].copy_(embeddings(tiny_backbone, "dog photo"))
    result = nearest_words(pipeline, top_k=1)
    assert result.tuner == "multimodal"
    assert result.words() == ["dog</w>", "photo</w>"]
    assert len(result.notes) == 1 and "visual prompts" in result.notes[0]


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"top_k": 0}, "top_k must be an integer from 1 to 1000, got 0"),
    ({"top_k": 1001}, "top_k must be an integer from 1 to 1000, got 1001"),
    ({"metric": "manhattan"}, "metric must be one of euclidean, cosine"),
    ({"image": red_image()}, "'coop' is not image-conditioned"),
])
def test_bad_arguments_are_refused(coop: CoTPipeline, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        nearest_words(coop, **kwargs)


def test_a_missing_image_names_the_file(cotpt: CoTPipeline, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.png"):
        nearest_words(cotpt, image=tmp_path / "missing.png")


@pytest.mark.parametrize("image", [[red_image(), red_image()], torch.zeros(1, 3, 8, 8), 123])
def test_only_one_image_is_taken(cotpt: CoTPipeline, image: object) -> None:
    """A list or a batch would be cut to its first image without a word."""
    for interpret in (nearest_words, learned_context):
        with pytest.raises(DataError, match="image must be one path or PIL image, got "):
            interpret(cotpt, image=image)  # type: ignore[arg-type]


def test_tuners_without_word_context_are_refused(tiny_backbone: OpenCLIPBackbone) -> None:
    vpt = CoTPipeline.create(backbone=tiny_backbone, tuner="vpt", class_names=CLASSES,
                             device="cpu")
    with pytest.raises(ConfigError, match="'vpt' learns no context vectors"):
        nearest_words(vpt)
    unbound = CoTPipeline.for_method("coop", backbone=tiny_backbone, device="cpu")
    with pytest.raises(ConfigError, match="no learned context yet"):
        nearest_words(unbound)


# -- the command line -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts(cotpt: CoTPipeline, tiny_backbone: OpenCLIPBackbone,
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("interpret")
    image = folder / "red.png"
    red_image().save(image)
    vpt = CoTPipeline.create(backbone=tiny_backbone, tuner="vpt", class_names=CLASSES,
                             device="cpu")
    return {"cotpt": cotpt.save_pretrained(folder / "cotpt"),
            "vpt": vpt.save_pretrained(folder / "vpt"), "image": image}


def run_subprocess(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cotprompt", *args], capture_output=True,
                          text=True, timeout=120, cwd=REPO_ROOT)


def test_cli_prints_a_table_of_every_step(artifacts: dict[str, Path]) -> None:
    proc = run_subprocess("interpret", str(artifacts["cotpt"]), "--top-k", "2", "-q")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == ("cotpt: the 2 nearest of 49408 tokens to each context vector "
                        "(euclidean distance)")
    assert lines[1].split() == ["step", "ctx", "nearest", "tokens"]
    rows = lines[3:]
    assert len(rows) == 12  # 3 steps x 4 context vectors
    assert rows[1].split()[:5] == ["0", "class", "1", "photo</w>", "0.0000,"]
    assert rows[5].split()[3:5] == ["drawing</w>", "0.0000,"]


def test_cli_json_with_an_image_matches_the_library(cotpt: CoTPipeline,
                                                    artifacts: dict[str, Path]) -> None:
    proc = run_subprocess("interpret", str(artifacts["cotpt"]), "--top-k", "3", "--json",
                          "--image", str(artifacts["image"]), "--metric", "cosine",
                          "--device", "cpu", "--threads", "1", "-q")  # as in-process: same sums
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    expected = nearest_words(cotpt, top_k=3, image=artifacts["image"], metric="cosine")
    assert printed["image"] == str(artifacts["image"]) and printed["metric"] == "cosine"
    assert [s["name"] for s in printed["steps"]] == [s.name for s in expected.steps]
    got = [[t["token"] for t in c["nearest"]] for s in printed["steps"] for c in s["contexts"]]
    want = [[t.token for t in c.nearest] for s in expected.steps for c in s.contexts]
    assert got == want


@pytest.mark.parametrize(("artifact", "extra", "message"), [
    ("cotpt", ["--top-k", "0"], "error: --top-k must be >= 1, got 0"),
    ("cotpt", ["--image", "missing.png"], "error: --image 'missing.png': no such file"),
    ("cotpt", ["--image", "."], "error: --image '.': not a regular file"),
    ("cotpt", ["--image", "x" * 5000], "error: --image '" + "x" * 200 + "...': "),
    ("cotpt", ["--top-k", "1001"], "error: --top-k must be at most 1000, got 1001"),
    ("cotpt", ["--metric", "manhattan"], "error: argument --metric: invalid choice"),
    ("vpt", [], "error: the tuner 'vpt' learns no context vectors in the word-embedding space"),
])
def test_cli_bad_input_is_one_line_exit_2(artifacts: dict[str, Path],
                                         capsys: pytest.CaptureFixture[str], artifact: str,
                                         extra: list[str], message: str) -> None:
    capsys.readouterr()
    code = main(["interpret", str(artifacts[artifact]), *extra])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(message), err
    assert "Traceback" not in err


class FakeHFTokenizer:
    """open_clip's HFTokenizer shape: the Hugging Face tokenizer is its ``tokenizer``."""

    class Vocabulary:
        def __len__(self) -> int:
            return 1000

        def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
            return [f"▁word{i}" for i in ids]

    tokenizer = Vocabulary()


def test_hugging_face_tokenizers_name_the_tokens_and_bound_the_vocabulary(
        coop: CoTPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    dog = token_ids(coop.backbone, "dog")[0]
    monkeypatch.setattr(coop.backbone, "_tokenizer", FakeHFTokenizer())
    result = nearest_words(coop, top_k=2)
    assert result.vocabulary_size == 1000  # the table's rows beyond the tokenizer's are left out
    assert dog >= 1000 and all(t.token_id < 1000 for c in result.steps[0].contexts
                               for t in c.nearest)
    assert all(t.token == f"▁word{t.token_id}" for c in result.steps[0].contexts
               for t in c.nearest)

    monkeypatch.setattr(coop.backbone, "_tokenizer", object())
    with pytest.raises(ConfigError, match="cannot name its token ids"):
        nearest_words(coop)
