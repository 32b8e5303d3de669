"""Blind baselines: answer priors that never look at the image, and pairing each question with another image.

A VQA result means little beside no baselines: on VQA v2 answering "yes" scores about 26% and a question-only
model about 44%. `AnswerPrior` answers the most common training answer of each question type (or overall);
`shuffle_images` pairs every question with a random other image of its split, so that a trained model's drop in
accuracy measures how much it reads the image. `model.inputs=question_only|image_only` (see `VQAConfig`) are the
learned blind baselines.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from datasets import Dataset, concatenate_datasets

from vqa.data.schema import column
from vqa.evaluation.answering import AnsweredSplit, Fitted
from vqa.evaluation.scoring import score_split

logger = logging.getLogger(__name__)

PriorGrouping = Literal["question_type", "global"]
PRIOR_GROUPINGS: tuple[str, ...] = ("question_type", "global")


@dataclass
class AnswerPrior:
    """The most common training answer per question type (`by="question_type"`) or overall (`by="global"`).

    Attributes:
        by: the grouping.
        answers: question type -> its most common training answer (empty for `global`).
        overall: the most common training answer; the answer for question types never seen in training.
    """

    by: PriorGrouping
    answers: dict[str, str]
    overall: str

    @classmethod
    def fit(cls, answers: Sequence[str], question_types: Sequence[str | None], by: PriorGrouping) -> AnswerPrior:
        """Count `answers` (each question's `multiple_choice_answer`) overall and per question type.

        Ties go to the alphabetically first answer, so the prior does not depend on the row order.
        """
        if by not in PRIOR_GROUPINGS:
            raise ValueError(f"prior.by: got {by!r}, expected one of {', '.join(PRIOR_GROUPINGS)}")
        if not answers:
            raise ValueError("prior: the training split has no answers to count")
        per_type: dict[str, Counter[str]] = defaultdict(Counter)
        if by == "question_type":
            for answer, question_type in zip(answers, question_types, strict=True):
                per_type[str(question_type)][answer] += 1
        return cls(
            by, {kind: _most_common(counts) for kind, counts in per_type.items()}, _most_common(Counter(answers))
        )

    @classmethod
    def fit_split(cls, train: Dataset, by: PriorGrouping) -> AnswerPrior:
        """`fit` on a training split's `multiple_choice_answer` and `question_type` columns."""
        return cls.fit(column(train, "multiple_choice_answer"), column(train, "question_type"), by)

    def answer_split(self, split: Dataset) -> tuple[list[str], list[str | None], int]:
        """The prior's answer to each question of `split`, with the question types it used (read from the text
        where the split has none) and how many were read so."""
        question_types, inferred = self.question_types(column(split, "question_type"), column(split, "question"))
        return self.predict(question_types), question_types, inferred

    def question_types(
        self, question_types: Sequence[str | None], questions: Sequence[str]
    ) -> tuple[list[str | None], int]:
        """Each question's type, read from its text where the split has none (test splits without annotations):
        the longest training question type the question starts with (VQA's types are question prefixes, such
        as "what color is the"). Returns the types and how many were read from the text."""
        known = sorted(self.answers, key=len, reverse=True)
        resolved: list[str | None] = []
        for question_type, question in zip(question_types, questions, strict=True):
            if question_type is None:
                text = question.lower().rstrip("?").strip()
                question_type = next((kind for kind in known if text == kind or text.startswith(kind + " ")), None)
            resolved.append(question_type)
        inferred = sum(question_type is None for question_type in question_types)
        return resolved, inferred

    def predict(self, question_types: Sequence[str | None]) -> list[str]:
        """One answer per question, from its question type (`overall` for a type unseen in training)."""
        if self.by == "global":
            return [self.overall] * len(question_types)
        return [self.answers.get(str(question_type), self.overall) for question_type in question_types]

    def count_unseen(self, question_types: Sequence[str | None]) -> int:
        """How many of these questions `predict` answers with `overall` because their type was never trained on."""
        if self.by == "global":
            return 0
        return sum(str(question_type) not in self.answers for question_type in question_types)


def _most_common(counts: Counter[str]) -> str:
    return min(counts, key=lambda answer: (-counts[answer], answer))


def shuffle_images(dataset: Dataset, seed: int) -> Dataset:
    """The same questions, each paired with the image of a random other `image_id` from the same split.

    Each question draws independently (fixed `seed`) among the split's other images, never its own, so questions
    that shared an image are spread over different ones. Columns other than `image` and `image_id` are kept. The rows
    come ordered by their new image, so that evaluation batches share images as the split's own do: each distinct
    image of a batch is decoded and encoded once.

    Raises:
        ValueError: when the split has fewer than two images.
    """
    image_ids = np.asarray(column(dataset, "image_id"))
    distinct, first_row, own = np.unique(image_ids, return_index=True, return_inverse=True)
    if len(distinct) < 2:
        raise ValueError(f"shuffled images: the split has {len(distinct)} image(s); expected at least two")
    draws = np.random.default_rng(seed).integers(0, len(distinct) - 1, size=len(dataset))
    other = draws + (draws >= own)  # skips the question's own image: uniform over the others
    order = np.argsort(other, kind="stable")
    images = dataset.select_columns(["image", "image_id"]).select(first_row[other[order]]).flatten_indices()
    questions = dataset.remove_columns(["image", "image_id"]).select(order).flatten_indices()
    return concatenate_datasets([questions, images], axis=1)


def fit_prior(splits: dict[str, Dataset], by: PriorGrouping, final_split: str, eval_split: str) -> Fitted:
    """`baseline=prior`: the training split's most common answer per question type (or overall), no network. It
    answers like a trained model, so the run writes the same folder (the shuffled-image check included, which a
    prior passes unchanged by construction); metrics.json says which prior it was."""
    prior = AnswerPrior.fit_split(splits["train"], by)
    _, question_types, inferred = prior.answer_split(splits[final_split])
    unseen = prior.count_unseen(question_types)
    logger.info(
        "prior by %s: %d question types, overall answer %r; %s split: %d questions without a question_type typed "
        "from their text, %d questions of types unseen in training",
        by,
        len(prior.answers),
        prior.overall,
        final_split,
        inferred,
        unseen,
    )
    baseline = {
        "name": "prior",
        "by": by,
        "question_types": len(prior.answers),
        "overall_answer": prior.overall,
        "questions_of_unseen_types": unseen,
        "question_types_read_from_text": inferred,
    }
    answers = prior.answer_split(splits[eval_split])[0]
    return Fitted(
        answer=lambda split, name: AnsweredSplit(prior.answer_split(split)[0]),
        # Scored here, with or without a final evaluation: a sweep over baselines always has its number.
        logged_validation=score_split(splits[eval_split], answers).get("vqa_accuracy"),
        metrics=lambda: {"baseline": baseline},
        writes_run_folder=int(os.environ.get("RANK", "0")) == 0,  # under torchrun: one writer
    )
