"""Sharing through the Hugging Face Hub API, over real HTTP on 127.0.0.1.

Pushes and pulls go through the real ``huggingface_hub`` client against
:class:`hub_server.HubServer`, a small server whose behaviour follows the client's requests, not
the real Hub (see its module docstring). The pull side is cross-checked against ``olah``, an
independent Hub mirror server from PyPI, serving a git repository the test creates.

huggingface_hub reads its settings (endpoint, cache, offline mode, Xet) when it is imported, so
the fixtures patch ``huggingface_hub.constants``; HF_HOME and the cache live under ``tmp_path``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hub_server import HubServer
from huggingface_hub import HfApi, ModelCard
from huggingface_hub import constants as hf_constants

from cotprompt import CoTPipeline
from cotprompt.artifact.format import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from cotprompt.artifact.model_card import base_model_for, render_card
from cotprompt.errors import ArtifactError, UnknownComponentError
from cotprompt.hub import HubConnectionError, check_artifact, pull, push_folder

TOKENS = {"tok-alice": "alice", "tok-bob": "bob"}
ALICE, BOB = "tok-alice", "tok-bob"
LABELS = ["cat", "dog", "bird"]


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """huggingface_hub's home, cache and token files under tmp_path; online; no token."""
    home = tmp_path / "hf-home"
    paths = {
        "HF_HOME": home,
        "HF_HUB_CACHE": home / "hub",
        "HUGGINGFACE_HUB_CACHE": home / "hub",
        "HF_TOKEN_PATH": home / "token",
        "HF_STORED_TOKENS_PATH": home / "stored_tokens",
        "HF_XET_CACHE": home / "xet",
        "HF_ASSETS_CACHE": home / "assets",
        "AGENT_HARNESSES_PATH": home / ".agent_harnesses.json",
    }
    for name, value in paths.items():
        if hasattr(hf_constants, name):
            monkeypatch.setattr(hf_constants, name, str(value))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", False)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("COTPROMPT_HUB_RETRY_WAIT", "0.05")
    return home


def use_endpoint(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Point huggingface_hub (already imported) and subprocesses at ``url``."""
    monkeypatch.setattr(hf_constants, "ENDPOINT", url)
    monkeypatch.setattr(
        hf_constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setenv("HF_ENDPOINT", url)


@contextlib.contextmanager
def serving(monkeypatch: pytest.MonkeyPatch, **options: object) -> Iterator[HubServer]:
    server = HubServer(tokens=TOKENS, orgs={"lab": ["alice"]}, **options).start()  # type: ignore[arg-type]
    use_endpoint(monkeypatch, server.url)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def hub(hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A server storing ``*.safetensors`` as LFS; Xet is disabled so the client uses LFS."""
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)
    with serving(monkeypatch) as server:
        yield server


def make_pipeline(backbone: object, seed: int = 0) -> CoTPipeline:
    """The tiny CoOp pipeline with distinct, seeded prompt values."""
    pipeline = CoTPipeline.for_method("coop", backbone=backbone, class_names=LABELS, device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in pipeline.model.trainable_state().values():
            tensor.copy_(torch.randn(tensor.shape, generator=generator))
    return pipeline


def weights_of(pipeline: CoTPipeline) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in pipeline.model.trainable_state().items()}


