"""The end of a run for any answerer (vqa.evaluation.final): on real easy-VQA splits, with an answer prior and with
answerers that reveal which splits they were asked about."""

from __future__ import annotations

import pytest
from datasets import Dataset

from tests.helpers.objective_setup import small_splits
from vqa.data.schema import column
from vqa.evaluation.answering import AnsweredSplit
from vqa.evaluation.baselines import fit_prior
from vqa.evaluation.final import evaluate_final
from vqa.evaluation.scoring import score_split


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dataset]:
    return small_splits(tmp_path_factory.mktemp("cache"), max_questions=64)


def recording(asked: list[str]) -> object:
    """An answerer that answers every question with its human answer and records which split it was asked about."""

    def answer(split: Dataset, name: str) -> AnsweredSplit:
        asked.append(name)
        return AnsweredSplit(list(column(split, "multiple_choice_answer")), loss=0.5)

    return answer


def test_a_prior_is_evaluated_as_a_model_is(splits: dict[str, Dataset]) -> None:
    fitted = fit_prior(splits, "question_type", "test", "validation")
    evaluation = evaluate_final(fitted.answer, splits, "test", "validation", logged_validation=fitted.logged_validation)
    answers = fitted.answer(splits["test"], "test").answers
    assert evaluation.scores == score_split(splits["test"], answers) and evaluation.answers == answers
    # A prior never reads the image: the shuffled-image check cannot change its accuracy.
    assert evaluation.shuffled_accuracy == evaluation.scores["vqa_accuracy"]
    expected = score_split(splits["validation"], fitted.answer(splits["validation"], "eval").answers)
    assert evaluation.validation_accuracy == expected["vqa_accuracy"]
    assert fitted.metrics()["baseline"]["by"] == "question_type"


def test_validation_is_reused_when_logged_and_answered_once_otherwise(splits: dict[str, Dataset]) -> None:
    asked: list[str] = []
    logged = evaluate_final(recording(asked), splits, "test", "validation", logged_validation=12.5)
    assert logged.validation_accuracy == 12.5 and asked == ["test", "shuffled"]
    assert logged.scores["vqa_accuracy"] == 100.0 and logged.scores["loss"] == 0.5

    asked.clear()
    answered = evaluate_final(recording(asked), splits, "test", "validation", shuffled_image_check=False)
    assert answered.validation_accuracy == 100.0 and asked == ["test", "eval"]

    asked.clear()  # the final split is the eval split: its one pass serves both
    same = evaluate_final(recording(asked), splits, "validation", "validation", shuffled_image_check=False)
    assert same.validation_accuracy == 100.0 and asked == ["test"]


def test_without_a_final_evaluation_nothing_is_answered(splits: dict[str, Dataset]) -> None:
    asked: list[str] = []
    evaluation = evaluate_final(recording(asked), splits, "test", "validation", final_evaluation=False)
    assert asked == [] and evaluation.answers == [] and evaluation.num_questions == 0
    assert evaluation.validation_accuracy is None and evaluation.scores == {}


def test_a_split_without_answers_is_answered_but_not_scored(splits: dict[str, Dataset]) -> None:
    unanswered = splits["test"].map(lambda row: {"answers": [], "multiple_choice_answer": None})  # as a test split
    asked: list[str] = []

    def answer(split: Dataset, name: str) -> AnsweredSplit:
        asked.append(name)
        return AnsweredSplit(["yes"] * len(split))

    evaluation = evaluate_final(answer, {**splits, "test": unanswered}, "test", "validation", logged_validation=1.0)
    assert evaluation.scores == {} and evaluation.shuffled_accuracy is None and asked == ["test"]
    assert len(evaluation.answers) == len(unanswered)
