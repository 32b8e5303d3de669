"""The real HF Trainer: gradient accumulation gives the same update as one large batch (token-level mean)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Trainer

from tests.conftest import make_batch, one_sgd_step_arguments
from vqa import VQAConfig, VQAModel


def train_one_step(tmp_path: Path, per_device_batch: int, accumulation: int) -> dict[str, torch.Tensor]:
    batch = make_batch(batch_size=6, seed=1)  # answers of 1, 2 and 3 tokens: micro-batches hold unequal counts
    rows = [{key: value[row] for key, value in batch.items()} for row in range(6)]
    torch.manual_seed(0)
    model = VQAModel(VQAConfig.tiny(dropout=0.0))
    arguments = one_sgd_step_arguments(
        str(tmp_path / f"b{per_device_batch}_ga{accumulation}"), per_device_batch, accumulation
    )
    Trainer(model=model, args=arguments, train_dataset=rows).train()
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


def test_gradient_accumulation_matches_one_large_batch(tmp_path: Path) -> None:
    large_batch = train_one_step(tmp_path, per_device_batch=6, accumulation=1)
    accumulated = train_one_step(tmp_path, per_device_batch=2, accumulation=3)
    torch.manual_seed(0)
    initial = dict(VQAModel(VQAConfig.tiny(dropout=0.0)).named_parameters())  # the weights before the step
    moved = 0
    for name, parameter in large_batch.items():
        torch.testing.assert_close(accumulated[name], parameter, atol=1e-6, rtol=1e-5, msg=name)
        moved += not torch.equal(parameter, initial[name])
    assert moved == len(large_batch)