def assert_same_weights(a: CoTPipeline, b: CoTPipeline) -> None:
    wa, wb = weights_of(a), weights_of(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


@pytest.fixture
def pipeline(tiny_backbone: object) -> CoTPipeline:
    return make_pipeline(tiny_backbone, seed=1)


def load(repo_id: str, backbone: object, **kwargs: object) -> CoTPipeline:
    return CoTPipeline.from_pretrained(repo_id, backbone=backbone, device="cpu", **kwargs)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- push and pull ----------------------------------------------------------------------------


def test_push_and_load_over_the_lfs_upload_path(hub, pipeline, tiny_backbone, tmp_path):
    info = pipeline.push_to_hub("alice/coop-prompts", token=ALICE)

    assert info.oid == hub.head("alice/coop-prompts")
    assert info.commit_url.endswith(f"/alice/coop-prompts/commit/{info.oid}")
    assert hub.count("POST", "/commit/") == 1  # config, weights and card in one commit
    assert hub.count("POST", ".git/info/lfs/objects/batch") == 1
    assert hub.count("PUT", "/_lfs/upload/") == 1
    stored = hub.file("alice/coop-prompts", WEIGHTS_NAME)
    assert stored.lfs
    local = pipeline.save_pretrained(tmp_path / "local")
    assert stored.data == (local / WEIGHTS_NAME).read_bytes()
    assert not hub.file("alice/coop-prompts", CONFIG_NAME).lfs
    assert json.loads(hub.file("alice/coop-prompts", CONFIG_NAME).data) == json.loads(
        (local / CONFIG_NAME).read_text()
    )

    loaded = load("alice/coop-prompts", tiny_backbone)
    assert_same_weights(loaded, pipeline)
    assert loaded.class_names == LABELS
    assert loaded.source == {
        "type": "hub",
        "repo_id": "alice/coop-prompts",
        "revision": None,
        "endpoint": hub.url,
        "commit": info.oid,
    }
    # downloaded as LFS: the cache names the blob by the sha256 the server sent as X-Linked-Etag
    blob = (
        Path(hf_constants.HF_HUB_CACHE)
        / "models--alice--coop-prompts"
        / "snapshots"
        / info.oid
        / WEIGHTS_NAME
    ).resolve()
    assert blob.name == stored.sha256
    pixels = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.logits(pixels), pipeline.logits(pixels))


def test_regular_upload_path_with_xet_installed(hf_home, monkeypatch, pipeline, tiny_backbone):
    assert not hf_constants.HF_HUB_DISABLE_XET
    with serving(monkeypatch, lfs_patterns=()) as server:
        info = pipeline.push_to_hub("alice/regular", token=ALICE)
        assert server.count("POST", "lfs/objects/batch") == 0
        assert not server.file("alice/regular", WEIGHTS_NAME).lfs
        loaded = load("alice/regular", tiny_backbone)
    assert_same_weights(loaded, pipeline)
    assert loaded.source["commit"] == info.oid


def test_loading_without_a_given_backbone_rebuilds_it(hub, pipeline):
    pipeline.push_to_hub("alice/rebuild", token=ALICE)
    loaded = CoTPipeline.from_pretrained("alice/rebuild", device="cpu")
    assert_same_weights(loaded, pipeline)


def test_revisions_branch_tag_commit_and_branch_creation(hub, tiny_backbone):
    v1, v2, v3 = (make_pipeline(tiny_backbone, seed=s) for s in (1, 2, 3))
    first = v1.push_to_hub("alice/revs", token=ALICE, commit_message="v1")
    HfApi().create_tag("alice/revs", tag="v1", token=ALICE)
    dev = v2.push_to_hub("alice/revs", token=ALICE, revision="dev")  # branch created from main
    assert hub.head("alice/revs", "main") == first.oid
    assert hub.repos["alice/revs"].commits[dev.oid].parent == first.oid
    third = v3.push_to_hub("alice/revs", token=ALICE)

    assert_same_weights(load("alice/revs", tiny_backbone), v3)
    assert_same_weights(load("alice/revs", tiny_backbone, revision="v1"), v1)
    on_dev = load("alice/revs", tiny_backbone, revision="dev")
    assert_same_weights(on_dev, v2)
    assert on_dev.source["commit"] == dev.oid
    pinned = load("alice/revs", tiny_backbone, revision=first.oid)
    assert_same_weights(pinned, v1)
    assert pinned.source["commit"] == first.oid
    assert load("alice/revs", tiny_backbone).source["commit"] == third.oid
    assert hub.repos["alice/revs"].commits[first.oid].message == "v1"
    card = ModelCard(hub.file("alice/revs", CARD_NAME, "dev").data.decode())
    assert 'from_pretrained("alice/revs", revision="dev")' in card.text


def test_pull_request(hub, tiny_backbone):
    base, proposal = make_pipeline(tiny_backbone, 1), make_pipeline(tiny_backbone, 2)
    first = base.push_to_hub("alice/pr", token=ALICE)
    info = proposal.push_to_hub("alice/pr", token=ALICE, create_pr=True)
    assert info.pr_url.endswith("/alice/pr/discussions/1")
    assert info.pr_revision == "refs/pr/1"
    assert hub.head("alice/pr") == first.oid  # main untouched
    assert_same_weights(load("alice/pr", tiny_backbone, revision="refs/pr/1"), proposal)
    assert_same_weights(load("alice/pr", tiny_backbone), base)


