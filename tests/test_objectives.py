"""Objectives outside forward: the Trainer minimises the configured one, with the Trainer's token-exact scaling."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

from tests.conftest import make_batch, one_sgd_step_arguments
from vqa import VQAConfig, VQAModel
from vqa.objectives import AnswerCrossEntropy, Objective
from vqa.training import VQATrainer

CONF = Path(__file__).resolve().parents[1] / "conf"


class ZeroObjective:
    """A loss with no gradient: training with it must leave every weight where it was."""

    def __call__(
        self, model: nn.Module, batch: Mapping[str, torch.Tensor], num_items_in_batch: Any = None
    ) -> tuple[torch.Tensor, Any]:
        loss, outputs = AnswerCrossEntropy()(model, batch, num_items_in_batch)
        return loss * 0.0, outputs


def train_one_step(
    folder: Path, objective: Objective, per_device_batch: int = 6, accumulation: int = 1
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(weights before, weights after) one SGD step of VQATrainer with `objective` on six examples."""
    batch = make_batch(batch_size=6, seed=1)  # answers of 1, 2 and 3 tokens: micro-batches hold unequal counts
    rows = [{key: value[row] for key, value in batch.items()} for row in range(6)]
    torch.manual_seed(0)
    model = VQAModel(VQAConfig.tiny(dropout=0.0))
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    arguments = one_sgd_step_arguments(str(folder), per_device_batch, accumulation)
    trainer = VQATrainer(
        model=model, args=arguments, train_dataset=rows, processor=None, objective=objective, group_by_image=False
    )
    trainer.train()
    return before, {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


def test_the_trainer_minimises_the_configured_objective(tmp_path: Path) -> None:
    before, after_zero = train_one_step(tmp_path / "zero", ZeroObjective())
    assert all(torch.equal(after_zero[name], weight) for name, weight in before.items())
    _, after_answer = train_one_step(tmp_path / "answer", AnswerCrossEntropy())
    assert all(not torch.equal(after_answer[name], weight) for name, weight in before.items())


def test_objective_accumulation_matches_one_large_batch(tmp_path: Path) -> None:
    _, large_batch = train_one_step(tmp_path / "large", AnswerCrossEntropy())
    _, accumulated = train_one_step(tmp_path / "accumulated", AnswerCrossEntropy(), per_device_batch=2, accumulation=3)
    for name, weight in large_batch.items():
        torch.testing.assert_close(accumulated[name], weight, atol=1e-6, rtol=1e-5, msg=name)


def test_answer_objective_is_the_forward_loss() -> None:
    model = VQAModel(VQAConfig.tiny(dropout=0.0)).eval()
    batch = make_batch()
    loss, outputs = AnswerCrossEntropy()(model, batch, torch.tensor(18))
    assert torch.equal(loss, model(**batch, num_items_in_batch=torch.tensor(18)).loss)
    assert torch.equal(outputs.logits, model(**batch).logits)


def test_objective_is_a_config_group() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        default = compose(config_name="config")
        custom = compose(config_name="config", overrides=["objective._target_=tests.test_objectives.ZeroObjective"])
    assert isinstance(instantiate(default.objective), AnswerCrossEntropy)
    assert isinstance(instantiate(custom.objective), ZeroObjective)
