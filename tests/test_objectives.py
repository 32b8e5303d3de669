"""Objectives outside forward: the Trainer minimises the configured one, with the Trainer's token-exact scaling."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from tests.conftest import make_batch, one_sgd_step_arguments
from tests.helpers.objective_setup import small_splits, tiny_setup
from vqa import VQAConfig, VQAModel
from vqa.model.loading import load_checkpoint
from vqa.model.processing import VQACollator
from vqa.training.objectives import AnswerCrossEntropy, Objective
from vqa.training.trainer import VQATrainer, with_image_paths

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


class MeanOverExamples:
    """A loss that averages over its own micro-batch (per-example mean cross-entropy, then the mean over examples),
    as the RL objective does: the Trainer must divide it by the accumulation steps, not by token counts."""

    averages_own_batch = True

    def __call__(
        self, model: nn.Module, batch: Mapping[str, torch.Tensor], num_items_in_batch: Any = None
    ) -> tuple[torch.Tensor, Any]:
        labels = batch["labels"]
        outputs = model(**{key: value for key, value in batch.items() if key != "labels"}, labels=labels)
        token_losses = nn.functional.cross_entropy(
            outputs.logits.transpose(1, 2), labels, ignore_index=-100, reduction="none"
        )  # (B, T)
        per_example = token_losses.sum(dim=1) / (labels != -100).sum(dim=1)
        return per_example.mean(), outputs


def test_a_mean_over_the_micro_batch_accumulates_to_the_large_batch_mean(tmp_path: Path) -> None:
    _, large_batch = train_one_step(tmp_path / "large", MeanOverExamples())
    _, accumulated = train_one_step(tmp_path / "accumulated", MeanOverExamples(), per_device_batch=2, accumulation=3)
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


@pytest.fixture(scope="module")
def easy_vqa_splits(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return small_splits(tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize("name", ["answer", "soft", "rl"])
def test_a_model_trained_with_each_objective_saves_reloads_and_evaluates(
    name: str, easy_vqa_splits: Any, tmp_path: Path
) -> None:
    model, processor = tiny_setup(easy_vqa_splits["train"])
    objective = instantiate(OmegaConf.load(CONF / "objective" / f"{name}.yaml"))
    arguments = one_sgd_step_arguments(str(tmp_path / "run"), per_device_batch=8, accumulation=1)
    arguments = dataclasses.replace(
        arguments, max_steps=2, learning_rate=1e-3, optim="adamw_torch", logging_steps=1, remove_unused_columns=False
    )
    trainer = VQATrainer(
        model=model,
        args=arguments,
        train_dataset=with_image_paths(easy_vqa_splits["train"]),
        eval_dataset=with_image_paths(easy_vqa_splits["validation"]),
        data_collator=VQACollator(processor, batch_extras=getattr(objective, "batch_extras", None)),
        processor=processor,
        objective=objective,
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2 and all(math.isfinite(entry["loss"]) for entry in logged)
    assert ("reward" in logged[0]) == (name == "rl")  # the RL objective's values reach the log
    evaluated = trainer.evaluate()  # batches with the objective's extra keys evaluate as plain ones
    checkpoint = tmp_path / "checkpoint"
    trainer.save_model(str(checkpoint))
    processor.save_pretrained(checkpoint)

    reloaded, reloaded_processor = load_checkpoint(checkpoint, device="cpu")
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    again = VQATrainer(
        model=reloaded,
        args=arguments,
        eval_dataset=with_image_paths(easy_vqa_splits["validation"]),
        data_collator=VQACollator(reloaded_processor),
        processor=reloaded_processor,
    ).evaluate()
    assert 0 <= again["eval_vqa_accuracy"] <= 100
    assert again["eval_vqa_accuracy"] == evaluated["eval_vqa_accuracy"]
    assert again["eval_loss"] == pytest.approx(evaluated["eval_loss"], rel=1e-6)