def test_pushing_unchanged_files_makes_no_commit(hub, pipeline):
    first = pipeline.push_to_hub("alice/same", token=ALICE)
    again = pipeline.push_to_hub("alice/same", token=ALICE)
    assert again.oid == first.oid
    assert hub.count("POST", "/commit/") == 1


# -- model card -------------------------------------------------------------------------------


def test_card_generated_then_custom_text_kept(hub, tiny_backbone):
    pipeline = make_pipeline(tiny_backbone, 4)
    pipeline.metrics = {"test": {"accuracy": 81.25, "mean_per_class_accuracy": 80.5}}
    pipeline.training_data = {"num_images": 48, "num_classes": 3, "epochs": 2, "seed": 1}
    pipeline.push_to_hub("lab/card", token=ALICE)  # an organisation alice belongs to
    card = ModelCard(hub.file("lab/card", CARD_NAME).data.decode())
    assert card.data.library_name == "cotprompt"
    assert {"cotprompt", "prompt-tuning", "coop"} <= set(card.data.tags)
    assert card.data.eval_results[0].metric_value == 81.25
    assert card.data.base_model is None  # random weights: no base model to name
    assert "cat, dog, bird" in card.text
    assert "| images | 48 |" in card.text
    assert 'CoTPipeline.from_pretrained("lab/card")' in card.text

    edited = str(card).replace(
        "<!-- cotprompt:generated:start -->",
        "Hand-written intro.\n\n<!-- cotprompt:generated:start -->",
    )
    edited = edited.replace("library_name: cotprompt", "library_name: cotprompt\nlicense: mit")
    edited += "\n## Citation\n\nPlease cite us.\n"
    hub.commit_files("lab/card", {CARD_NAME: edited.encode()})
    pipeline.metrics = {"test": {"accuracy": 90.0}}
    pipeline.push_to_hub("lab/card", token=ALICE)
    card = ModelCard(hub.file("lab/card", CARD_NAME).data.decode())
    assert "Hand-written intro." in card.text
    assert "Please cite us." in card.text
    assert card.data.license == "mit"
    assert card.data.eval_results[0].metric_value == 90.0
    assert card.text.count("<!-- cotprompt:generated:start -->") == 1


