"""A small real setting for the objective tests: easy-VQA splits on disk, the tiny model and its processor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

from vqa.data.easy_vqa import training_splits
from vqa.model.builders import tiny_model_and_processor
from vqa.model.modeling import VQAModel
from vqa.model.processing import VQAProcessor
from vqa.training.trainer import with_image_paths


def small_splits(cache_dir: Path, max_questions: int = 96) -> Any:
    """easy-VQA's first `max_questions` questions per split, built as the run builds them."""
    return training_splits(cache_dir=cache_dir, max_questions=max_questions)


def tiny_setup(train_split: Dataset, seed: int = 0) -> tuple[VQAModel, VQAProcessor]:
    """The default tiny model (dropout 0) with tokenizers trained on `train_split`, in train mode."""
    torch.manual_seed(seed)
    model, processor = tiny_model_and_processor(train_split, dropout=0.0)
    return model.train(), processor


def training_rows(split: Dataset, count: int, start: int = 0) -> list[dict[str, Any]]:
    """Rows as the training DataLoader gives them to the collator (images as undecoded paths)."""
    rows = with_image_paths(split)
    return [rows[index] for index in range(start, start + count)]
