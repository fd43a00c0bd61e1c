"""Every failure of the command line is one line ``error: ...``, never a traceback.

A corpus of malformed inputs is fed to every subcommand (train, eval, predict, plugins, demo,
push, pull, eval-retrieval, eval-vqa) through ``cotprompt.cli.app.main`` in-process, plus a few as
real ``python -m cotprompt`` processes. Each must exit with status 2 (1 for file-system
errors, as docs/cli.md defines), print exactly one line starting with ``error:`` that says what
is wrong, and no ``Traceback``; none may fall through to the "internal error" catch-all,
which is for cotprompt's own bugs (malformed files are refused where they are read).

The Hub is offline (``HF_HUB_OFFLINE``) with its cache under a temporary folder, except in
the case that points it at a closed port.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import yaml
from huggingface_hub import constants as hf_constants
from PIL import Image
from safetensors.torch import load_file, save_file

from cotprompt import plugins
from cotprompt.artifact.format import CONFIG_NAME, WEIGHTS_NAME
from cotprompt.backbones import TINY_MODEL
from cotprompt.cli.app import main
from cotprompt.config import ComponentConfig
from cotprompt.errors import ArtifactError
from cotprompt.hub.download import resolve_artifact
from cotprompt.plugins.hookspecs import hookimpl

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_BACKBONE = {"name": "open_clip", "config": {"model_name": TINY_MODEL, "pretrained": None}}
TRAINING = {"epochs": 1, "batch_size": 4, "optimizer": "adamw", "lr": 0.01, "warmup_epochs": 0,
            "scheduler": "constant", "augment": False, "progress": False}


# -- a plugin whose component constructor raises ----------------------------------------------


class ExplodingTuner:
    name: ClassVar[str] = "exploding"
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig

    def __init__(self, config: ComponentConfig) -> None:
        raise ValueError("boom in the constructor")

    def bind(self, backbone: Any, chain: Any) -> None: ...

    def encode_images(self, backbone: Any, pixels: Any) -> Any: ...

    def encode_text(self, backbone: Any, image_features: Any = None) -> Any: ...


class ExitingTuner(ExplodingTuner):
    name: ClassVar[str] = "exiting"

    def __init__(self, config: ComponentConfig) -> None:
        sys.exit(3)


def _exploding_plugin() -> types.ModuleType:
    module = types.ModuleType("cotprompt_exploding")

    def register_tuners(register: Any) -> None:
        register(ExplodingTuner)
        register(ExitingTuner)

    module.register_tuners = hookimpl(register_tuners)  # type: ignore[attr-defined]
    return module


# -- the inputs -------------------------------------------------------------------------------


def _write_yaml(path: Path, value: Any) -> str:
    path.write_text(yaml.safe_dump(value), encoding="utf-8")
    return str(path)


def _config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "backbone": TINY_BACKBONE,
        "tuner": {"name": "coop", "config": {"n_ctx": 2}},
        "training": dict(TRAINING),
        "data": {"format": "folder", "train": "data", "shots": None},
    }
    config.update(changes)
    return config


def _edit_config(src: Path, dst: Path, edit: Callable[[dict[str, Any]], None]) -> str:
    shutil.copytree(src, dst)
    config = json.loads((dst / CONFIG_NAME).read_text(encoding="utf-8"))
    edit(config)
    (dst / CONFIG_NAME).write_text(json.dumps(config), encoding="utf-8")
    return str(dst)


@pytest.fixture(scope="module")
def ws(tiny_backbone: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The malformed inputs, and a small artifact and checkpoints to spoil."""
    from cotprompt import CoTPipeline

    root = tmp_path_factory.mktemp("cli-errors")
    p: dict[str, str] = {"root": str(root)}

    pipeline = CoTPipeline.create(backbone=tiny_backbone, tuner="coop", tuner_config={"n_ctx": 2},
                                  class_names=["cat", "dog"], device="cpu")
    art = root / "art"
    pipeline.save_pretrained(art)
    p["art"] = str(art)
    p["art_no_tuner"] = _edit_config(art, root / "art-no-tuner", lambda c: c.pop("tuner"))
    p["art_typed"] = _edit_config(art, root / "art-typed",
                                  lambda c: c["task"].update(labels=5))
    p["art_n_ctx"] = _edit_config(art, root / "art-n-ctx",
                                  lambda c: c["tuner"]["config"].update(n_ctx="four"))
    shutil.copytree(art, root / "art-weights")
    tensors = load_file(str(art / WEIGHTS_NAME))
    save_file(dict(list(tensors.items())[1:]) or {"x": next(iter(tensors.values()))},
              str(root / "art-weights" / WEIGHTS_NAME))
    p["art_weights"] = str(root / "art-weights")

    # images
    Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "good.png")
    p["good"] = str(root / "good.png")
    (root / "corrupt.jpg").write_bytes(b"not a jpeg at all")
    p["corrupt"] = str(root / "corrupt.jpg")
    nan = np.ones((4, 4), dtype=np.float32)
    nan[0, 0] = np.nan
    Image.fromarray(nan).save(root / "nan.tif")
    p["nan"] = str(root / "nan.tif")
    (root / "hidden-only" / ".ipynb_checkpoints").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "hidden-only" / ".ipynb_checkpoints" / "x.png")
    p["hidden_only"] = str(root / "hidden-only")
    for name in ("cat", "dog"):
        (root / "data" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (60 * i, 100, 0)).save(root / "data" / name / f"{i}.png")

    # text files
    (root / "latin1.csv").write_bytes("path,label\ndata/cat/0.png,caf\xe9\n".encode("latin-1"))
    p["latin1_csv"] = str(root / "latin1.csv")
    (root / "columns.csv").write_text("file,class\ndata/cat/0.png,cat\n", encoding="utf-8")
    p["columns_csv"] = str(root / "columns.csv")
    (root / "captions.csv").write_text("image,caption\ngood.png,a red square\n",
                                       encoding="utf-8")
    p["captions_csv"] = str(root / "captions.csv")
    question = {"image_id": 1, "question_id": 1, "question": "what colour?"}
    answer = {"question_id": 1, "answers": [{"answer": "red"}]}
    shutil.copy(root / "good.png", root / "1.png")
    for key, value in {
        "questions": {"questions": [question], "data_subtype": "val"},
        "annotations": {"annotations": [answer]},
        "answers_int": {"annotations": [{**answer, "answers": 5}]},
        "question_id_list": {"annotations": [{**answer, "question_id": [1]}]},
        "image_id_list": {"questions": [{**question, "image_id": [1]}]},
        "karpathy_split_list": {"images": [{"filename": "good.png", "split": ["test"],
                                            "sentences": [{"raw": "a red square"}]}]},
    }.items():
        (root / f"{key}.json").write_text(json.dumps(value), encoding="utf-8")
        p[key] = str(root / f"{key}.json")
    (root / "broken.json").write_text("{not json", encoding="utf-8")
    p["broken_json"] = str(root / "broken.json")
    (root / "latin1.json").write_bytes('{"images": ["caf\xe9"]}'.encode("latin-1"))
    p["latin1_json"] = str(root / "latin1.json")
    (root / "list.json").write_text("[1, 2, 3]", encoding="utf-8")
    p["list_json"] = str(root / "list.json")
    (root / "empty.csv").write_text("", encoding="utf-8")
    p["empty_csv"] = str(root / "empty.csv")
    (root / "a-file").write_text("a file", encoding="utf-8")
    p["a_file"] = str(root / "a-file")

    # configs
    configs = {
        "cfg_epochs": _config(training={**TRAINING, "epochs": "ten"}),
        "cfg_shots": _config(data={"format": "folder", "train": "data", "shots": [1]}),
        "cfg_n_ctx": _config(tuner={"name": "coop", "config": {"n_ctx": "four"}}),
        "cfg_tuner": _config(tuner=5),
        "cfg_list": [1, 2],
        "cfg_plugin": _config(tuner={"name": "exploding"}),
        "cfg_plugin_exit": _config(tuner={"name": "exiting"}),
        "cfg_csv": _config(data={"format": "csv", "train": "latin1.csv",
                                 "class_names": ["cat", "dog"]}),
        "cfg_lr": _config(training={**TRAINING, "lr": "fast"}),
        "cfg_project_dir_blank": _config(training={**TRAINING, "project_dir": " "}),
        # the tracker folder is checked before the (here absent) data is read
        "cfg_tracker_file": _config(
            training={**TRAINING, "log_with": ["tensorboard"], "project_dir": p["a_file"]},
            data={"format": "folder", "train": "absent", "shots": None}),
    }
    for key, value in configs.items():
        p[key] = _write_yaml(root / f"{key}.yaml", value)
    (root / "latin1.yaml").write_bytes("tuner: {name: caf\xe9}\n".encode("latin-1"))
    p["cfg_latin1"] = str(root / "latin1.yaml")

    # checkpoints of a real run, then spoilt
    checkpointed = _config(training={**TRAINING, "checkpoint_every": 1,
                                     "checkpoint_dir": str(root / "ckpt")},
                           output=str(root / "trained"))
    p["cfg_ckpt"] = _write_yaml(root / "ckpt.yaml", checkpointed)
    assert main(["train", "--config", p["cfg_ckpt"], "-q"]) == 0
    [last] = sorted((root / "ckpt").glob("checkpoint-*"))[-1:]

    def spoilt(name: str, edit: Callable[[Path], None]) -> str:
        folder = root / name
        shutil.copytree(last, folder)
        edit(folder)
        return str(folder)

    def drop_json_entry(folder: Path) -> None:
        meta = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        del meta["param_groups"]
        (folder / "state.json").write_text(json.dumps(meta), encoding="utf-8")

    def drop_tensor(folder: Path) -> None:
        tensors = load_file(str(folder / "state.safetensors"))
        del tensors["rng.cpu"]
        save_file(tensors, str(folder / "state.safetensors"))

    def garble(folder: Path) -> None:
        (folder / "state.safetensors").write_bytes(b"garbage")

    p["ckpt_no_entry"] = spoilt("ckpt-no-entry", drop_json_entry)
    p["ckpt_no_tensor"] = spoilt("ckpt-no-tensor", drop_tensor)
    p["ckpt_garbled"] = spoilt("ckpt-garbled", garble)
    return p


