"""Stopping once validation holds a target: `trainer.stop_at` (a VQA accuracy and how many evaluations in a row must
reach it). The evaluations are those the Trainer runs on the eval split during training, never the test split."""

from __future__ import annotations

import logging

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

logger = logging.getLogger(__name__)
ACCURACY_KEY = "eval_vqa_accuracy"  # what the Trainer logs for an evaluation of its eval_dataset


class StopAtAccuracy(TrainerCallback):
    """Ends training after `evaluations` consecutive evaluations with VQA accuracy >= `vqa_accuracy`.

    The run then ends with the weights of that last evaluation, so its logged accuracy is the final weights' own.
    """

    def __init__(self, vqa_accuracy: float, evaluations: int = 1) -> None:
        self.target = vqa_accuracy
        self.evaluations = evaluations
        self.in_a_row = 0

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: object,
    ) -> None:
        accuracy = (metrics or {}).get(ACCURACY_KEY)
        if accuracy is None:
            return
        self.in_a_row = self.in_a_row + 1 if accuracy >= self.target else 0
        if self.in_a_row >= self.evaluations and not control.should_training_stop:
            logger.info(
                "validation at or above %.2f for %d evaluation(s) in a row (now %.2f): training stops at step %d",
                self.target,
                self.in_a_row,
                accuracy,
                state.global_step,
            )
            control.should_training_stop = True