@pytest.mark.parametrize(
    ("model_name", "pretrained", "expected"),
    [
        ("ViT-B-16", "openai", "openai/clip-vit-base-patch16"),
        ("ViT-B-32", "openai", "openai/clip-vit-base-patch32"),
        ("ViT-L-14", "openai", "openai/clip-vit-large-patch14"),
        ("ViT-B-16-quickgelu", "openai", "openai/clip-vit-base-patch16"),
        (
            "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
            None,
            "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        ),
        ("cotprompt-tiny", None, None),
        ("ViT-B-16", "/path/to/checkpoint.pt", None),
    ],
)
def test_base_model_is_derived_when_possible(model_name, pretrained, expected):
    assert base_model_for({"model_name": model_name, "pretrained": pretrained}) == expected


def test_card_names_the_base_model(pipeline, tmp_path):
    config = json.loads((pipeline.save_pretrained(tmp_path / "a") / CONFIG_NAME).read_text())
    config["backbone"]["config"].update(model_name="ViT-B-16", pretrained="openai")
    card = ModelCard(render_card(config, repo_id="alice/x"))
    assert card.data.base_model == "openai/clip-vit-base-patch16"


# -- tokens and permissions -------------------------------------------------------------------


def test_push_without_token_is_refused(hub, pipeline):
    with pytest.raises(ArtifactError, match="needs a token with write access"):
        pipeline.push_to_hub("alice/anon")
    assert "alice/anon" not in hub.repos


def test_wrong_token_is_refused(hub, pipeline, tiny_backbone):
    with pytest.raises(ArtifactError, match="rejected the token"):
        pipeline.push_to_hub("alice/wrong", token="tok-nobody")
    pipeline.push_to_hub("alice/wrong", token=ALICE)
    with pytest.raises(ArtifactError, match="rejected the token"):
        load("alice/wrong", tiny_backbone, token="tok-nobody")


def test_token_from_the_environment(hub, monkeypatch, pipeline, tiny_backbone):
    monkeypatch.setenv("HF_TOKEN", ALICE)
    pipeline.push_to_hub("alice/env-token", private=True)
    assert_same_weights(load("alice/env-token", tiny_backbone), pipeline)


def test_push_to_another_namespace_is_forbidden(hub, pipeline):
    with pytest.raises(ArtifactError, match="403 Forbidden"):
        pipeline.push_to_hub("bob/not-yours", token=ALICE)
    hub.create_repo("bob/exists")  # create_repo(exist_ok) passes, the upload is refused
    with pytest.raises(ArtifactError, match="403 Forbidden"):
        pipeline.push_to_hub("bob/exists", token=ALICE)
    assert hub.count("POST", "/commit/") == 0


def test_private_repository_needs_the_owners_token(hub, pipeline, tiny_backbone):
    pipeline.push_to_hub("alice/secret", token=ALICE, private=True)
    assert hub.repos["alice/secret"].private
    for token in (None, BOB):
        with pytest.raises(ArtifactError, match="not found"):
            load("alice/secret", tiny_backbone, token=token)
    assert_same_weights(load("alice/secret", tiny_backbone, token=ALICE), pipeline)


def test_push_leaves_the_visibility_to_the_hub_by_default(hub, pipeline):
    hub.private_by_default.add("lab")  # an organisation whose repositories are private
    pipeline.push_to_hub("lab/default", token=ALICE)
    pipeline.push_to_hub("alice/default", token=ALICE)
    for payload in hub.create_payloads:
        assert "private" not in payload and "visibility" not in payload, payload
    assert hub.repos["lab/default"].private
    assert not hub.repos["alice/default"].private


@pytest.mark.parametrize(("private", "visibility"), [(True, "private"), (False, "public")])
def test_push_with_explicit_visibility(hub, pipeline, private, visibility):
    hub.private_by_default.add("lab")
    pipeline.push_to_hub("lab/explicit", token=ALICE, private=private)
    [payload] = hub.create_payloads
    assert payload.get("visibility") == visibility or payload.get("private") is private, payload
    assert hub.repos["lab/explicit"].private is private


# -- bad input --------------------------------------------------------------------------------


def test_missing_repository_revision_and_files(hub, pipeline, tiny_backbone):
    with pytest.raises(ArtifactError, match=r"repository 'alice/nothing-here'.* not found"):
        load("alice/nothing-here", tiny_backbone)
    pipeline.push_to_hub("alice/files", token=ALICE)
    with pytest.raises(ArtifactError, match="revision 'no-such-branch' does not exist"):
        load("alice/files", tiny_backbone, revision="no-such-branch")
    with pytest.raises(ArtifactError, match=r"revision '0{40}' does not exist"):
        load("alice/files", tiny_backbone, revision="0" * 40)
    hub.create_repo("alice/empty")
    with pytest.raises(ArtifactError, match="not a cotprompt artifact"):
        load("alice/empty", tiny_backbone)
    hub.commit_files("alice/files", {WEIGHTS_NAME: None})
    with pytest.raises(ArtifactError, match="not a cotprompt artifact"):
        load("alice/files", tiny_backbone)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_or_truncated_weights_on_the_server(hub, pipeline, tiny_backbone, damage):
    pipeline.push_to_hub("alice/damaged", token=ALICE)
    data = bytearray(hub.file("alice/damaged", WEIGHTS_NAME).data)
    if damage == "flip":
        data[-5] ^= 0xFF
    else:
        del data[len(data) // 2 :]
    hub.commit_files("alice/damaged", {WEIGHTS_NAME: bytes(data)})
    with pytest.raises(ArtifactError, match="checksum"):
        load("alice/damaged", tiny_backbone)
    with pytest.raises(ArtifactError, match="checksum"):
        pull("alice/damaged")


def _tamper(hub: HubServer, repo_id: str, edit) -> None:  # type: ignore[no-untyped-def]
    config = json.loads(hub.file(repo_id, CONFIG_NAME).data)
    edit(config)
    hub.commit_files(repo_id, {CONFIG_NAME: json.dumps(config).encode()})


def test_tampered_config(hub, pipeline, tiny_backbone):
    pipeline.push_to_hub("alice/tampered", token=ALICE)
    original = json.loads(hub.file("alice/tampered", CONFIG_NAME).data)["weights"]
    (name,) = original["tensors"]

    def shape(config: dict) -> None:
        config["weights"]["tensors"][name]["shape"] = [3, 3]

    _tamper(hub, "alice/tampered", shape)
    with pytest.raises(ArtifactError, match="does not match the config's record"):
        load("alice/tampered", tiny_backbone)

    def checksum(config: dict) -> None:
        config["weights"]["sha256"] = "0" * 64

    _tamper(hub, "alice/tampered", checksum)
    with pytest.raises(ArtifactError, match="checksum"):
        load("alice/tampered", tiny_backbone)

    def newer(config: dict) -> None:
        config["format_version"] = 99

    _tamper(hub, "alice/tampered", newer)
    with pytest.raises(ArtifactError, match="pip install -U cotprompt"):
        load("alice/tampered", tiny_backbone)

    def plugin(config: dict) -> None:  # an otherwise intact artifact
        config["format_version"] = 1
        config["weights"] = original
        config["tuner"].update(name="fancy-tuner", package="cotprompt-fancy")

    _tamper(hub, "alice/tampered", plugin)
    with pytest.raises(UnknownComponentError, match="cotprompt-fancy"):
        load("alice/tampered", tiny_backbone)
    with pytest.raises(UnknownComponentError, match="cotprompt-fancy"):
        pull("alice/tampered")

    hub.commit_files("alice/tampered", {CONFIG_NAME: b"{ not json"})
    with pytest.raises(ArtifactError, match="cannot read"):
        load("alice/tampered", tiny_backbone)


def test_only_the_artifact_files_are_fetched(hub, pipeline, tiny_backbone):
    pipeline.push_to_hub("alice/extra", token=ALICE)
    hub.commit_files(
        "alice/extra",
        {"modeling.py": b"raise SystemExit('ran remote code')", "pytorch_model.bin": b"pickle"},
    )
    pushed = len(hub.requests)  # the push's own requests (it looks for a stale history.json)
    load("alice/extra", tiny_backbone)
    fetched = {path.rsplit("/", 1)[-1] for _, path, _ in hub.requests[pushed:]
               if "/resolve/" in path}
    assert fetched == {CONFIG_NAME, WEIGHTS_NAME, CARD_NAME}


def test_server_down_fails_fast_with_a_clear_error(hf_home, monkeypatch, pipeline, tiny_backbone):
    monkeypatch.delenv("COTPROMPT_HUB_RETRY_WAIT")  # the default retry policy
    url = f"http://127.0.0.1:{free_port()}"
    use_endpoint(monkeypatch, url)
    start = time.monotonic()
    with pytest.raises(HubConnectionError, match="after 3 attempt") as info:
        load("alice/anything", tiny_backbone)
    assert url in str(info.value)
    with pytest.raises(HubConnectionError, match="after 3 attempt"):
        pipeline.push_to_hub("alice/anything", token=ALICE)
    assert time.monotonic() - start < 10


def test_transient_errors_are_retried_a_bounded_number_of_times(hub, pipeline, tiny_backbone):
    pipeline.push_to_hub("alice/flaky", token=ALICE)
    probe = "/alice/flaky/resolve/main/cotprompt_config.json"
    hub.fail(probe, 503, times=100)
    with pytest.raises(HubConnectionError, match="HTTP 503"):
        load("alice/flaky", tiny_backbone)
    assert hub.count("HEAD", probe) == 3  # COTPROMPT_HUB_RETRIES' default
    hub.clear_faults()
    hub.fail(probe, 503, times=2)
    assert_same_weights(load("alice/flaky", tiny_backbone), pipeline)


# -- offline and cache ------------------------------------------------------------------------


def test_offline_after_pull(hub, monkeypatch, pipeline, tiny_backbone, tmp_path):
    info = pipeline.push_to_hub("alice/offline", token=ALICE)
    HfApi().create_tag("alice/offline", tag="v1", token=ALICE)
    pulled = pull("alice/offline")
    pull("alice/offline", revision="v1", local_dir=tmp_path / "copy")
    assert pulled.source["commit"] == info.oid
    assert {p.name for p in (tmp_path / "copy").iterdir()} == {CONFIG_NAME, WEIGHTS_NAME, CARD_NAME}
    requests = len(hub.requests)  # the server keeps running: offline, nothing may reach it
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    for revision in (None, "v1", info.oid):
        loaded = load("alice/offline", tiny_backbone, revision=revision)
        assert_same_weights(loaded, pipeline)
        assert loaded.source["commit"] == info.oid
    assert_same_weights(load(str(tmp_path / "copy"), tiny_backbone), pipeline)
    with pytest.raises(ArtifactError, match="not in the local cache"):
        load("alice/never-pulled", tiny_backbone)
    assert len(hub.requests) == requests


def test_cached_artifact_loads_when_the_server_is_down(hub, pipeline, tiny_backbone, caplog):
    info = pipeline.push_to_hub("alice/cached", token=ALICE)
    pull("alice/cached")
    hub.stop()
    loaded = load("alice/cached", tiny_backbone)
    assert_same_weights(loaded, pipeline)
    assert loaded.source["commit"] == info.oid
    assert "using the cached commit" in caplog.text


def test_offline_load_in_a_fresh_process(hub, pipeline, hf_home):
    """HF_HUB_OFFLINE=1 as a user sets it, read by huggingface_hub when it is imported."""
    info = pipeline.push_to_hub("alice/fresh", token=ALICE)
    pull("alice/fresh")
    hub.stop()
    script = (
        "import json\n"
        "from cotprompt import CoTPipeline\n"
        "p = CoTPipeline.from_pretrained('alice/fresh', device='cpu')\n"
        "weights = {k: v.tolist() for k, v in p.model.trainable_state().items()}\n"
        "print(json.dumps({'source': p.source, 'labels': p.class_names, 'weights': weights}))\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_constants.HF_HUB_CACHE),
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["source"]["commit"] == info.oid
    assert out["labels"] == LABELS
    for name, value in weights_of(pipeline).items():
        assert torch.equal(torch.tensor(out["weights"][name]), value)


# -- folders and the command line -------------------------------------------------------------


def test_push_folder_checks_the_folder_first(hub, pipeline, tmp_path):
    folder = pipeline.save_pretrained(tmp_path / "bad")
    (folder / WEIGHTS_NAME).write_bytes((folder / WEIGHTS_NAME).read_bytes()[:-3])
    with pytest.raises(ArtifactError, match="checksum"):
        push_folder(folder, "alice/bad", token=ALICE)
    assert hub.requests == []


def _cli() -> argparse.ArgumentParser:
    """The real ``cotprompt`` parser, so that the wiring of push and pull is tested too."""
    from cotprompt.cli.app import build_parser

    return build_parser()


def test_cli_push_and_pull(hub, pipeline, tiny_backbone, tmp_path, capsys):
    folder = pipeline.save_pretrained(tmp_path / "saved")
    args = _cli().parse_args(
        ["push", str(folder), "alice/cli", "--token", ALICE, "-m", "from the CLI", "--json"]
    )
    assert args.handler(args) == 0
    pushed = json.loads(capsys.readouterr().out)
    assert pushed["commit"] == hub.head("alice/cli")
    assert hub.repos["alice/cli"].commits[pushed["commit"]].message == "from the CLI"

    args = _cli().parse_args(
        ["pull", "alice/cli", "--local-dir", str(tmp_path / "pulled"), "--json"]
    )
    assert args.handler(args) == 0
    pulled = json.loads(capsys.readouterr().out)
    assert pulled["commit"] == pushed["commit"]
    assert pulled["labels"] == 3
    check_artifact(tmp_path / "pulled")
    assert_same_weights(load(str(tmp_path / "pulled"), tiny_backbone), pipeline)

    args = _cli().parse_args(["pull", "alice/cli", "--revision", "nope"])
    with pytest.raises(ArtifactError, match="does not exist"):
        args.handler(args)


@pytest.mark.parametrize(
    ("flags", "sent", "private"),
    [([], None, True), (["--private"], True, True), (["--public"], False, False)],
)
def test_cli_push_visibility_flags(hub, pipeline, tmp_path, capsys, flags, sent, private):
    """No flag sends no visibility (the namespace's default applies), else the one asked for."""
    hub.private_by_default.add("lab")
    folder = pipeline.save_pretrained(tmp_path / "saved")
    args = _cli().parse_args(["push", str(folder), "lab/cli", "--token", ALICE, *flags])
    assert args.private is sent
    assert args.handler(args) == 0
    [payload] = hub.create_payloads
    if sent is None:
        assert "private" not in payload and "visibility" not in payload, payload
    else:
        expected = "private" if sent else "public"
        assert payload.get("visibility") == expected or payload.get("private") is sent, payload
    assert hub.repos["lab/cli"].private is private


def test_cli_push_private_and_public_are_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit) as excinfo:
        _cli().parse_args(["push", str(tmp_path), "alice/x", "--private", "--public"])
    assert excinfo.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


# -- cross-check against an independent Hub mirror (olah) -------------------------------------


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _seed_mirror(repo: Path, folder: Path, *, lfs: bool) -> None:
    """Commit an artifact folder to a git repository, the weights as a git-lfs pointer if asked."""
    for name in (CONFIG_NAME, CARD_NAME):
        (repo / name).write_bytes((folder / name).read_bytes())
    data = (folder / WEIGHTS_NAME).read_bytes()
    if lfs:
        oid = hashlib.sha256(data).hexdigest()
        store = repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4]
        store.mkdir(parents=True, exist_ok=True)
        (store / oid).write_bytes(data)
        data = (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n"
        ).encode()
    (repo / WEIGHTS_NAME).write_bytes(data)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "artifact")


