"""Tests of the evaluation metrics."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from cotprompt.errors import DataError
from cotprompt.evaluation import (
    EvaluationResult,
    accuracy,
    confusion_matrix,
    harmonic_mean,
    mean_per_class_accuracy,
    per_class_accuracy,
)

PREDS = [0, 1, 1, 2, 2, 2, 0, 1]
LABELS = [0, 1, 2, 2, 2, 0, 0, 1]  # 6 of 8 correct


@pytest.mark.parametrize(
    "convert",
    [list, np.array, torch.tensor, lambda x: torch.tensor(x, dtype=torch.uint8)],
    ids=["list", "numpy", "torch", "torch-uint8"],
)
def test_accuracy_accepts_lists_arrays_tensors(convert: Callable[[list[int]], Any]) -> None:
    assert accuracy(convert(PREDS), convert(LABELS)) == pytest.approx(75.0)


def test_accuracy_from_logits() -> None:
    logits = torch.full((8, 3), -1.0)
    logits[torch.arange(8), torch.tensor(PREDS)] = 2.0
    assert accuracy(logits, LABELS) == pytest.approx(75.0)
    assert accuracy(logits.to(torch.bfloat16), torch.tensor(LABELS)) == pytest.approx(75.0)
    assert accuracy(logits.numpy(), np.array(LABELS)) == pytest.approx(75.0)


def test_accuracy_integral_floats_accepted() -> None:
    assert accuracy([0.0, 1.0], [0, 0]) == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("preds", "labels", "message"),
    [
        ([0, 1], [0, 1, 2], "differ in length: 2 vs 3"),
        ([], [], "zero samples"),
        ([0.5, 1.0], [0, 1], "preds must hold integer class indices"),
        ([0, 1], ["cat", "dog"], "labels must hold integer class indices"),
        ([[0, 1]], [[0, 1]], r"labels must be a 1-D sequence .* shape \(1, 2\)"),
        (np.zeros((2, 2, 2)), [0, 1], r"preds must be a 1-D sequence .* shape \(2, 2, 2\)"),
        (np.zeros((2, 0)), [0, 1], r"scores have shape \(2, 0\): no classes"),
        ([[0, 1], [0]], [0, 1], "preds must be a sequence of class indices"),
    ],
)
def test_accuracy_bad_inputs(preds: object, labels: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        accuracy(preds, labels)


def test_confusion_matrix_matches_sklearn() -> None:
    matrix = confusion_matrix(PREDS, LABELS, 4)
    assert matrix.shape == (4, 4) and matrix.dtype == np.int64
    expected = sk_confusion_matrix(LABELS, PREDS, labels=[0, 1, 2, 3])
    assert np.array_equal(matrix, expected)
    assert matrix[2, 1] == 1  # one "2" predicted as "1"


@pytest.mark.parametrize(
    ("preds", "labels", "message"),
    [
        ([0, 3], [0, 1], r"preds outside 0\.\.2: \[3\]"),
        ([0, 1], [0, 5], r"labels outside 0\.\.2: \[5\]"),
        ([-1, 1], [0, 1], r"preds outside 0\.\.2: \[-1\]"),
    ],
)
def test_confusion_matrix_out_of_range(preds: list[int], labels: list[int], message: str) -> None:
    with pytest.raises(DataError, match=message):
        confusion_matrix(preds, labels, 3)
    with pytest.raises(DataError, match=message):
        per_class_accuracy(preds, labels, 3)


def test_confusion_matrix_bad_num_classes() -> None:
    with pytest.raises(DataError, match="num_classes must be >= 1, got 0"):
        confusion_matrix([0], [0], 0)


def test_per_class_accuracy_none_for_absent_classes() -> None:
    result = per_class_accuracy(PREDS, LABELS, 4)
    assert result[0] == pytest.approx(200 / 3)
    assert result[1] == pytest.approx(100.0)
    assert result[2] == pytest.approx(200 / 3)
    assert result[3] is None


def test_mean_per_class_accuracy() -> None:
    expected = 100 * balanced_accuracy_score(LABELS, PREDS)
    assert mean_per_class_accuracy(PREDS, LABELS) == pytest.approx(expected)
    assert mean_per_class_accuracy(PREDS, LABELS, 4) == pytest.approx(expected)  # 3 ignored
    assert mean_per_class_accuracy(torch.tensor(PREDS), torch.tensor(LABELS)) == pytest.approx(
        (200 / 3 + 100 + 200 / 3) / 3
    )


def test_harmonic_mean() -> None:
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(70.0, 70.0) == pytest.approx(70.0)
    assert harmonic_mean(0.0, 90.0) == 0.0
    assert harmonic_mean(90.0, 0.0) == 0.0
    with pytest.raises(DataError, match=r"accuracies must be >= 0, got base=-1\.0, new=5"):
        harmonic_mean(-1.0, 5)


def test_evaluation_result_from_predictions_and_to_dict() -> None:
    names = ["cat", "dog", "eel", "fox"]
    result = EvaluationResult.from_predictions(torch.tensor(PREDS), LABELS, names)
    assert result.accuracy == pytest.approx(75.0)
    assert result.num_samples == 8
    assert result.per_class["dog"] == pytest.approx(100.0)
    assert result.per_class["fox"] is None
    assert result.mean_per_class_accuracy == pytest.approx(
        100 * balanced_accuracy_score(LABELS, PREDS)
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["accuracy"] == pytest.approx(75.0)
    assert data["per_class"] == {
        "cat": pytest.approx(200 / 3),
        "dog": 100.0,
        "eel": pytest.approx(200 / 3),
        "fox": None,
    }
    with pytest.raises(DataError, match=r"labels outside 0\.\.1"):
        EvaluationResult.from_predictions([0, 1, 1], [0, 1, 2], ["a", "b"])
