"""Official VQA accuracy (2021 behaviour): one case per rule, written by hand, plus the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vqa.evaluation.metrics import (
    ScoredQuestion,
    process_digit_article,
    process_punctuation,
    question_accuracy,
    round_half_away,
    vqa_accuracy,
)
from vqa.evaluation.score_files import main


def humans(*counts: tuple[str, int]) -> list[str]:
    answers = [answer for answer, count in counts for _ in range(count)]
    assert len(answers) == 10
    return answers


@pytest.mark.parametrize(
    ("matching_humans", "expected"),
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_leave_one_out_average(matching_humans: int, expected: float) -> None:
    # With m matching humans: leaving out a matching one leaves m-1, leaving out another leaves m;
    # e.g. m=3: (3 * min(1, 2/3) + 7 * min(1, 3/3)) / 10 = 0.9.
    answers = humans(("red", matching_humans), ("blue", 10 - matching_humans)) if matching_humans < 10 else ["red"] * 10
    assert question_accuracy("red", answers) == pytest.approx(expected)


def test_no_normalisation_when_humans_agree() -> None:
    # All ten humans wrote "yes": the prediction is compared as is, so case and articles matter.
    assert question_accuracy("yes", ["yes"] * 10) == 1.0
    assert question_accuracy("Yes", ["yes"] * 10) == 0.0
    assert question_accuracy("two", ["2"] * 10) == 0.0


def test_normalisation_when_humans_disagree() -> None:
    answers = humans(("2", 9), ("3", 1))
    assert question_accuracy("Two", answers) == 1.0  # lowercased, number word to digit
    assert question_accuracy("the 2", answers) == 1.0  # article dropped


def test_whitespace_is_always_normalised() -> None:
    assert question_accuracy("  yes\n", ["yes"] * 10) == 1.0
    assert question_accuracy("red\tcar", ["red car"] * 10) == 1.0


def test_punctuation_rules() -> None:
    assert process_punctuation("hi-fi") == "hi fi"  # a mark between letters becomes a space
    assert process_punctuation("yes !") == "yes "  # a mark next to a space is dropped
    assert process_punctuation("1,000") == "1000"  # digit,digit anywhere: every mark is dropped
    assert process_punctuation("a-b 1,2") == "ab 12"
    assert process_punctuation("dr. who") == "dr who"  # a period not followed by a digit is removed
    assert process_punctuation("3.5") == "3.5"  # a decimal point stays
    assert process_punctuation("it's") == "it's"  # apostrophes are not in the official list
    assert process_punctuation("." * 40) == "." * 8  # the official sub() call removes at most 32


def test_digit_article_contraction_rules() -> None:
    assert process_digit_article("The Three dogs") == "3 dogs"
    assert process_digit_article("none") == "0"
    assert process_digit_article("an apple") == "apple"
    assert process_digit_article("dont  know") == "don't know"
    assert process_digit_article("Im") == "im"  # lowercased first, so the map's capitalised keys never match


def test_contraction_match_through_normalisation() -> None:
    answers = humans(("don't know", 5), ("no idea", 5))
    assert question_accuracy("dont know", answers) == 1.0


def test_rounding_is_python2_half_away_from_zero() -> None:
    assert round_half_away(0.125) == 0.13  # Python 3's round gives 0.12
    assert round_half_away(2.675) == 2.67  # 2.675 is 2.67499999... in binary: both agree
    assert round_half_away(66.666666) == 66.67


def test_per_type_breakdown() -> None:
    questions = [
        ScoredQuestion(1, "yes", ["yes"] * 10, "yes/no", "is the"),
        ScoredQuestion(2, "no", ["yes"] * 10, "yes/no", "is the"),
        ScoredQuestion(3, "red", humans(("red", 3), ("blue", 7)), "other", "what color"),
    ]
    accuracy = vqa_accuracy(questions)
    assert accuracy["overall"] == 63.33  # (1 + 0 + 0.9) / 3
    assert accuracy["perAnswerType"] == {"yes/no": 50.0, "other": 90.0}
    assert accuracy["perQuestionType"] == {"is the": 50.0, "what color": 90.0}


@pytest.fixture
def official_files(tmp_path: Path) -> dict[str, Path]:
    questions = [{"image_id": 1, "question": f"q{qid}?", "question_id": qid} for qid in (10, 11, 12)]
    annotations = [
        {
            "question_id": qid,
            "image_id": 1,
            "question_type": question_type,
            "answer_type": answer_type,
            "multiple_choice_answer": answers[0],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)],
        }
        for qid, answers, answer_type, question_type in (
            (10, ["yes"] * 10, "yes/no", "is this"),
            (11, humans(("2", 4), ("3", 6)), "number", "how many"),
            (12, humans(("red", 2), ("dark red", 8)), "other", "what color"),
        )
    ]
    paths = {name: tmp_path / f"{name}.json" for name in ("questions", "annotations", "results")}
    paths["questions"].write_text(json.dumps({"questions": questions}))
    paths["annotations"].write_text(json.dumps({"annotations": annotations}))
    results = [
        {"question_id": 10, "answer": "yes"},
        {"question_id": 11, "answer": "two"},
        {"question_id": 12, "answer": "red"},
    ]
    paths["results"].write_text(json.dumps(results))
    return paths


def cli_args(paths: dict[str, Path]) -> list[str]:
    return [f"--{name}={path}" for name, path in paths.items()]


def test_cli_prints_the_accuracy_dict(official_files: dict[str, Path]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vqa.evaluation.score_files", *cli_args(official_files)],
        capture_output=True,
        text=True,
        check=True,
    )
    accuracy = json.loads(result.stdout)
    # q10: 1.0; q11: "two" -> "2", 4 humans -> 1.0; q12: 2 humans -> 0.6
    assert accuracy == {
        "overall": 86.67,
        "perQuestionType": {"is this": 100.0, "how many": 100.0, "what color": 60.0},
        "perAnswerType": {"yes/no": 100.0, "number": 100.0, "other": 60.0},
    }


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ([{"question_id": 10, "answer": "yes"}], "results must cover exactly the annotated question ids; 2 have no"),
        (
            [{"question_id": q, "answer": "x"} for q in (10, 11, 12, 99)],
            r"0 have no result \(first: \[\]\), 1 are not annotated \(first: \[99\]\)",
        ),
        ([{"question_id": q, "answer": "x"} for q in (10, 11, 12, 12)], "repeats question_id 12"),
        ([{"question_id": 10, "answer": 3}], r"\[0\].answer is 3, expected a string"),
        ({"question_id": 10}, "expected a list"),
    ],
)
def test_cli_rejects_bad_results(
    official_files: dict[str, Path], capsys: pytest.CaptureFixture[str], results: object, message: str
) -> None:
    official_files["results"].write_text(json.dumps(results))
    with pytest.raises(SystemExit) as exit_info:
        main(cli_args(official_files))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1
    assert error.startswith(f"error: {official_files['results']}: ")
    assert re.search(message, error)


def test_cli_rejects_malformed_json(official_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    official_files["annotations"].write_text("{not json")
    with pytest.raises(SystemExit) as exit_info:
        main(cli_args(official_files))
    assert exit_info.value.code == 2
    assert "malformed JSON at line 1 column 2" in capsys.readouterr().err
