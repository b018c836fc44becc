"""The official VQA accuracy (GT-Vision-Lab/VQA, ``PythonEvaluationTools/vqaEvaluation/vqaEval.py``),
reimplemented with its quirks, so that a number computed here is the number the official
script prints for the same predictions.

Two versions of the script are in use:

- ``"2021"`` (the default): the script since its March 2021 commit "Fixed processing answers
  bug". When the humans of a question all gave the same answer, that answer and the
  prediction are compared as written (newlines and tabs made spaces, trimmed; no
  lowercasing). When they disagree, the human answers *and* the prediction are normalised
  alike: punctuation, then lowercase, number words to digits, articles dropped,
  apostrophe-less contractions restored.
- ``"pre-2021"``: the script the VQA v1/v2 papers of 2015-2020 were scored with. The
  prediction is always normalised fully; the human answers are used exactly as written when
  they agree, and only their punctuation is processed when they disagree.

In both, a prediction scores ``min(1, matching humans / 3)`` against each leave-one-out
subset of the human answers, averaged over the subsets. The script leaves out an answer by
dictionary inequality, so answers given as dictionaries that are equal (same text, id and
confidence) leave each other out; the annotation files give every answer its own
``answer_id``, and plain strings are treated as distinct answers.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError

__all__ = ["EVALUATOR_VERSIONS", "VqaEvaluation", "evaluate_vqa", "normalize_answer", "vqa_accuracy"]

EVALUATOR_VERSIONS = ("2021", "pre-2021")

# The evaluation script's tables (GT-Vision-Lab/VQA, vqaEval.py): spelled-out digits,
# articles, and contractions written without their apostrophe.
_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
_CONTRACTIONS = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}
# Apostrophes and colons are kept; periods are handled separately (decimal points survive).
_PUNCTUATION = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# The script's pattern "(?!<=\d)(\.)(?!\d)" has a mistyped look-behind that is a look-ahead
# which never fails at a period, so it removes periods not followed by a digit; it passes
# re.UNICODE (32) where re.sub takes its count, so it removes at most 32 of them.
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
_PERIODS_REMOVED_AT_MOST = 32


def _process_punctuation(text: str) -> str:
    """The script's ``processPunctuation``: a mark next to a space (or any mark in a text
    holding a digit,digit comma) is removed, otherwise it becomes a space; then up to 32
    periods not followed by a digit are removed. Nothing is trimmed."""
    out = text
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in _PUNCTUATION:
        # the test reads the original text, the replacement the running one, as the script does
        if mark + " " in text or " " + mark in text or has_digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_PERIODS_REMOVED_AT_MOST)


def _process_digit_article(text: str) -> str:
    """The script's ``processDigitArticle``: lowercase, number words to digits, articles
    dropped, apostrophe-less contractions restored, words joined by single spaces."""
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES]
    return " ".join(words)


def _clean_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(answer: str) -> str:
    """An answer as the official script normalises it (the prediction always, before 2021;
    prediction and human answers when the humans disagree, since): newlines and tabs to
    spaces, trimmed, punctuation handled, lowercased, number words to digits, articles
    removed, contractions fixed (``"Two"`` -> ``"2"``, ``"a dog."`` -> ``"dog"``,
    ``"dont"`` -> ``"don't"``, ``"yes!"`` -> ``"yes"``)."""
    return _process_digit_article(_process_punctuation(_clean_whitespace(answer)))


def _answer_records(human_answers: Sequence[str | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The human answers as the script's answer dictionaries (copies: the script rewrites
    them in place, this does not)."""
    if isinstance(human_answers, (str, Mapping)):
        raise TypeError("human_answers must be a list of the humans' answer strings (or answer dicts), not one")
    if len(human_answers) == 0:
        raise InvalidInputError("vqa_accuracy needs at least one human answer")
    records = []
    for position, answer in enumerate(human_answers):
        if isinstance(answer, str):
            records.append({"answer": answer, "_position": position})  # distinct, as distinct answer ids are
        elif isinstance(answer, Mapping) and isinstance(answer.get("answer"), str):
            records.append(dict(answer))
        else:
            raise TypeError(f"a human answer must be a string or a dict with an 'answer' string, got {answer!r}")
    return records


def vqa_accuracy(
    predicted: str,
    human_answers: Sequence[str | Mapping[str, Any]],
    *,
    version: str = "2021",
) -> float:
    """The official VQA accuracy of ``predicted`` against the human answers of one question
    (10 in VQA v1/v2), in [0, 1], as the official script computes it (``version``: ``"2021"``,
    the current script, or ``"pre-2021"``; see the module docstring).

    With 10 distinct human answers of which ``m`` match: 0.3 for one, 0.6 for two, 0.9 for
    three, 1.0 from four on (``min(1, matches / 3)`` averaged over the leave-one-out subsets).
    ``human_answers``: strings, or the annotation file's answer dicts (``{"answer": ...,
    "answer_id": ...}``).
    """
    if version not in EVALUATOR_VERSIONS:
        raise InvalidInputError(
            f"unknown VQA evaluator version {version!r}; choose one of {', '.join(EVALUATOR_VERSIONS)}"
        )
    records = _answer_records(human_answers)
    prediction = _clean_whitespace(predicted)
    if version == "2021":
        for record in records:
            record["answer"] = _clean_whitespace(record["answer"])
        if len({record["answer"] for record in records}) > 1:
            for record in records:
                record["answer"] = _process_digit_article(_process_punctuation(record["answer"]))
            prediction = _process_digit_article(_process_punctuation(prediction))
    else:
        prediction = _process_digit_article(_process_punctuation(prediction))
        if len({record["answer"] for record in records}) > 1:
            for record in records:
                record["answer"] = _process_punctuation(record["answer"])
    scores = []
    for left_out in records:
        matching = sum(1 for other in records if other != left_out and other["answer"] == prediction)
        scores.append(min(1.0, matching / 3.0))
    return sum(scores) / len(scores)


