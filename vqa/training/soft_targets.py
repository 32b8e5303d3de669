"""Soft targets: every distinct human answer of a question, weighted by the score the official metric gives it.

VQA v2 has ten human answers per question. `answer_targets` turns them into (answer, weight) pairs: answers that the
official normalisation makes equal are one target (spelled as most humans spelled it), its weight is the VQA
accuracy that answer would score (min(1, matching humans / 3) averaged over the ten leave-one-out subsets, the
code of `vqa.evaluation.metrics`), and the weights of a question are scaled to sum to one. `soft_target_batch` lays
them out for the collator; `vqa.training.objectives.SoftAnswerCrossEntropy` trains on them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from vqa.evaluation.metrics import accuracy_from_matches, comparable_answers, normalize_whitespace
from vqa.model.processing import VQAProcessor

# Batch keys: (A, T) labels of every target answer, (A,) their weights, (A,) the example each one belongs to.
ANSWER_LABELS, ANSWER_WEIGHTS, ANSWER_EXAMPLE = "answer_labels", "answer_weights", "answer_example"


def answer_targets(human_answers: Sequence[str]) -> list[tuple[str, float]]:
    """(answer, weight) per distinct answer (after the official normalisation), weights summing to one.

    Raises:
        ValueError: no human answers (a test split's row).
    """
    if not human_answers:
        raise ValueError("soft targets need the human answers (the `answers` column); this row has none")
    forms, _ = comparable_answers(human_answers)
    spellings = [normalize_whitespace(answer) for answer in human_answers]
    spellings_by_form: dict[str, Counter[str]] = {}
    for form, spelling in zip(forms, spellings, strict=True):
        spellings_by_form.setdefault(form, Counter())[spelling] += 1
    # Each form's score is what a prediction of that form scores against these humans.
    scores = {form: accuracy_from_matches([other == form for other in forms]) for form in spellings_by_form}
    total = sum(scores.values())  # > 0: every form was given by at least one human, which scores 0.3
    return [(counts.most_common(1)[0][0], scores[form] / total) for form, counts in spellings_by_form.items()]


def soft_target_batch(
    processor: VQAProcessor, human_answers: Sequence[Sequence[str]], without_loss: Sequence[int] = ()
) -> dict[str, torch.Tensor]:
    """The targets of a batch's examples, flattened: A rows over all examples, in example order.

    Args:
        human_answers: per example, its human answers.
        without_loss: examples whose targets get weight 0 (their image could not be decoded).

    Returns:
        `answer_labels` (A, T) `answer EOS` -100 padded, `answer_weights` (A,) float32, `answer_example` (A,) the
        example (row of the batch) each target belongs to.
    """
    answers: list[str] = []
    weights: list[float] = []
    examples: list[int] = []
    skipped = set(without_loss)
    for example, humans in enumerate(human_answers):
        for answer, weight in answer_targets(humans):
            answers.append(answer)
            weights.append(0.0 if example in skipped else weight)
            examples.append(example)
    return {
        ANSWER_LABELS: processor.encode_answers(answers),
        ANSWER_WEIGHTS: torch.tensor(weights, dtype=torch.float32),
        ANSWER_EXAMPLE: torch.tensor(examples),
    }
