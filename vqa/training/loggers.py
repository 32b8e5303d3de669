"""The experiment loggers' extras beyond what the Trainer reports: wandb offline unless the user set it up, and a table
of sample predictions at the end of a run."""

from __future__ import annotations

import os
from pathlib import Path

from datasets import Dataset
from omegaconf import DictConfig


def configure_wandb(cfg: DictConfig, run_dir: Path) -> None:
    """Offline unless the user configured wandb (a mode or an API key): a default run never prompts or fails."""
    if "wandb" not in cfg.logger.report_to:
        return
    if not os.environ.get("WANDB_MODE") and not os.environ.get("WANDB_API_KEY"):
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_DIR", str(run_dir))
    os.environ.setdefault("WANDB_PROJECT", cfg.logger.get("project", "vqa"))


def log_sample_predictions(split: Dataset, answers: list[str], count: int) -> None:
    """A wandb table of the first `count` final-split questions: image, question, prediction, human answer."""
    import wandb

    if wandb.run is None:
        return
    table = wandb.Table(columns=["question_id", "image", "question", "prediction", "answer"])
    for row, answer in zip(split.select(range(min(count, len(split)))), answers, strict=False):
        table.add_data(
            row["question_id"], wandb.Image(row["image"]), row["question"], answer, row["multiple_choice_answer"]
        )
    wandb.run.log({"sample_predictions": table})