@dataclass
class VqaEvaluation:
    """Official VQA accuracy (fractions in [0, 1]; the script prints 100x these)."""

    accuracy: float
    per_answer_type: dict[str, float]
    per_question_type: dict[str, float]
    num_questions: int
    per_question: dict[int, float] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "per_answer_type": self.per_answer_type,
            "per_question_type": self.per_question_type,
            "num_questions": self.num_questions,
        }


def evaluate_vqa(
    predictions: Mapping[int, str] | Sequence[Mapping[str, Any]] | str | os.PathLike,
    annotations_file: str | os.PathLike | Mapping[str, Any],
    require_all: bool = True,
    version: str = "2021",
) -> VqaEvaluation:
    """VQA accuracy of ``predictions`` on a VQAv2-format annotations file.

    Args:
        predictions: ``{question_id: answer}``, the official results list
            ``[{"question_id": ..., "answer": ...}]``, or a JSON file holding either.
        annotations_file: a VQAv2 annotations JSON (``{"annotations": [{"question_id",
            "answers": [{"answer": ...} x 10], "answer_type", "question_type"}, ...]}``), or
            that object already loaded.
        require_all: every annotated question must have a prediction (as the official
            script requires); ``False`` evaluates the predicted questions only.
        version: the official script's version, ``"2021"`` (current) or ``"pre-2021"``
            (as the papers before 2021 were scored; see :mod:`mobilevt.tasks.vqa_metric`).
    """
    if version not in EVALUATOR_VERSIONS:
        raise InvalidInputError(
            f"unknown VQA evaluator version {version!r}; choose one of {', '.join(EVALUATOR_VERSIONS)}"
        )
    predicted = _load_predictions(predictions)
    annotations = _load_annotations(annotations_file)
    unknown = sorted(set(predicted) - set(annotations))
    if unknown:
        raise InvalidInputError(
            f"{len(unknown)} predicted question ids are not in the annotations (first: {unknown[:5]}); "
            "are the predictions for another split?"
        )
    missing = [qid for qid in annotations if qid not in predicted]
    if missing and require_all:
        raise InvalidInputError(
            f"{len(missing)} of {len(annotations)} annotated questions have no prediction (first: {missing[:5]}); "
            "predict them all or pass require_all=False to evaluate a subset"
        )
    per_question: dict[int, float] = {}
    by_answer_type: dict[str, list[float]] = defaultdict(list)
    by_question_type: dict[str, list[float]] = defaultdict(list)
    for qid, answer in predicted.items():
        record = annotations[qid]
        score = vqa_accuracy(answer, record["answers"], version=version)
        per_question[qid] = score
        by_answer_type[str(record.get("answer_type", "unknown"))].append(score)
        by_question_type[str(record.get("question_type", "unknown"))].append(score)
    if not per_question:
        raise InvalidInputError("no predictions to evaluate")
    return VqaEvaluation(
        accuracy=sum(per_question.values()) / len(per_question),
        per_answer_type={key: sum(v) / len(v) for key, v in sorted(by_answer_type.items())},
        per_question_type={key: sum(v) / len(v) for key, v in sorted(by_question_type.items())},
        num_questions=len(per_question),
        per_question=per_question,
    )


def _read_json(path: str | os.PathLike, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path} is not a JSON file ({exc})") from None


def _load_predictions(predictions: Any) -> dict[int, str]:
    if isinstance(predictions, (str, os.PathLike)):
        predictions = _read_json(predictions, "predictions")
    if isinstance(predictions, Mapping):
        return {int(qid): str(answer) for qid, answer in predictions.items()}
    result: dict[int, str] = {}
    for item in predictions:
        if not isinstance(item, Mapping) or "question_id" not in item or "answer" not in item:
            raise InvalidInputError(
                'predictions must be {question_id: answer} or a list of {"question_id": ..., "answer": ...}, got '
                f"an item {item!r}"
            )
        result[int(item["question_id"])] = str(item["answer"])
    return result


def _load_annotations(annotations: Any) -> dict[int, Mapping[str, Any]]:
    source = "annotations"
    if isinstance(annotations, (str, os.PathLike)):
        source = str(annotations)
        annotations = _read_json(annotations, "annotations")
    records = annotations.get("annotations") if isinstance(annotations, Mapping) else None
    if not isinstance(records, list):
        raise InvalidInputError(
            f'{source}: expected a VQAv2 annotations JSON with an "annotations" list (e.g. '
            "v2_mscoco_val2014_annotations.json), not the questions file or results"
        )
    by_id: dict[int, Mapping[str, Any]] = {}
    for record in records:
        if "question_id" not in record or not record.get("answers"):
            raise InvalidInputError(f'{source}: an annotation without "question_id" or "answers": {str(record)[:200]}')
        by_id[int(record["question_id"])] = record
    return by_id