@pytest.fixture
def olah(hf_home, tmp_path, monkeypatch) -> Iterator[tuple[str, Path]]:
    """olah serving the git repositories under ``mirrors/models/<org>/<name>``, offline."""
    pytest.importorskip("olah", reason="olah (test extra) is not installed")
    if subprocess.run(["git", "--version"], capture_output=True, check=False).returncode:
        pytest.skip("git is not installed")
    port = free_port()
    mirrors = tmp_path / "mirrors"
    (mirrors / "models").mkdir(parents=True)
    config = tmp_path / "olah.toml"
    config.write_text(
        "[basic]\n"
        f'host = "127.0.0.1"\nport = {port}\n'
        f'repos-path = "{tmp_path / "olah-repos"}"\n'
        f'mirrors-path = ["{mirrors}"]\n'
        'hf-netloc = "127.0.0.1:9"\nhf-lfs-netloc = "127.0.0.1:9"\n'  # never the real Hub
        "[accessibility]\noffline = true\n"
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "olah.server",
            "-c",
            str(config),
            "--log-path",
            str(tmp_path / "olah-logs"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"olah did not start (exit status {process.poll()})")
            time.sleep(0.1)
        use_endpoint(monkeypatch, url)
        yield url, mirrors / "models"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def test_pull_through_olah_mirror(olah, tiny_backbone, tmp_path):
    url, models = olah
    v1, v2 = make_pipeline(tiny_backbone, 5), make_pipeline(tiny_backbone, 6)
    repo = models / "alice" / "mirrored"
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    _seed_mirror(repo, v1.save_pretrained(tmp_path / "v1"), lfs=True)
    _git(repo, "tag", "v1")
    first = _git(repo, "rev-parse", "HEAD")
    _seed_mirror(repo, v2.save_pretrained(tmp_path / "v2"), lfs=False)
    second = _git(repo, "rev-parse", "HEAD")

    loaded = load("alice/mirrored", tiny_backbone)
    assert_same_weights(loaded, v2)
    assert loaded.source == {
        "type": "hub",
        "repo_id": "alice/mirrored",
        "revision": None,
        "endpoint": url,
        "commit": second,
    }
    tagged = load("alice/mirrored", tiny_backbone, revision="v1")  # LFS-stored weights
    assert_same_weights(tagged, v1)
    assert tagged.source["commit"] == first
    assert_same_weights(load("alice/mirrored", tiny_backbone, revision=first), v1)
    assert pull("alice/mirrored").source["commit"] == second
    with pytest.raises(ArtifactError):
        load("alice/not-mirrored", tiny_backbone)


def test_cli_push_and_pull_print_their_result_once(hub, pipeline, tmp_path, capsys):
    """The result line is on stdout only: the library's INFO record of it is not logged too."""
    from cotprompt.cli import main

    folder = pipeline.save_pretrained(tmp_path / "saved")
    assert main(["push", str(folder), "alice/once", "--token", ALICE]) == 0
    out, err = capsys.readouterr()
    assert out.count("pushed ") == 1 and "pushed " not in err, (out, err)
    assert main(["pull", "alice/once"]) == 0
    out, err = capsys.readouterr()
    assert out.count("pulled alice/once") == 1 and "pulled " not in err, (out, err)