@pytest.fixture(autouse=True)
def _offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub offline, its cache and token under tmp_path; no token."""
    home = tmp_path / "hf-home"
    for name, value in {"HF_HOME": home, "HF_HUB_CACHE": home / "hub",
                        "HUGGINGFACE_HUB_CACHE": home / "hub", "HF_TOKEN_PATH": home / "token",
                        "HF_STORED_TOKENS_PATH": home / "stored_tokens"}.items():
        if hasattr(hf_constants, name):
            monkeypatch.setattr(hf_constants, name, str(value))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("COTPROMPT_HUB_RETRIES", "1")
    monkeypatch.setenv("COTPROMPT_HUB_RETRY_WAIT", "0.01")


@pytest.fixture
def exploding_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process-wide registry: the built-ins plus a plugin whose tuner cannot be built."""
    registry = plugins.Registry(extra_plugins=[_exploding_plugin()], entry_points=[])
    monkeypatch.setattr("cotprompt.plugins.registry._registry", registry)
    yield
    plugins.reset_registry()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the corpus -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """``argv`` with ``{name}`` fields filled from the workspace; what the error line says."""

    id: str
    argv: tuple[str, ...]
    says: tuple[str, ...]
    status: int = 2
    needs: str = ""  # "plugin", "online" or "no-cuda"


