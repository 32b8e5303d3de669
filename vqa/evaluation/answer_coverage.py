"""How far a fixed answer vocabulary can go on a split: the official score of each answer a classifier can give, the
share of questions whose most common answer it holds, and the accuracy ceiling (the best possible VQA accuracy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from datasets import Dataset

from vqa.data.schema import column, has_answers
from vqa.evaluation.metrics import process_digit_article, process_punctuation, question_accuracy, round_half_away


def normalized_answer(answer: str) -> str:
    """An answer in the form the official metric compares when the human answers differ."""
    return process_digit_article(process_punctuation(answer.strip()))


def official_answer_scores(human_answers: Sequence[str], classes: Mapping[str, Any]) -> dict[str, float]:
    """The official VQA score (`question_accuracy`) of each answer among `classes` that a human gave, as given or in
    the normalised form the metric compares (so "two" among the answers also scores the class "2"); every other
    class scores 0 and is left out."""
    candidates = {answer for given in set(human_answers) for answer in (given, normalized_answer(given))}
    scores = {answer: question_accuracy(answer, human_answers) for answer in candidates if answer in classes}
    return {answer: score for answer, score in scores.items() if score > 0}


def coverage(vocabulary: Sequence[str], split: Dataset) -> dict[str, float | int] | None:
    """`questions`; `covered`: the percentage whose most common answer is in `vocabulary`; `accuracy_ceiling`: the
    VQA accuracy (percent) of always giving each question's best-scoring answer of the vocabulary. None for a split
    without answers."""
    if not has_answers(split):
        return None
    classes = set(vocabulary)
    answers = column(split, "answers")
    best = [max(official_answer_scores(human, classes).values(), default=0.0) for human in answers]
    covered = sum(answer in classes for answer in column(split, "multiple_choice_answer"))
    return {
        "questions": len(answers),
        "covered": round_half_away(100 * covered / len(answers)),
        "accuracy_ceiling": round_half_away(100 * sum(best) / len(answers)),
    }
