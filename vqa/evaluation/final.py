"""The end of a run, for any answerer (a trained model or an answer prior): the final split answered once and scored
with the official metric, the shuffled-image check, and the validation accuracy that model selection reads."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from datasets import Dataset

from vqa.data.benchmark import VQA, Benchmark
from vqa.data.schema import column
from vqa.evaluation.answering import AnsweredSplit, Answerer
from vqa.evaluation.baselines import shuffle_images
from vqa.evaluation.scoring import score_split

logger = logging.getLogger(__name__)


@dataclass
class FinalEvaluation:
    """The final split's answers and scores (`vqa_accuracy`, per answer type, the benchmark's own entries, `loss`; {}
    for a split without human answers), the shuffled-image check, the validation accuracy of the final weights, and
    the benchmark that scored them and writes the upload file."""

    split: str
    num_questions: int
    answers: list[str]
    scores: dict[str, Any]
    shuffled_accuracy: float | None
    validation_split: str
    validation_questions: int
    validation_accuracy: float | None
    benchmark: Benchmark = VQA


def evaluate_final(
    answer: Answerer,
    splits: dict[str, Dataset],
    final_split: str,
    eval_split: str,
    final_evaluation: bool = True,
    shuffled_image_check: bool = True,
    seed: int = 0,
    logged_validation: float | None = None,
    benchmark: Benchmark = VQA,
) -> FinalEvaluation:
    """Answer and score the final split, run the shuffled-image check, and take the eval split's accuracy of the
    answerer: the one training logged for these weights, the final split's own when it is the eval split, or one
    more pass; none when `final_evaluation` is off and training logged none. `benchmark` adds its official metrics to
    the final split's scores."""
    answered, scores, shuffled_accuracy = AnsweredSplit([]), {}, None
    if final_evaluation:
        answered = answer(splits[final_split], "test")
        scores = score_split(splits[final_split], answered.answers, benchmark)
        if scores and answered.loss is not None:
            scores["loss"] = answered.loss
        if scores and shuffled_check_applies(shuffled_image_check, splits[final_split], final_split):
            logger.info("shuffled-image check: %s questions, each on a random other image", len(splits[final_split]))
            shuffled = shuffle_images(splits[final_split], seed)
            shuffled_accuracy = score_split(shuffled, answer(shuffled, "shuffled").answers).get("vqa_accuracy")
    if final_evaluation and final_split == eval_split and scores:
        validation = scores.get("vqa_accuracy")
    elif logged_validation is not None or not final_evaluation:
        validation = logged_validation
    else:
        logger.info(
            "validation: answering and scoring the %s split (%d questions)", eval_split, len(splits[eval_split])
        )
        validation = score_split(splits[eval_split], answer(splits[eval_split], "eval").answers).get("vqa_accuracy")
    return FinalEvaluation(
        split=final_split,
        num_questions=len(splits[final_split]) if final_evaluation else 0,
        answers=answered.answers,
        scores=scores,
        shuffled_accuracy=shuffled_accuracy,
        validation_split=eval_split,
        validation_questions=len(splits[eval_split]),
        validation_accuracy=validation,
        benchmark=benchmark,
    )


def shuffled_check_applies(asked: bool, split: Dataset, name: str) -> bool:
    """Whether to run the shuffled-image check on `split`: asked for (runs saved before it existed did not), and the
    split has at least two images to swap (otherwise one line says so)."""
    if not asked:
        return False
    if len(set(column(split, "image_id"))) < 2:
        logger.warning("shuffled-image check skipped: the %s split has fewer than two images", name)
        return False
    return True