def case(id: str, argv: str, *says: str, status: int = 2, needs: str = "") -> Any:
    return pytest.param(Case(id, tuple(argv.split()), says, status, needs), id=id)


CORPUS = [
    # train
    case("train-no-config", "train", "--config"),
    case("train-missing-config", "train --config {root}/absent.yaml", "does not exist"),
    case("train-config-not-utf8", "train --config {cfg_latin1}", "UTF-8"),
    case("train-config-a-list", "train --config {cfg_list}", "mapping"),
    case("train-epochs-typed", "train --config {cfg_epochs}", "training.epochs"),
    case("train-lr-typed", "train --config {cfg_lr}", "training.lr"),
    case("train-shots-typed", "train --config {cfg_shots}", "shots"),
    case("train-n-ctx-typed", "train --config {cfg_n_ctx}", "n_ctx"),
    case("train-tuner-typed", "train --config {cfg_tuner}", "tuner"),
    case("train-csv-not-utf8", "train --config {cfg_csv}", "latin1.csv", "not UTF-8"),
    case("train-device-gpu", "train --config {cfg_epochs} --device gpu", "--device", "'gpu'"),
    case("train-device-cuda", "train --config {cfg_epochs} --device cuda", "CUDA is not available",
         needs="no-cuda"),
    case("train-threads-0", "train --config {cfg_epochs} --threads 0", "--threads"),
    case("train-project-dir-blank", "train --config {cfg_project_dir_blank}",
         "training.project_dir", "not an empty string"),
    case("train-tracker-folder-a-file", "train --config {cfg_tracker_file}", "tracker folder",
         "a-file"),
    case("train-plugin-raises", "train --config {cfg_plugin}", "tuner 'exploding'",
         "cotprompt-exploding", "ValueError: boom in the constructor", needs="plugin"),
    case("train-plugin-calls-sys-exit", "train --config {cfg_plugin_exit}", "tuner 'exiting'",
         "SystemExit: 3", needs="plugin"),
    case("train-resume-missing", "train --config {cfg_ckpt} --resume {root}/no-such-ckpt",
         "no-such-ckpt"),
    case("train-checkpoint-without-entry", "train --config {cfg_ckpt} --resume {ckpt_no_entry}",
         "ckpt-no-entry", "'param_groups'"),
    case("train-checkpoint-without-tensor",
         "train --config {cfg_ckpt} --resume {ckpt_no_tensor}", "ckpt-no-tensor", "'rng.cpu'"),
    case("train-checkpoint-garbled", "train --config {cfg_ckpt} --resume {ckpt_garbled}",
         "ckpt-garbled"),
    # eval
    case("eval-csv-not-utf8", "eval {art} --csv {latin1_csv}", "latin1.csv", "not UTF-8"),
    case("eval-csv-columns", "eval {art} --csv {columns_csv}", "columns.csv", "path"),
    case("eval-csv-empty", "eval {art} --csv {empty_csv}", "empty.csv"),
    case("eval-missing-data", "eval {art} --data {root}/absent", "does not exist"),
    case("eval-coop-split-broken", "eval {art} --coop-split {broken_json} --image-root {root}",
         "broken.json"),
    case("eval-coop-split-not-utf8",
         "eval {art} --coop-split {latin1_json} --image-root {root}", "latin1.json"),
    case("eval-digits-bad-split", "eval {art} --digits --split nope", "nope"),
    case("eval-artifact-typo", "eval runs/pets-cotpt --data {root}/data",
         "no local folder 'runs/pets-cotpt'", "Hub"),
    case("eval-artifact-no-tuner", "eval {art_no_tuner} --data {root}/data", "tuner"),
    case("eval-artifact-typed", "eval {art_typed} --data {root}/data", "labels"),
    case("eval-artifact-weights", "eval {art_weights} --data {root}/data", "art-weights"),
    case("eval-batch-size-0", "eval {art} --data {root}/data --batch-size 0", "--batch-size"),
    case("eval-workers-superscript", "eval {art} --data {root}/data --workers \u00b2",
         "--workers", "integer"),
    case("eval-device-gpu", "eval {art} --data {root}/data --device gpu", "--device"),
    case("eval-corrupt-image-in-dataset", "eval {art} --csv {root}/corrupt-manifest.csv",
         "corrupt.jpg"),
    # predict
    case("predict-corrupt-image", "predict {art} {corrupt}", "corrupt.jpg"),
    case("predict-nan-image", "predict {art} {nan}", "nan.tif", "NaN"),
    case("predict-missing-image", "predict {art} {root}/gone.png", "gone.png"),
    case("predict-hidden-only-folder", "predict {art} {hidden_only}", "hidden-only"),
    case("predict-all-skipped", "predict {art} {corrupt} --on-bad-image skip", "none of the 1"),
    case("predict-bad-policy", "predict {art} {good} --on-bad-image ignore", "--on-bad-image"),
    case("predict-top-k-0", "predict {art} {good} --top-k 0", "--top-k"),
    case("predict-device-gpu", "predict {art} {good} --device gpu", "--device"),
    case("predict-device-cuda", "predict {art} {good} --device cuda:0", "CUDA", needs="no-cuda"),
    case("predict-artifact-typo", "predict runs/pets-cotpt {good}",
         "no local folder 'runs/pets-cotpt'", "Hub"),
    case("predict-artifact-is-a-file", "predict {a_file} {good}", "a-file", "is a file"),
    case("predict-artifact-n-ctx-typed", "predict {art_n_ctx} {good}", "n_ctx"),
    # plugins
    case("plugins-extra-argument", "plugins extra", "extra"),
    # demo
    case("demo-unknown-method", "demo --methods coop,cocop", "cocop"),
    case("demo-shots-0", "demo --shots 0 --methods coop", "shots"),
    case("demo-epochs-typed", "demo --epochs many", "--epochs"),
    case("demo-missing-weights", "demo --pretrained {root}/absent.pt --methods coop", "absent.pt"),
    case("demo-device-gpu", "demo --device gpu", "--device"),
    case("demo-output-is-a-file", "demo --methods coop --shots 1 --epochs 1 --output {a_file}",
         "a-file"),
    # push / pull
    case("push-missing-folder", "push {root}/absent user/repo", "absent"),
    case("push-not-an-artifact", "push {root}/data user/repo", "data"),
    case("push-bad-repo-id", "push {art} a/b/c", "a/b/c"),
    case("push-offline", "push {art} user/repo", "offline"),
    case("pull-bad-repo-id", "pull a/b/c", "a/b/c"),
    case("pull-offline-not-cached", "pull user/repo", "user/repo"),
    case("pull-unreachable-endpoint", "pull user/repo", "user/repo", needs="online"),
    # eval-retrieval
    case("retrieval-csv-not-utf8", "eval-retrieval {art} --csv {latin1_csv}", "latin1.csv"),
    case("retrieval-karpathy-broken", "eval-retrieval {art} --karpathy {broken_json} "
         "--image-root {root}", "broken.json"),
    case("retrieval-karpathy-a-list", "eval-retrieval {art} --karpathy {list_json} "
         "--image-root {root}", "list.json"),
    case("retrieval-karpathy-split-list", "eval-retrieval {art} --karpathy "
         "{karpathy_split_list} --image-root {root}", "karpathy_split_list.json", "images[0]",
         "'split' must be a string"),
    case("retrieval-artifact-typo", "eval-retrieval runs/pets --csv {captions_csv}",
         "no local folder 'runs/pets'"),
    case("retrieval-device-gpu", "eval-retrieval {art} --csv {latin1_csv} --device gpu",
         "--device"),
    # eval-vqa
    case("vqa-questions-broken", "eval-vqa {art} --questions {broken_json} --annotations "
         "{broken_json} --image-root {root}", "broken.json"),
    case("vqa-questions-not-utf8", "eval-vqa {art} --questions {latin1_json} --annotations "
         "{latin1_json} --image-root {root}", "latin1.json"),
    case("vqa-questions-a-list", "eval-vqa {art} --questions {list_json} --annotations "
         "{list_json} --image-root {root}", "list.json"),
    case("vqa-answers-not-a-list", "eval-vqa {art} --questions {questions} --annotations "
         "{answers_int} --image-root {root} --image-pattern {{image_id}}.png", "answers_int.json",
         "annotations[0]", "'answers' must be a list"),
    case("vqa-question-id-a-list", "eval-vqa {art} --questions {questions} --annotations "
         "{question_id_list} --image-root {root} --image-pattern {{image_id}}.png",
         "question_id_list.json", "annotations[0]", "'question_id' must be"),
    case("vqa-image-id-a-list", "eval-vqa {art} --questions {image_id_list} --annotations "
         "{annotations} --image-root {root} --image-pattern {{image_id}}.png",
         "image_id_list.json", "questions[0]", "'image_id' must be"),
    case("vqa-artifact-typo", "eval-vqa runs/vqa --questions {questions} --annotations "
         "{annotations} --image-root {root} --image-pattern {{image_id}}.png",
         "no local folder 'runs/vqa'"),
    # sweep (each refused before a backbone is built: no weights could be downloaded here)
    case("sweep-no-data", "sweep base2new --output {root}/sweep", "--data"),
    case("sweep-protocol-typo", "sweep base2new_ --data {root} --output {root}/sweep",
         "invalid choice", "base2new"),
    case("sweep-data-missing", "sweep base2new --data {root}/absent --output {root}/sweep",
         "$DATA folder", "absent"),
    case("sweep-dataset-typo", "sweep base2new --data {root} --output {root}/sweep "
         "--datasets caltech10", "did you mean 'caltech101'"),
    case("sweep-method-typo", "sweep base2new --data {root} --output {root}/sweep "
         "--methods coopp", "did you mean 'coop'"),
    case("sweep-shard-out-of-range", "sweep base2new --data {root} --output {root}/sweep "
         "--shard 2/2", "--shard", "2/2"),
    case("sweep-seeds-typed", "sweep base2new --data {root} --output {root}/sweep --seeds a",
         "--seeds", "'a'"),
    # report
    case("report-missing-folder", "report {root}/absent", "absent", "no such folder"),
    case("report-no-results", "report {root}", "no results.json"),
    case("report-format-typo", "report {root} --format xls", "md, csv, json", "xls"),
    # env
    case("env-bogus-option", "env --bogus", "unrecognized argument", "--bogus"),
    # interpret
    case("interpret-top-k-zero", "interpret {art} --top-k 0", "--top-k", ">= 1"),
    case("interpret-missing-image", "interpret {art} --image {root}/gone.png", "gone.png"),
    case("interpret-image-for-coop", "interpret {art} --image {good}", "not image-conditioned"),
    case("interpret-metric-typo", "interpret {art} --metric l1", "invalid choice", "l1"),
    case("interpret-artifact-typo", "interpret runs/pets", "no local folder 'runs/pets'"),
    # completion
    case("completion-unknown-shell", "completion fish", "invalid choice", "fish"),
]


