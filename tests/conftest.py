"""Shared fixtures: tiny random-init models and hand-made batches (no tokenizer, no hub), and the environment of
the tests that run train.py in subprocesses."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import TrainingArguments

from vqa import VQAConfig, VQAModel

PAD, BOS, EOS = 0, 1, 2  # the tiny answer vocabulary's special ids


def make_batch(batch_size: int = 3, question_length: int = 7, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random questions (the first one right-padded), random images and answers of different lengths."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, 1000, (batch_size, question_length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, question_length - 2 :] = 0
    input_ids[0, question_length - 2 :] = PAD
    pixel_values = torch.randn(batch_size, 3, 64, 64, generator=generator)
    answers = [[5, 6], [7], [8, 9, 10]]
    labels = torch.full((batch_size, 4), -100)
    for row in range(batch_size):
        answer = answers[row % len(answers)] + [EOS]
        labels[row, : len(answer)] = torch.tensor(answer)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values, "labels": labels}


def one_sgd_step_arguments(output_dir: str, per_device_batch: int, accumulation: int) -> TrainingArguments:
    """TrainingArguments for a single plain-SGD step at learning rate 1 on the CPU: a step that moves every weight by
    exactly its gradient, for comparing two ways of computing it."""
    return TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=per_device_batch,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=1.0,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,  # no clipping: clipping to norm 1 would hide a wrongly scaled gradient
        use_cpu=True,
        dataloader_pin_memory=False,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=0,
    )


@pytest.fixture
def tiny_config() -> VQAConfig:
    return VQAConfig.tiny(dropout=0.0)


@pytest.fixture
def tiny_model(tiny_config: VQAConfig) -> VQAModel:
    torch.manual_seed(0)
    return VQAModel(tiny_config).eval()


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    return make_batch()


# The subprocess form of pyproject.toml's [tool.pytest.ini_options] filterwarnings, the upstream cause of the ignored
# one named there (PYTHONWARNINGS takes literal prefixes, not regexes; later entries take precedence).
SUBPROCESS_WARNINGS = ",".join(
    [
        "error::DeprecationWarning",
        "error::FutureWarning",
        "ignore:Deprecated API features detected:DeprecationWarning:optuna.storages._rdb.models",
    ]
)


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """For train.py subprocesses: a dataset cache shared within a test module, offline, no wandb unless a test asks."""
    env = dict(os.environ)
    env.update(VQA_CACHE=str(tmp_path_factory.mktemp("cache")), WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    # As pyproject.toml's filterwarnings do in this process: a deprecation or future warning fails the run.
    env["PYTHONWARNINGS"] = SUBPROCESS_WARNINGS
    return env
