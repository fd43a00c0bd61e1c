"""Non-finite scores (NaN/Inf) never look like results.

``predict`` and ``evaluate`` raise :class:`~cotprompt.errors.NumericalError` naming the images
whose scores are not finite, and the command line refuses to write NaN/Infinity as JSON (which
is not valid JSON) instead of printing it with exit status 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cotprompt import CoTPipeline
from cotprompt.cli._common import json_text, print_json
from cotprompt.cli.app import main
from cotprompt.data.records import ImageClassificationDataset, ImageRecord
from cotprompt.errors import CotpromptError, NumericalError
from cotprompt.pipeline import Prediction

CLASSES = ["cat", "dog", "bird"]


def _healthy(backbone: object) -> CoTPipeline:
    return CoTPipeline.for_method("coop", backbone=backbone, class_names=CLASSES, device="cpu")


def _poisoned(backbone: object) -> CoTPipeline:
    """A CoOp pipeline with one prompt weight set to NaN in memory (no loading check involved)."""
    pipeline = _healthy(backbone)
    with torch.no_grad():
        name, tensor = next(iter(pipeline.model.trainable_state().items()))
        tensor.view(-1)[0] = float("nan")
    assert not torch.isfinite(pipeline.model.trainable_state()[name]).all()
    return pipeline


@pytest.fixture
def image_paths(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_numerical_error_is_a_cotprompt_value_error() -> None:
    assert issubclass(NumericalError, CotpromptError)
    assert issubclass(NumericalError, ValueError)


def test_predict_with_nan_prompt_weights_raises(tiny_backbone, image_paths) -> None:
    pipeline = _poisoned(tiny_backbone)
    with pytest.raises(NumericalError) as excinfo:
        pipeline.predict(image_paths[:2])
    message = str(excinfo.value)
    assert message.startswith("non-finite scores for image 0 (")
    assert str(image_paths[0]) in message and str(image_paths[1]) in message
    assert "(of 2 images)" in message
    assert "the prompts or the backbone produce NaN/Inf" in message

    with pytest.raises(NumericalError, match=r"image 0 \(.*img0\.png\), image 1 .* and 2 more"):
        pipeline.predict(image_paths)
    # the frozen zero-shot classifier does not use the prompts: it still works
    assert len(pipeline.predict(image_paths[:2], zero_shot=True)) == 2


def test_predict_names_only_the_images_with_nan_scores(tiny_backbone) -> None:
    pipeline = _healthy(tiny_backbone)
    size = pipeline.backbone.image_transform(train=False)(Image.new("RGB", (32, 32))).shape
    pixels = torch.zeros(3, *size)
    pixels[1, 0, 0, 0] = float("nan")  # e.g. a broken preprocessing step upstream
    with pytest.raises(NumericalError, match=r"^non-finite scores for image 1 \(of 3 images\)"):
        pipeline.predict(pixels)
    pixels[1] = 0.0
    assert len(pipeline.predict(pixels)) == 3


def test_predict_names_pil_images_read_from_files(tiny_backbone, image_paths) -> None:
    pipeline = _poisoned(tiny_backbone)
    with Image.open(image_paths[0]) as opened:
        in_memory = Image.new("RGB", (32, 32))
        with pytest.raises(NumericalError) as excinfo:
            pipeline.predict([in_memory, opened])
    message = str(excinfo.value)
    assert f"image 0, image 1 ({image_paths[0]})" in message


def test_evaluate_with_nan_prompt_weights_raises(tiny_backbone, image_paths) -> None:
    pipeline = _poisoned(tiny_backbone)
    dataset = ImageClassificationDataset(
        [ImageRecord(path, i % 3) for i, path in enumerate(image_paths)], CLASSES
    )
    with pytest.raises(NumericalError) as excinfo:
        pipeline.evaluate(dataset, batch_size=2, split="test")
    message = str(excinfo.value)
    assert f"non-finite scores for image 0 ({image_paths[0]}), image 1 ({image_paths[1]})" in (
        message
    )
    assert "(of 5 images)" in message and "no accuracy can be computed" in message
    assert "test" not in pipeline.metrics  # nothing recorded for the model card


def test_evaluate_names_the_image_in_a_later_batch(
    tiny_backbone, image_paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NaN from any source (here: a component) is caught; the image index counts all batches."""
    pipeline = _healthy(tiny_backbone)
    dataset = ImageClassificationDataset(
        [ImageRecord(path, i % 3) for i, path in enumerate(image_paths)], CLASSES
    )
    original = pipeline.logits_from_features
    calls = []

    def second_batch_row_one_is_inf(features: torch.Tensor) -> torch.Tensor:
        logits = original(features)
        calls.append(len(logits))
        if len(calls) == 2:
            logits[1, 2] = float("inf")
        return logits

    monkeypatch.setattr(pipeline, "logits_from_features", second_batch_row_one_is_inf)
    with pytest.raises(
        NumericalError, match=rf"^non-finite scores for image 3 \({image_paths[3]}\) \(of 5"
    ):
        pipeline.evaluate(dataset, batch_size=2)
    monkeypatch.setattr(pipeline, "logits_from_features", original)
    assert 0.0 <= pipeline.evaluate(dataset, batch_size=2).accuracy <= 100.0


# -- the command line's JSON ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"results": {"tuned": {"accuracy": float("nan")}}}, "results.tuned.accuracy is nan"),
        ([{"score": 0.5, "top_k": [{"score": float("-inf")}]}], "[0].top_k[0].score is -inf"),
        (float("inf"), "the value is inf"),
        ({"counts": (1, 2, float("nan"))}, "counts[2] is nan"),
    ],
)
def test_json_writer_refuses_non_finite_numbers(value, where, capsys) -> None:
    with pytest.raises(NumericalError) as excinfo:
        print_json(value)
    message = str(excinfo.value)
    assert message.startswith(f"cannot write the result as JSON: {where} (not a finite number)")
    assert "NaN" not in capsys.readouterr().out


def test_json_writer_writes_finite_values_unchanged() -> None:
    value = {"a": [1, 2.5, None, "x"], "b": {"c": True}}
    assert json_text(value) == json.dumps(value, indent=2)
    assert json.loads(json_text(value)) == value


def test_json_writer_keeps_other_value_errors() -> None:
    circular: list[object] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular reference") as excinfo:
        json_text(circular)
    assert not isinstance(excinfo.value, NumericalError)


def test_cli_predict_json_with_nan_score_is_an_error_not_invalid_json(
    tiny_backbone, image_paths, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A NaN score from any source (here a patched predict) exits 2 with one error line."""
    artifact = _healthy(tiny_backbone).save_pretrained(tmp_path / "artifact")

    def nan_predict(self, images, **kwargs):
        return [Prediction(label="cat", index=0, score=float("nan"), top_k=(("cat", float("nan")),))
                for _ in images]

    monkeypatch.setattr(CoTPipeline, "predict", nan_predict)
    capsys.readouterr()
    code = main(["predict", str(artifact), str(image_paths[0]), "--json", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert "error: cannot write the result as JSON: [0].score is nan" in err