def test_the_corpus_covers_every_subcommand() -> None:
    from cotprompt.cli.app import build_parser

    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    covered = {p.values[0].argv[0] for p in CORPUS}
    assert commands == covered == {"train", "eval", "predict", "plugins", "demo", "push", "pull",
                                   "eval-retrieval", "eval-vqa", "sweep", "report", "env",
                                   "interpret", "completion"}


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("c", CORPUS)
def test_malformed_input_gives_one_error_line(
    c: Case, ws: dict[str, str], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
) -> None:
    if c.needs == "no-cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    if c.needs == "plugin":
        request.getfixturevalue("exploding_registry")
    if c.needs == "online":
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.delenv("HF_HUB_OFFLINE")
        url = f"http://127.0.0.1:{_closed_port()}"
        monkeypatch.setattr(hf_constants, "ENDPOINT", url)
        monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setenv("HF_ENDPOINT", url)
    manifest = Path(ws["root"]) / "corrupt-manifest.csv"
    manifest.write_text(f"path,label\n{ws['good']},cat\n{ws['corrupt']},dog\n", encoding="utf-8")
    monkeypatch.chdir(ws["root"])
    argv = [part.format(**ws) for part in c.argv]

    capsys.readouterr()
    status = main(argv)
    out, err = capsys.readouterr()

    assert "Traceback" not in out + err, err
    lines = error_lines(err)
    assert len(lines) == 1, err
    [line] = lines
    assert status == c.status, line
    assert "internal error" not in line, line
    for text in c.says:
        assert text in line, (text, line)


