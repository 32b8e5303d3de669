"""The divergence guard on the real Trainer: a non-finite loss or weight stops training with one line naming the step
and the last good checkpoint, and no checkpoint of non-finite weights is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from tests.conftest import make_batch, one_sgd_step_arguments
from vqa import VQAConfig, VQAModel
from vqa.errors import DivergenceError
from vqa.training.divergence import non_finite, weights_problem
from vqa.training.trainer import VQATrainer


class PoisonWeightsAfter(TrainerCallback):
    """Fills one weight with NaN at the end of optimizer step `step` (a fault injected into the real model)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                model.decoder.lm_head.weight.fill_(float("nan"))


def trainer_of(tmp_path: Path, max_steps: int, save_steps: int | None = None) -> VQATrainer:
    batch = make_batch(batch_size=6, seed=1)
    rows = [{key: value[row] for key, value in batch.items()} for row in range(6)]
    arguments = one_sgd_step_arguments(str(tmp_path), per_device_batch=3, accumulation=1)
    arguments.max_steps, arguments.learning_rate = max_steps, 0.01
    if save_steps:
        arguments.save_strategy, arguments.save_steps = "steps", save_steps
    torch.manual_seed(0)
    model = VQAModel(VQAConfig.tiny(dropout=0.0)).train()
    return VQATrainer(model=model, args=arguments, train_dataset=rows, processor=None, group_by_image=False)


def test_a_nan_loss_stops_training_at_its_step_before_the_update_and_names_the_last_good_checkpoint(
    tmp_path: Path,
) -> None:
    trainer = trainer_of(tmp_path, max_steps=6, save_steps=2)
    trainer.add_callback(PoisonWeightsAfter(step=3))  # after the save at step 2: step 4's loss is NaN
    with pytest.raises(DivergenceError) as raised:
        trainer.train()
    message = str(raised.value)
    assert message.startswith("training diverged at step 4: the loss is nan;")
    assert f"the last good checkpoint is {tmp_path / 'checkpoint-2'}" in message
    assert "\n" not in message
    assert sorted(path.name for path in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"]
    saved = load_file(tmp_path / "checkpoint-2" / "model.safetensors")
    assert all(bool(torch.isfinite(tensor).all()) for tensor in saved.values())
    assert trainer.state.global_step == 3  # stopped before step 4's optimizer update


def test_non_finite_weights_are_never_saved(tmp_path: Path) -> None:
    trainer = trainer_of(tmp_path, max_steps=4, save_steps=2)
    trainer.add_callback(PoisonWeightsAfter(step=2))  # after step 2's update, before its save
    with pytest.raises(DivergenceError) as raised:
        trainer.train()
    assert str(raised.value).startswith("training diverged at step 2: the weights are not finite (decoder.")
    assert "after it; no checkpoint was saved before it" in str(raised.value)
    assert not list(tmp_path.glob("checkpoint-*"))


def test_the_final_weights_are_checked(tmp_path: Path) -> None:
    trainer = trainer_of(tmp_path, max_steps=2)
    trainer.add_callback(PoisonWeightsAfter(step=2))  # the last step: no later loss would show it
    with pytest.raises(DivergenceError, match=r"^training diverged at step 2: the weights are not finite"):
        trainer.train()


def test_a_run_that_stays_finite_is_untouched(tmp_path: Path) -> None:
    trainer = trainer_of(tmp_path, max_steps=2, save_steps=2)
    trainer.train()
    assert trainer.state.global_step == 2 and weights_problem(trainer.model) is None
    assert non_finite(torch.tensor(float("inf"))) == "inf" and non_finite(float("nan")) == "nan"
    assert non_finite(torch.tensor(3.0)) is None and non_finite(None) is None
