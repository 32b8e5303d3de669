"""The held-out split a run is selected on: the validation accuracy of the weights a run ends with.

Searches (Optuna, grids, any `-m` sweep that names a best run) read this number, and `load_best_model_at_end` reads
the same split's evaluations; the final split (the test split) is scored once per run for the record and never feeds
a choice.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import Trainer

logger = logging.getLogger(__name__)

ACCURACY_KEY = "eval_vqa_accuracy"  # what the Trainer logs for an evaluation of its eval_dataset


def validation_block(split: str, num_questions: int, accuracy: float | None) -> dict[str, Any]:
    """metrics.json's `validation` entry: the split model selection read, its size and the final weights' accuracy."""
    return {"split": split, "num_questions": num_questions, "vqa_accuracy": accuracy}


def logged_accuracy_of_final_weights(trainer: Trainer, after_step: int = 0) -> float | None:
    """The eval split's VQA accuracy that the Trainer logged, in this process, for the weights it ended with; None
    when no such evaluation was logged (evaluation off, its last one before the last step, or one logged before a
    resume, possibly with other settings).

    With `load_best_model_at_end` the run ends with the best checkpoint's weights: its evaluation is the one at that
    checkpoint's step (`best_global_step`). Otherwise it is an evaluation at the last step.

    Args:
        after_step: the step a resumed run started from; evaluations at or before it are not reused.
    """
    state = trainer.state
    evaluations = {entry["step"]: entry[ACCURACY_KEY] for entry in state.log_history if ACCURACY_KEY in entry}
    step = state.best_global_step if trainer.args.load_best_model_at_end else state.global_step
    return evaluations.get(step) if step and step > after_step else None


def final_validation_accuracy(
    trainer: Trainer, after_step: int | None, evaluate_if_missing: bool = True
) -> float | None:
    """The eval split's VQA accuracy of the weights the run ends with: the Trainer's own logged evaluation of them
    when there is one (no second pass over the split), else one pass over its eval split now (not logged: a point
    at the last step would misplace the best checkpoint's score in the curves).

    Args:
        after_step: the step a resumed run started from (0 for a new run); None when a resumed run found training
            already over, so nothing was evaluated in this process.
        evaluate_if_missing: False for a run without final evaluation (`final_evaluation=false`): None instead of
            a pass the user turned off.
    """
    accuracy = logged_accuracy_of_final_weights(trainer, after_step) if after_step is not None else None
    if accuracy is not None or not evaluate_if_missing:
        return accuracy
    logger.info("validation: scoring the final weights on the eval split (%d questions)", len(trainer.eval_dataset))
    return trainer.predict(trainer.eval_dataset, metric_key_prefix="eval").metrics.get(ACCURACY_KEY)