def test_debug_adds_the_traceback(ws: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["predict", ws["art"], ws["good"], "--device", "gpu", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ConfigError" in err
    assert len(error_lines(err)) == 1


def test_an_unexpected_exception_is_one_line_too(
    ws: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catch-all: a failure cotprompt does not know still gives one line and status 2."""
    import cotprompt.cli.pipeline as cli_pipeline

    def broken(items: Any, **kwargs: Any) -> Any:
        raise RuntimeError("something odd")

    monkeypatch.setattr(cli_pipeline, "_expand_images", broken)
    capsys.readouterr()
    assert main(["predict", ws["art"], ws["good"]]) == 2
    err = capsys.readouterr().err
    [line] = error_lines(err)
    assert "Traceback" not in err
    assert line == ("error: internal error: RuntimeError: something odd (please report it; "
                    "--debug shows the traceback)")


def test_a_bug_is_an_internal_error_not_bad_input(
    ws: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``KeyError`` from cotprompt's own code is reported as a bug, not as a missing entry of
    the user's files."""
    import cotprompt.cli.pipeline as cli_pipeline

    def buggy(items: Any, **kwargs: Any) -> Any:
        return {}["images"]

    monkeypatch.setattr(cli_pipeline, "_expand_images", buggy)
    capsys.readouterr()
    assert main(["predict", ws["art"], ws["good"]]) == 2
    err = capsys.readouterr().err
    [line] = error_lines(err)
    assert "Traceback" not in err
    assert line.startswith("error: internal error: KeyError: 'images'"), line
    assert "please report it" in line and "missing" not in line


def test_local_typo_is_not_only_a_hub_failure(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArtifactError) as excinfo:
        resolve_artifact("runs/pets-cotpt")
    message = str(excinfo.value)
    assert message.startswith("no local folder 'runs/pets-cotpt' exists")
    assert "as a Hub repository:" in message  # then what the Hub said
    with pytest.raises(ArtifactError, match=r"no local folder '\./runs/x' exists.*not a Hub"):
        resolve_artifact("./runs/x")


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "{art}", "{good}", "--device", "gpu"],
        ["eval", "{art}", "--csv", "{latin1_csv}"],
    ],
)
def test_real_processes_print_one_line(argv: list[str], ws: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cotprompt", *(a.format(**ws) for a in argv)],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(error_lines(proc.stderr)) == 1, proc.stderr
