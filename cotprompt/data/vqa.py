"""Visual question answering data: questions about images with human answers, the VQAv2 reader,
answer normalisation and the answer vocabulary.

VQAv2 files: questions ``{"questions": [{"image_id", "question", "question_id"}]}`` and
annotations ``{"annotations": [{"question_id", "image_id", "answers": [{"answer"}] x 10,
"multiple_choice_answer"}]}``; image files are named by a pattern such as COCO's
``COCO_{split}_{image_id:012d}.jpg``.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cotprompt.data.records import ImageRecord, Transform
from cotprompt.data.task_io import MissingImages, read_json, report_missing, require
from cotprompt.errors import DataError

logger = logging.getLogger("cotprompt.tasks.vqa_data")  # the logger name it has always had

COCO_PATTERN = "COCO_{split}_{image_id:012d}.jpg"
DEFAULT_NUM_ANSWERS = 1000

_NUMBERS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(r"[;/\[\]\"{}()=+\\_\-><@`,?!*#%^&$~|:]")
_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")


def normalize_answer(answer: str) -> str:
    """A subset of the official VQA answer processing: lower case, punctuation removed (periods
    kept inside numbers), number words to digits, articles dropped, white space collapsed."""
    text = str(answer).lower().replace("\n", " ").replace("\t", " ").strip()
    text = _PERIOD.sub("", _PUNCT.sub(" ", text.replace("'", "")))
    words = [_NUMBERS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(words)


@dataclass(frozen=True)
class VQAQuestion:
    """One question about one image.

    Attributes:
        question_id: The dataset's id.
        image: Index of the image in the dataset's ``images``.
        question: The question text.
        answers: The human answers (ten in VQAv2), normalised; empty when unannotated.
        answer: The reference answer (VQAv2's ``multiple_choice_answer``, else the most common
            human answer), or ``None`` when unannotated.
    """

    question_id: int | str
    image: int
    question: str
    answers: tuple[str, ...] = ()
    answer: str | None = None


class VQADataset:
    """Questions about images; several questions may share an image (encoded once).

    Args:
        images: The images (files or in-memory).
        questions: The questions, each pointing at an image by index.
        transform: Optional callable applied to each RGB image.

    Raises:
        DataError: No images or questions, a question with an out-of-range image or a blank
            question text.
    """

    def __init__(
        self,
        images: Sequence[ImageRecord],
        questions: Sequence[VQAQuestion],
        transform: Transform | None = None,
    ) -> None:
        self.images: list[ImageRecord] = list(images)
        self.questions: list[VQAQuestion] = list(questions)
        self.transform = transform
        if not self.images or not self.questions:
            raise DataError(
                f"a VQA dataset needs images and questions; got {len(self.images)} image(s) "
                f"and {len(self.questions)} question(s)"
            )
        for q in self.questions:
            if not 0 <= q.image < len(self.images):
                raise DataError(f"question {q.question_id!r} points at image {q.image}, "
                                f"outside 0..{len(self.images) - 1}")
            if not q.question.strip():
                raise DataError(f"question {q.question_id!r} has a blank text")

    def __len__(self) -> int:
        return len(self.questions)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self.questions)} questions, {len(self.images)} "
                f"images, transform={self.transform!r})")

    @property
    def annotated(self) -> bool:
        """True when every question has human answers (needed for training and evaluation)."""
        return all(q.answers for q in self.questions)

    def with_transform(self, transform: Transform | None) -> VQADataset:
        """A copy sharing images and questions, with another transform."""
        return VQADataset(self.images, self.questions, transform)

    def subset(self, indices: Sequence[int]) -> VQADataset:
        """The questions at ``indices`` (and only the images they use)."""
        idx = [int(i) for i in indices]
        if not idx:
            raise DataError("subset needs at least one index; got none")
        bad = [i for i in idx if not 0 <= i < len(self.questions)]
        if bad:
            raise DataError(f"subset indices out of range for {len(self.questions)} questions: "
                            f"{bad[:10]}")
        chosen = [self.questions[i] for i in idx]
        remap: dict[int, int] = {}
        for q in chosen:
            remap.setdefault(q.image, len(remap))
        images = [self.images[old] for old in remap]
        questions = [
            VQAQuestion(q.question_id, remap[q.image], q.question, q.answers, q.answer)
            for q in chosen
        ]
        return VQADataset(images, questions, self.transform)

    def fraction(self, fraction: float, seed: int = 1) -> VQADataset:
        """A random ``fraction`` of the questions (at least one), the same for the same seed."""
        if not 0 < fraction <= 1:
            raise DataError(f"fraction must be in (0, 1], got {fraction}")
        count = max(1, round(fraction * len(self.questions)))
        return self.subset(sorted(random.Random(seed).sample(range(len(self.questions)), count)))

    def answer_vocabulary(self, num_answers: int = DEFAULT_NUM_ANSWERS) -> list[str]:
        """The ``num_answers`` most frequent reference answers (ties: alphabetical).

        Raises:
            DataError: ``num_answers < 1`` or no annotated question (an empty vocabulary).
        """
        if num_answers < 1:
            raise DataError(f"the answer vocabulary needs num_answers >= 1, got {num_answers}")
        counts = Counter(q.answer for q in self.questions if q.answer)
        if not counts:
            raise DataError(
                "cannot build an answer vocabulary: no question has a reference answer "
                "(annotations missing?)"
            )
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        vocabulary = [answer for answer, _ in ranked[:num_answers]]
        covered = sum(counts[a] for a in vocabulary)
        logger.info(
            "answer vocabulary: %d answers cover %d of %d annotated questions (%.1f%%)",
            len(vocabulary), covered, sum(counts.values()), 100 * covered / sum(counts.values()),
        )
        return vocabulary


def _reference(answers: Sequence[str], given: object, clean: Callable[[str], str]) -> str | None:
    if isinstance(given, str) and clean(given):
        return clean(given)
    if not answers:
        return None
    counts = Counter(answers)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[0][0]


def _is_id(value: object) -> bool:
    """An id in a JSON file: a string or an integer."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _strip(answer: str) -> str:
    return str(answer).strip()


