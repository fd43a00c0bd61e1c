"""Write the golden files that pin cotprompt's observable behaviour (tests/test_golden.py).

Run from the repository root: ``python tests/golden/make_golden.py``. Regenerate only on purpose:
a change in these files is a change in artifact bytes, training numbers, checkpoints or the CLI,
and needs a CHANGELOG entry. Everything is built from fixed seeds on the tiny random model.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/, as pytest puts it on the path

from golden.cases import (  # noqa: E402
    CASES,
    CLI_HELP_COMMANDS,
    cli_json_outputs,
    cli_output,
    feature_cache_namespaces,
    history_record,
    image_folder,
    train_case,
)


def main() -> None:
    out = HERE / "data"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    histories = {}
    torch.set_num_threads(1)  # as the tests run
    for name in CASES:
        result, pipeline, logits = train_case(name, out / f"{name}-checkpoints")
        pipeline.save_pretrained(out / f"{name}-artifact")
        histories[name] = history_record(result)
        torch_save_logits(logits, out / f"{name}-logits.safetensors")
    (out / "histories.json").write_text(json.dumps(histories, indent=2) + "\n")
    help_texts = {" ".join(cmd) or "-": cli_output([*cmd, "--help"]) for cmd in CLI_HELP_COMMANDS}
    (out / "cli_help.json").write_text(json.dumps(help_texts, indent=2) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        outputs = cli_json_outputs(out / "cotpt-artifact", image_folder(Path(tmp) / "images"))
    with tempfile.TemporaryDirectory() as tmp:
        namespaces = feature_cache_namespaces(Path(tmp))
    (out / "feature_cache.json").write_text(json.dumps(namespaces, indent=2) + "\n")
    (out / "cli_json.json").write_text(json.dumps(outputs, indent=2) + "\n")


def torch_save_logits(logits: dict, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in logits.items()}, str(path))


if __name__ == "__main__":
    main()
