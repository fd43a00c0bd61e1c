"""OpenAI's CLIP weights always run with QuickGELU, and load without pickle.

OpenAI trained CLIP with QuickGELU; open_clip's ``ViT-B-16`` config builds GELU blocks and, given
the ``openai`` tag, only warns. Here the real ``ViT-B-16`` / ``openai`` pair is built from a seeded
offline Hugging Face cache (random weights in the file open_clip would download), and OpenAI-format
files (a state dict carrying ``input_resolution``, a TorchScript archive as OpenAI publishes) are
loaded under an architecture whose config says GELU.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import open_clip
import pytest
import torch
from huggingface_hub import constants as hf_constants
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file
from torch import nn

from cotprompt.backbones import OpenCLIPBackbone, OpenCLIPBackboneConfig, weights_source
from cotprompt.errors import ConfigError

GELU_MODEL = "cotprompt-test-gelu"
TINY_CONFIG = Path(__file__).parents[1] / "cotprompt" / "backbones" / "model_configs" / (
    "cotprompt-tiny.json")


@pytest.fixture(scope="module", autouse=True)
def gelu_architecture(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The tiny architecture with open_clip's default activation (GELU), like ViT-B-16."""
    config = json.loads(TINY_CONFIG.read_text())
    config.pop("quick_gelu")
    folder = tmp_path_factory.mktemp("configs")
    (folder / f"{GELU_MODEL}.json").write_text(json.dumps(config))
    (folder / f"{GELU_MODEL}-quickgelu.json").write_text(json.dumps({**config, "quick_gelu": True}))
    open_clip.add_model_config(folder)


def activations(model: nn.Module) -> set[type]:
    return {type(block.mlp.gelu) for block in model.transformer.resblocks} | {
        type(block.mlp.gelu) for block in model.visual.transformer.resblocks}


