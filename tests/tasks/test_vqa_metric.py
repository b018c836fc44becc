"""The official VQA accuracy metric on hand-written cases.

Expected values are worked out by hand in the comments from the definition: with the
prediction matching ``m`` of the 10 human answers, leaving out a non-matching human leaves
``m`` matches (``min(1, m / 3)``), leaving out a matching one leaves ``m - 1``; the
accuracy is the mean over the 10 leave-one-out subsets.
"""

from __future__ import annotations

import json

import pytest

from mobilevt.tasks.vqa import evaluate_vqa, normalize_answer, vqa_accuracy


def _humans(matching: int, answer: str = "2", other: str = "3") -> list[str]:
    return [answer] * matching + [other] * (10 - matching)


@pytest.mark.parametrize(
    ("matching", "expected"),
    [
        (0, 0.0),
        # 9 subsets with 1 match (1/3) + 1 subset with 0: 9/3 / 10 = 0.3
        (1, 0.3),
        # 8 subsets with 2 matches (2/3) + 2 with 1 (1/3): (16/3 + 2/3) / 10 = 0.6
        (2, 0.6),
        # 7 subsets with 3 matches (1) + 3 with 2 (2/3): (7 + 2) / 10 = 0.9, not 1.0
        (3, 0.9),
        # 6 subsets with 4 matches (1) + 4 with 3 (1): 1.0
        (4, 1.0),
        (10, 1.0),
    ],
)
def test_leave_one_out_average_by_hand(matching, expected):
    assert vqa_accuracy("2", _humans(matching)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Two", "2"),  # lowercased, number word to digit
        ("none", "0"),
        ("a dog.", "dog"),  # article dropped, final period removed
        ("The Red Car", "red car"),
        ("dont", "don't"),  # contraction restored
        ("yes!", "yes"),  # '!' not next to a space: becomes a space, then trimmed
        ("yes !", "yes"),  # next to a space: removed
        ("3.5", "3.5"),  # a period before a digit is a decimal point and stays
        (".5 of it.", ".5 of it"),
        ("1,000", "1000"),  # a digit,digit comma: every punctuation mark is removed
        ("1,000 (about)", "1000 about"),  # ... the parentheses too, though no space is beside them
        ("black/white", "black white"),  # no space around '/': it becomes a space
        ("black / white", "black white"),
        ("t-shirt", "t shirt"),
        # the test reads the original text: one '-' beside a space removes every '-'
        ("t-shirt - red", "tshirt red"),
        ("  on\tthe\ntable ", "on table"),  # tabs/newlines to spaces, articles dropped
        ("man's", "man's"),  # apostrophes are not punctuation for the metric
        ("an apple", "apple"),
        ("ten", "10"),
        ("eleven", "eleven"),  # the table stops at ten
        ("hes here", "he's here"),
        # the script's table maps "Im" -> "I'm", but it lowercases first, so its
        # capitalised keys never match
        ("Im", "im"),
        # re.UNICODE passed where re.sub takes its count: at most 32 periods go
        ("wow" + "." * 33, "wow."),
        ("wow" + "." * 32, "wow"),
    ],
)
def test_answer_normalisation_by_hand(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_prediction_is_normalised_when_humans_disagree():
    humans = ["2"] * 4 + ["3"] * 6
    # "Two." normalises to "2": 4 matches -> 1.0
    assert vqa_accuracy("Two.", humans) == pytest.approx(1.0)
    # "a dog." -> "dog": 1 of 10 humans -> 0.3
    assert vqa_accuracy("a dog.", ["dog"] + ["cat"] * 9) == pytest.approx(0.3)


def test_unanimous_humans_are_compared_as_written():
    # 2021: no normalisation at all when the humans agree, of them or of the prediction
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0
    assert vqa_accuracy("yes.", ["yes"] * 10) == 0.0
    assert vqa_accuracy("two", ["two"] * 10) == 1.0
    assert vqa_accuracy("two", ["2"] * 10) == 0.0
    # ... but newlines and tabs become spaces and both sides are trimmed, before the
    # humans are found to agree
    assert vqa_accuracy(" yes\n", ["yes", "yes\t"] * 5) == 1.0
    # pre-2021: the prediction is always normalised, unanimous humans never
    assert vqa_accuracy("Yes", ["yes"] * 10, version="pre-2021") == 1.0
    assert vqa_accuracy("two", ["two"] * 10, version="pre-2021") == 0.0
    assert vqa_accuracy("two", ["2"] * 10, version="pre-2021") == 1.0
    # ... and the humans' whitespace is not cleaned: "yes\t" differs from "yes", so they
    # disagree, get punctuation processing only (which keeps the tab), and 5 match
    assert vqa_accuracy("yes", ["yes", "yes\t"] * 5, version="pre-2021") == 1.0
    assert vqa_accuracy("yes", ["yes"] + ["yes\t"] * 9, version="pre-2021") == pytest.approx(0.3)


def test_disagreeing_humans_are_normalised_fully_since_2021():
    humans = ["yes."] * 3 + ["Yes!"] * 2 + ["no"] * 5
    # 2021: "yes." -> "yes", "Yes!" -> "Yes " -> "yes": 5 matches -> 1.0
    assert vqa_accuracy("yes", humans) == 1.0
    # pre-2021: punctuation only: "yes." -> "yes" matches, "Yes " does not: 3 -> 0.9
    assert vqa_accuracy("yes", humans, version="pre-2021") == pytest.approx(0.9)
    # number words and articles of the humans: "two" and "the 2" become "2" since 2021
    numbers = ["two"] * 2 + ["the 2"] + ["3"] * 7
    assert vqa_accuracy("2", numbers) == pytest.approx(0.9)
    assert vqa_accuracy("2", numbers, version="pre-2021") == 0.0
    # the prediction is normalised the same way in both
    assert vqa_accuracy("Three", numbers) == 1.0 and vqa_accuracy("Three", numbers, version="pre-2021") == 1.0


def test_leave_one_out_is_by_answer_record():
    # The script leaves out a human answer by dict inequality: answers with their own
    # answer_id leave out one each; identical dicts leave each other out, all at once.
    with_ids = [{"answer": "yes", "answer_confidence": "yes", "answer_id": i} for i in range(1, 11)]
    assert vqa_accuracy("yes", with_ids) == 1.0
    assert vqa_accuracy("yes", [{"answer": "yes"}] * 10) == 0.0
    # 3 identical "2" records: leaving out any of them leaves 0 matches, another record 3
    records = [{"answer": "2"}] * 3 + [{"answer": "3", "answer_id": i} for i in range(7)]
    assert vqa_accuracy("2", records) == pytest.approx(0.7)
    assert vqa_accuracy("2", ["2"] * 3 + ["3"] * 7) == pytest.approx(0.9)  # strings: distinct answers


def test_bad_arguments_are_clear():
    with pytest.raises(TypeError, match="list of the humans' answer strings"):
        vqa_accuracy("yes", "yes")
    with pytest.raises(ValueError, match="at least one human answer"):
        vqa_accuracy("yes", [])
    with pytest.raises(TypeError, match="a string or a dict with an 'answer' string"):
        vqa_accuracy("yes", [3])
    with pytest.raises(ValueError, match="unknown VQA evaluator version '2017'; choose one of 2021, pre-2021"):
        vqa_accuracy("yes", ["yes"], version="2017")


def _annotation(question_id: int, answers: list[str], answer_type: str, question_type: str) -> dict:
    return {
        "question_id": question_id,
        "image_id": 1,
        "answer_type": answer_type,
        "question_type": question_type,
        "multiple_choice_answer": answers[0],
        "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)],
    }


@pytest.fixture
def annotations_file(tmp_path):
    data = {
        "info": {},
        "data_type": "mscoco",
        "data_subtype": "val2014",
        "license": {},
        "annotations": [
            _annotation(1, ["yes"] * 10, "yes/no", "is the"),
            _annotation(2, ["2"] * 3 + ["3"] * 7, "number", "how many"),
            _annotation(3, ["red"] * 2 + ["dark red"] * 8, "other", "what color is the"),
            _annotation(4, ["no"] * 9 + ["yes"], "yes/no", "is the"),
        ],
    }
    path = tmp_path / "v2_mscoco_val2014_annotations.json"
    path.write_text(json.dumps(data))
    return path


def test_evaluate_overall_and_per_answer_type_by_hand(annotations_file, tmp_path):
    predictions = {1: "yes", 2: "two", 3: "red", 4: "Yes"}
    # q1: unanimous "yes", 10 matches -> 1.0      q2: "two" -> "2", 3 matches -> 0.9
    # q3: "red", 2 matches -> 0.6                 q4: "Yes" -> "yes", 1 match -> 0.3
    result = evaluate_vqa(predictions, annotations_file)
    assert result.num_questions == 4
    assert result.per_question == pytest.approx({1: 1.0, 2: 0.9, 3: 0.6, 4: 0.3})
    assert result.accuracy == pytest.approx((1.0 + 0.9 + 0.6 + 0.3) / 4)  # 0.7
    assert result.per_answer_type == pytest.approx({"yes/no": (1.0 + 0.3) / 2, "number": 0.9, "other": 0.6})
    assert result.per_question_type == pytest.approx({"is the": 0.65, "how many": 0.9, "what color is the": 0.6})
    # the official results-file format gives the same
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"question_id": q, "answer": a} for q, a in predictions.items()]))
    assert evaluate_vqa(str(results), str(annotations_file)).accuracy == pytest.approx(0.7)
    # q1 answered "Yes": compared as written against unanimous humans since 2021
    assert evaluate_vqa({**predictions, 1: "Yes"}, annotations_file).per_question[1] == 0.0
    assert evaluate_vqa({**predictions, 1: "Yes"}, annotations_file, version="pre-2021").per_question[1] == 1.0


def test_evaluate_refuses_missing_and_unknown_questions(annotations_file):
    with pytest.raises(ValueError, match="1 of 4 annotated questions have no prediction.*require_all=False"):
        evaluate_vqa({1: "yes", 2: "2", 3: "red"}, annotations_file)
    subset = evaluate_vqa({1: "yes", 2: "2", 3: "red"}, annotations_file, require_all=False)
    assert subset.num_questions == 3 and subset.accuracy == pytest.approx((1.0 + 0.9 + 0.6) / 3)
    with pytest.raises(ValueError, match="1 predicted question ids are not in the annotations"):
        evaluate_vqa({1: "yes", 2: "2", 3: "red", 4: "no", 99: "x"}, annotations_file)


def test_evaluate_refuses_a_questions_file(tmp_path):
    questions = tmp_path / "questions.json"
    questions.write_text(json.dumps({"questions": [{"question_id": 1, "question": "What?"}]}))
    with pytest.raises(ValueError, match='expected a VQAv2 annotations JSON with an "annotations" list'):
        evaluate_vqa({1: "yes"}, questions)
