"""The held-out split a run is selected on: the validation accuracy of the weights a run ends with.

Searches (Optuna, grids, any `-m` sweep that names a best run) and `load_best_model_at_end` read this number; the
final split (the test split) is scored once per run for the record and never feeds a choice.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from transformers import Trainer

logger = logging.getLogger(__name__)

ACCURACY_KEY = "eval_vqa_accuracy"  # what the Trainer logs for an evaluation of its eval_dataset


def validation_block(split: str, num_questions: int, accuracy: float | None) -> dict[str, Any]:
    """metrics.json's `validation` entry: the split model selection read, its size and the final weights' accuracy."""
    return {"split": split, "num_questions": num_questions, "vqa_accuracy": accuracy}


def logged_accuracy_of_final_weights(trainer: Trainer) -> float | None:
    """The eval split's VQA accuracy that the Trainer logged for the weights it ended with, or None when no logged
    evaluation scored exactly those weights (evaluation off, or its last one before the last step).

    With `load_best_model_at_end` the run ends with the best checkpoint's weights: its evaluation is the one at that
    checkpoint's step. Otherwise it is an evaluation at the last step.
    """
    state = trainer.state
    evaluations = {entry["step"]: entry[ACCURACY_KEY] for entry in state.log_history if ACCURACY_KEY in entry}
    if trainer.args.load_best_model_at_end and state.best_model_checkpoint:
        step = re.search(r"checkpoint-(\d+)$", state.best_model_checkpoint.rstrip("/"))
        return evaluations.get(int(step.group(1))) if step else None
    return evaluations.get(state.global_step)


def final_validation_accuracy(
    trainer: Trainer, eval_dataset: Any, trained_now: bool, evaluate_if_missing: bool = True
) -> float | None:
    """The eval split's VQA accuracy of the weights the run ends with: the Trainer's own logged evaluation of them
    when there is one (no second pass over the split), else one evaluation now.

    Args:
        eval_dataset: the eval split as the Trainer reads it (`vqa.training.trainer.for_training`).
        trained_now: False when a resumed run found training already over (no evaluation was logged in this
            process, so the split is evaluated).
        evaluate_if_missing: False for a run without final evaluation (`final_evaluation=false`): None instead of
            an evaluation the user turned off.
    """
    accuracy = logged_accuracy_of_final_weights(trainer) if trained_now else None
    if accuracy is not None or not evaluate_if_missing:
        return accuracy
    logger.info("validation: evaluating the final weights on the eval split (%d questions)", len(eval_dataset))
    return trainer.evaluate(eval_dataset).get(ACCURACY_KEY)
