"""`trainer.stop_at`: training ends once validation holds the target for the asked number of evaluations."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from transformers import TrainerControl, TrainerState, TrainingArguments

from vqa.config_checks import check_stop_at
from vqa.errors import ConfigError
from vqa.training.stopping import StopAtAccuracy


def stopped_after(accuracies: list[float], target: float, evaluations: int) -> int | None:
    """The 1-based index of the evaluation after which the callback stops training, or None."""
    callback = StopAtAccuracy(target, evaluations)
    control, state = TrainerControl(), TrainerState()
    args = TrainingArguments(output_dir="unused", use_cpu=True, report_to=[])
    for index, accuracy in enumerate(accuracies, start=1):
        state.global_step = 100 * index
        callback.on_evaluate(args, state, control, metrics={"eval_loss": 0.1, "eval_vqa_accuracy": accuracy})
        if control.should_training_stop:
            return index
    return None


def test_stops_after_the_asked_evaluations_in_a_row() -> None:
    curve = [80.0, 99.6, 98.9, 99.5, 99.7, 99.8]
    assert stopped_after(curve, 99.5, evaluations=1) == 2
    assert stopped_after(curve, 99.5, evaluations=2) == 5  # the dip to 98.9 starts the count again
    assert stopped_after(curve, 99.5, evaluations=3) == 6
    assert stopped_after(curve, 99.9, evaluations=1) is None


def test_evaluations_without_an_accuracy_are_ignored() -> None:
    callback = StopAtAccuracy(50.0, 1)
    control = TrainerControl()
    args = TrainingArguments(output_dir="unused", use_cpu=True, report_to=[])
    callback.on_evaluate(args, TrainerState(), control, metrics={"eval_loss": 0.1})
    assert not control.should_training_stop


@pytest.mark.parametrize(
    ("stop_at", "strategy", "message"),
    [
        (
            {"vqa_accuracy": 120, "evaluations": 1},
            "steps",
            r"vqa_accuracy: got 120, expected a VQA accuracy in \(0, 100\]",
        ),
        ({"vqa_accuracy": 99, "evaluations": 0}, "steps", "stop_at.evaluations: got 0, expected a positive integer"),
        ({"vqa_accuracy": 99, "evaluations": 1}, "no", "eval_strategy is 'no', so no evaluation would ever reach it"),
    ],
)
def test_wrong_targets_are_one_line(stop_at: dict, strategy: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_stop_at(OmegaConf.create(stop_at), strategy)


def test_no_target_needs_no_evaluation() -> None:
    check_stop_at(OmegaConf.create({"vqa_accuracy": None, "evaluations": 1}), "no")
    check_stop_at(None, "no")