def from_vqa_json(
    questions_file: str | Path,
    annotations_file: str | Path | None,
    image_root: str | Path,
    *,
    image_pattern: str = COCO_PATTERN,
    split: str | None = None,
    normalize: bool = True,
    missing_images: MissingImages = "error",
) -> VQADataset:
    """Read VQAv2 question (and annotation) files.

    Args:
        questions_file: ``v2_OpenEnded_mscoco_val2014_questions.json``...
        annotations_file: ``v2_mscoco_val2014_annotations.json``...; ``None`` for unannotated
            questions (prediction only).
        image_root: Folder of the images.
        image_pattern: File name of an image from ``{image_id}`` and ``{split}``.
        split: Value of ``{split}``; default: the questions file's ``data_subtype``
            (``val2014``...).
        normalize: Apply :func:`normalize_answer` to the human answers.
        missing_images: ``error`` (default) or ``skip`` (drops their questions, with a warning).

    Raises:
        DataError: Unreadable or malformed files, questions without annotations, missing images.
    """
    qwhere = f"VQA questions file {str(questions_file)!r}"
    data = read_json(questions_file, "VQA questions file")
    raw_questions = require(data, "questions", qwhere)
    if not isinstance(raw_questions, list) or not raw_questions:
        raise DataError(f"{qwhere}: 'questions' must be a non-empty list")
    split = split if split is not None else data.get("data_subtype")
    if split is not None and not isinstance(split, str):
        raise DataError(f"{qwhere}: 'data_subtype' must be a string, got {split!r}")
    annotations: dict[object, dict] = {}
    if annotations_file is not None:
        awhere = f"VQA annotations file {str(annotations_file)!r}"
        raw = require(read_json(annotations_file, "VQA annotations file"), "annotations", awhere)
        if not isinstance(raw, list):
            raise DataError(f"{awhere}: 'annotations' must be a list")
        for n, ann in enumerate(raw):
            question_id = require(ann, "question_id", f"{awhere}, annotations[{n}]")
            if not _is_id(question_id):
                raise DataError(f"{awhere}, annotations[{n}]: 'question_id' must be a number or "
                                f"string, got {question_id!r}")
            given = require(ann, "answers", f"{awhere}, annotations[{n}]")
            if not isinstance(given, list):
                raise DataError(f"{awhere}, annotations[{n}]: 'answers' must be a list, "
                                f"got {given!r}")
            for m, answer in enumerate(given):
                text = require(answer, "answer", f"{awhere}, annotations[{n}].answers[{m}]")
                if not isinstance(text, (str, int, float)) or isinstance(text, bool):
                    raise DataError(f"{awhere}, annotations[{n}].answers[{m}]: 'answer' must be "
                                    f"a string, got {text!r}")
            annotations[question_id] = ann
    clean: Callable[[str], str] = normalize_answer if normalize else _strip
    image_index: dict[object, int] = {}
    paths: list[Path] = []
    questions: list[VQAQuestion] = []
    unannotated = 0
    for n, raw_q in enumerate(raw_questions):
        where = f"{qwhere}, questions[{n}]"
        image_id = require(raw_q, "image_id", where)
        question_id = require(raw_q, "question_id", where)
        text = require(raw_q, "question", where)
        for key, value in (("image_id", image_id), ("question_id", question_id)):
            if not _is_id(value):
                raise DataError(f"{where}: {key!r} must be a number or string, got {value!r}")
        if not isinstance(text, str):
            raise DataError(f"{where}: 'question' must be a string, got {text!r}")
        text = text.strip()
        if image_id not in image_index:
            try:
                name = image_pattern.format(image_id=image_id, split=split)
            except (KeyError, ValueError, IndexError) as exc:
                raise DataError(f"image_pattern {image_pattern!r} cannot name image {image_id!r}"
                                f" (split {split!r}): {exc!r}") from exc
            image_index[image_id] = len(paths)
            paths.append(Path(image_root) / name)
        answers: tuple[str, ...] = ()
        reference = None
        if annotations_file is not None:
            ann = annotations.get(question_id)
            if ann is None:
                unannotated += 1
                continue
            answers = tuple(a for a in (clean(x["answer"]) for x in ann["answers"]) if a)
            reference = _reference(answers, ann.get("multiple_choice_answer"), clean)
        questions.append(VQAQuestion(question_id, image_index[image_id], text, answers, reference))
    if unannotated:
        raise DataError(f"{unannotated} question(s) of {qwhere} have no annotation in "
                        f"{str(annotations_file)!r}; are the files of the same split?")
    drop = report_missing(paths, missing_images, qwhere)
    if drop:
        before = len(questions)
        questions = [q for q in questions if q.image not in drop]
        logger.warning("%s: %d question(s) dropped with their missing images",
                       qwhere, before - len(questions))
        if not questions:
            raise DataError(f"{qwhere}: no questions left")
    dataset = VQADataset([ImageRecord(p, 0) for p in paths], questions)
    return dataset.subset(range(len(dataset))) if drop else dataset