def random_state(model_name: str, seed: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = open_clip.create_model(model_name, pretrained=None)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def openai_format(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict as OpenAI's checkpoints hold it: plus three scalar entries."""
    return {**state, "input_resolution": torch.tensor(32), "context_length": torch.tensor(77),
            "vocab_size": torch.tensor(49408)}


class _Holder(nn.Module):
    """A module tree whose state_dict has the given keys (what torch.jit.save archives)."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for key, value in state.items():
            owner: nn.Module = self
            *path, leaf = key.split(".")
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, nn.Module())
                owner = getattr(owner, part)
            owner.register_buffer(leaf, value.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def torchscript_archive(path: Path, state: dict[str, torch.Tensor]) -> Path:
    scripted = torch.jit.trace(_Holder(state), torch.zeros(1), check_trace=False)
    torch.jit.save(scripted, str(path))
    return path


def test_openai_state_dict_file_runs_with_quick_gelu(tmp_path: Path) -> None:
    state = random_state(GELU_MODEL)
    plain = tmp_path / "plain.safetensors"
    save_file(state, str(plain))
    backbone = OpenCLIPBackbone(OpenCLIPBackboneConfig(model_name=GELU_MODEL,
                                                       pretrained=str(plain)))
    assert activations(backbone.model) == {nn.GELU}  # not OpenAI's: the config decides

    openai = tmp_path / "openai.safetensors"
    save_file(openai_format(state), str(openai))
    backbone = OpenCLIPBackbone(OpenCLIPBackboneConfig(model_name=GELU_MODEL,
                                                       pretrained=str(openai)))
    assert activations(backbone.model) == {QuickGELU}
    torch.testing.assert_close(backbone.model.state_dict()["visual.conv1.weight"],
                               state["visual.conv1.weight"], rtol=0, atol=0)


def test_torchscript_archive_loads_without_pickle(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    state = random_state(GELU_MODEL)
    archive = torchscript_archive(tmp_path / "ViT-tiny.pt", openai_format(state))
    assert weights_source.sniff_format(archive) == "torchscript"
    config = OpenCLIPBackboneConfig(model_name=GELU_MODEL, pretrained=str(archive))
    with pytest.raises(ConfigError, match="not one of OpenAI's published CLIP checkpoints"):
        OpenCLIPBackbone(config)

    def no_pickle(*args: object, **kwargs: object) -> None:
        raise AssertionError("Python pickle used")

    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    # OpenAI's own files are recognised by the SHA-256 in their published URLs
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(weights_source, "openai_sha256", lambda: frozenset({digest}))
    backbone = OpenCLIPBackbone(config)
    assert activations(backbone.model) == {QuickGELU}
    for key in ("visual.conv1.weight", "token_embedding.weight", "text_projection"):
        torch.testing.assert_close(backbone.model.state_dict()[key], state[key], rtol=0, atol=0)
    # any other archive loads with the caller's opt-in
    monkeypatch.setattr(weights_source, "openai_sha256", lambda: frozenset())
    opted_in = OpenCLIPBackbone(config.model_copy(update={"allow_pickle": True}))
    assert activations(opted_in.model) == {QuickGELU}


def test_torchscript_without_openai_entries_keeps_the_configs_activation(
        tmp_path: Path) -> None:
    state = random_state(GELU_MODEL)
    archive = torchscript_archive(tmp_path / "gelu.pt", state)  # not OpenAI's format
    backbone = OpenCLIPBackbone(OpenCLIPBackboneConfig(model_name=GELU_MODEL,
                                                       pretrained=str(archive),
                                                       allow_pickle=True))
    assert activations(backbone.model) == {nn.GELU}
    torch.testing.assert_close(backbone.model.state_dict()["text_projection"],
                               state["text_projection"], rtol=0, atol=0)


def test_old_artifacts_tuned_on_a_gelu_build_warn(caplog: pytest.LogCaptureFixture) -> None:
    from cotprompt.pipeline.serialization import _warn_if_activation_changed

    class Built:
        quick_gelu = True

    old = {"name": "open_clip", "config": {"model_name": "ViT-B-16", "pretrained": "openai"}}
    with caplog.at_level("WARNING"):
        _warn_if_activation_changed(old, Built(), "old-artifact")
    assert "tuned on a GELU build" in caplog.text
    caplog.clear()
    for record in ({**old, "quick_gelu": True},
                   {"name": "open_clip", "config": {"model_name": "ViT-B-16-quickgelu"}}):
        with caplog.at_level("WARNING"):
            _warn_if_activation_changed(record, Built(), "new-artifact")
        assert not caplog.text


def test_openai_sha256_lists_the_published_checkpoints() -> None:
    # the ViT-B-16 file's URL path carries its hash
    assert "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f" in (
        weights_source.openai_sha256())


def test_quickgelu_model_with_gelu_weights_names_the_right_model(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # open_clip lists no such pair today; a tag trained with GELU under a QuickGELU config
    monkeypatch.setattr(open_clip, "get_pretrained_cfg",
                        lambda model, tag: {"hf_hub": "x/y/", "quick_gelu": False})
    with pytest.raises(ConfigError, match=rf"trained with GELU.*use model_name='{GELU_MODEL}'"):
        OpenCLIPBackbone(OpenCLIPBackboneConfig(model_name=f"{GELU_MODEL}-quickgelu",
                                                pretrained="gelu-tag"))


def test_vit_b32_laion_tags_also_get_quick_gelu() -> None:
    # open_clip's registry says these were trained with QuickGELU too; ViT-B-32 builds GELU
    source = weights_source.resolve_weights("ViT-B-32", "laion400m_e32")
    with source as resolved:
        assert resolved.kind == "tag" and resolved.quick_gelu


@pytest.fixture(scope="module")
def vit_b16_openai_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A Hub cache holding, for ViT-B-16 / openai, the file open_clip downloads (random
    weights, fp16 to halve the 300 MB), as a user's machine has it after a first download."""
    cache = tmp_path_factory.mktemp("hf-cache")
    repo = cache / "models--timm--vit_base_patch16_clip_224.openai"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    state = {k: v.half() for k, v in random_state("ViT-B-16").items()}
    save_file(state, str(snapshot / "open_clip_model.safetensors"))
    probe = {k: state[k] for k in ("visual.conv1.weight", "text_projection")}
    # the same weights as a user's local OpenAI-format file (with OpenAI's extra entries)
    save_file(openai_format(state), str(cache / "ViT-B-16-openai.safetensors"))
    return cache, probe


@pytest.mark.parametrize("model_name", ["ViT-B-16", "ViT-B-16-quickgelu"])
def test_vit_b16_openai_tag_runs_with_quick_gelu(vit_b16_openai_cache: tuple[Path, dict],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 model_name: str) -> None:
    cache, probe = vit_b16_openai_cache
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    backbone = OpenCLIPBackbone(OpenCLIPBackboneConfig(model_name=model_name, pretrained="openai",
                                                       cache_dir=str(cache)))
    assert activations(backbone.model) == {QuickGELU}
    for key, value in probe.items():
        torch.testing.assert_close(backbone.model.state_dict()[key], value.float(), rtol=0, atol=0)


def test_vit_b16_openai_format_file_runs_with_quick_gelu(
        vit_b16_openai_cache: tuple[Path, dict]) -> None:
    cache, probe = vit_b16_openai_cache
    backbone = OpenCLIPBackbone(OpenCLIPBackboneConfig(
        model_name="ViT-B-16", pretrained=str(cache / "ViT-B-16-openai.safetensors")))
    assert activations(backbone.model) == {QuickGELU}
    for key, value in probe.items():
        torch.testing.assert_close(backbone.model.state_dict()[key], value.float(), rtol=0, atol=0)


def test_vit_b16_openai_features_equal_openais_architecture(
        vit_b16_openai_cache: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's ViT-B-16 / openai gives the features of OpenAI's own architecture (what
    the research code runs: CLIP's build_model, QuickGELU) on the same weights."""
    from open_clip.model import build_model_from_openai_state_dict
    from safetensors.torch import load_file

    cache, _ = vit_b16_openai_cache
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    backbone = OpenCLIPBackbone(OpenCLIPBackboneConfig(model_name="ViT-B-16", pretrained="openai",
                                                       cache_dir=str(cache)))
    (weights,) = cache.glob("models--*/snapshots/*/open_clip_model.safetensors")
    reference = build_model_from_openai_state_dict(load_file(str(weights))).float().eval()
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 224, 224)
    tokens = open_clip.tokenize(["a photo of a cat.", "a photo of a golden retriever."])
    with torch.no_grad():
        torch.testing.assert_close(backbone.encode_images(pixels), reference.encode_image(pixels),
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(backbone.encode_texts(["a photo of a cat.",
                                                          "a photo of a golden retriever."]),
                                   reference.encode_text(tokens), rtol=1e-5, atol=1e-5)
