"""The package passes mypy with the ``[tool.mypy]`` options of pyproject.toml, and a user's code
type-checks against it: the README quickstart's ``pipeline.evaluate(test).accuracy``, the
result types of retrieval and VQA evaluation, the top-level imports (issue 15).

mypy is in the ``test`` extra. Without it these tests skip, except on CI (``CI`` set), where
they fail. Both runs share mypy's cache (``.mypy_cache`` of the repository, as a plain ``mypy``
run there): a cold run takes about 40 s, a warm one a few seconds.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: A user's script: each ``assert_type`` is an error when the type differs (or is ``Any``).
USER_SCRIPT = """
    from typing_extensions import assert_type

    from cotprompt import CoTPipeline
    from cotprompt.data import ImageClassificationDataset, few_shot, from_folder
    from cotprompt.evaluation import EvaluationResult
    from cotprompt.tasks import RetrievalDataset, RetrievalResult, VQADataset, VQAResult

    train = few_shot(from_folder("data/pets/train"), shots=16, seed=1)
    test = from_folder("data/pets/test")
    pipeline = CoTPipeline.for_method("cotpt", model_name="ViT-B-16", pretrained="openai")
    assert_type(pipeline, CoTPipeline)
    pipeline.fit(train)
    result = pipeline.evaluate(test, split="test")
    assert_type(result, EvaluationResult)
    accuracy: float = result.accuracy
    print(pipeline.evaluate(test, zero_shot=True).accuracy)


    def retrieval(pipeline: CoTPipeline, gallery: RetrievalDataset) -> None:
        assert_type(pipeline.evaluate(gallery, batch_size=32), RetrievalResult)


    def vqa(pipeline: CoTPipeline, questions: VQADataset) -> None:
        assert_type(pipeline.evaluate(questions), VQAResult)


    def either(pipeline: CoTPipeline,
               data: ImageClassificationDataset | RetrievalDataset) -> None:
        assert_type(pipeline.evaluate(data), EvaluationResult | RetrievalResult)
"""


def _mypy(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m mypy`` in the repository root, with its pyproject.toml options."""
    if importlib.util.find_spec("mypy") is None:
        if os.environ.get("CI"):
            pytest.fail("mypy is not installed; it is in the test extra: pip install -e '.[test]'")
        pytest.skip("mypy is not installed (pip install -e '.[test]')")
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--no-pretty", "--no-error-summary", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


def _errors(run: subprocess.CompletedProcess[str], path: Path | None = None) -> list[str]:
    """mypy's error lines (of ``path`` only, when given: the package's have their own test)."""
    return [line for line in run.stdout.splitlines()
            if ": error:" in line and (path is None or line.startswith(str(path)))]


def test_the_package_passes_mypy():
    run = _mypy()  # the files of [tool.mypy]: the package
    errors = _errors(run)
    assert not errors, f"{len(errors)} mypy errors:\n" + "\n".join(errors)
    assert run.returncode == 0, run.stdout + run.stderr


def test_user_code_type_checks_against_the_package(tmp_path):
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(USER_SCRIPT), encoding="utf-8")
    run = _mypy(str(script))
    errors = _errors(run, script)
    assert not errors, "\n".join(errors)
    assert run.returncode in (0, 1) and not run.stderr, run.stdout + run.stderr


def test_mypy_reports_a_misused_result(tmp_path):
    """The check above can fail: a retrieval result has no accuracy, and mypy says so."""
    script = tmp_path / "wrong.py"
    script.write_text(textwrap.dedent("""
        from cotprompt import CoTPipeline
        from cotprompt.tasks import RetrievalDataset


        def wrong(pipeline: CoTPipeline, gallery: RetrievalDataset) -> float:
            return pipeline.evaluate(gallery).accuracy
    """), encoding="utf-8")
    errors = _errors(_mypy(str(script)), script)
    assert len(errors) == 1 and "wrong.py:7" in errors[0] and "accuracy" in errors[0], errors
