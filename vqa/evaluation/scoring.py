"""Scoring answers: the official VQA accuracy of a split's predicted answers, overall and per answer type and question
type, as metric entries (`vqa_accuracy`, `vqa_accuracy_<answer type>`), and beside them the benchmark's own official
metrics (`vqa.data.benchmark`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datasets import Dataset

from vqa.data.benchmark import VQA, Benchmark
from vqa.data.schema import column, has_answers
from vqa.evaluation.metrics import ScoredQuestion, vqa_accuracy


def score_split(dataset: Dataset, predictions: Sequence[str], benchmark: Benchmark = VQA) -> dict[str, float]:
    """Official VQA accuracy of `predictions` (in the split's order) against the split's human answers:
    `vqa_accuracy` and one `vqa_accuracy_<answer type>` per answer type, then the benchmark's own entries
    (`benchmark.score`); {} for a split without answers (a test split: predictions only)."""
    if not has_answers(dataset):
        return {}
    accuracy = official_accuracy(dataset, predictions)
    metrics = {"vqa_accuracy": accuracy["overall"]}
    for answer_type, value in accuracy["perAnswerType"].items():
        metrics[f"vqa_accuracy_{metric_name(answer_type)}"] = value
    return {**metrics, **benchmark.score(dataset, predictions)}


def official_accuracy(dataset: Dataset, predictions: Sequence[str]) -> dict[str, Any]:
    """The official tool's accuracy dict (`overall`, `perQuestionType`, `perAnswerType`, percent) of `predictions`
    (in the split's order) against a split with human answers."""
    return vqa_accuracy(
        ScoredQuestion(qid, prediction, human, str(answer_type), str(question_type))
        for qid, prediction, human, answer_type, question_type in zip(
            column(dataset, "question_id"),
            predictions,
            column(dataset, "answers"),
            column(dataset, "answer_type"),
            column(dataset, "question_type"),
            strict=True,
        )
    )


def metric_name(text: str) -> str:
    """'yes/no' -> 'yes_no': metric keys without path separators (TensorBoard and wandb treat '/' as a group)."""
    return "".join(char if char.isalnum() else "_" for char in text)
