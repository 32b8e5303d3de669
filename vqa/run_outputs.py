"""The files a run leaves in its folder: config.yaml, metrics.json, predictions.json, run_card.json."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from datasets import Dataset

from vqa.data.schema import column
from vqa.provenance import device_description, git_commit, package_versions


def write_json(path: Path, content: Any) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n")


def metrics_content(
    split: str,
    num_questions: int,
    scores: dict[str, Any],
    shuffled_accuracy: float | None = None,
    seed: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """metrics.json: the final split's VQA accuracy overall and per answer type, the shuffled-image check's accuracy,
    the loss (None without a network), the run's seed and `extra` entries (such as a baseline's settings).

    Args:
        scores: `vqa_accuracy`, `vqa_accuracy_<answer type>` and optionally `loss`, as from `score_split`.
    """
    return {
        "split": split,
        "num_questions": num_questions,
        "vqa_accuracy": scores.get("vqa_accuracy"),
        "vqa_accuracy_shuffled_images": shuffled_accuracy,
        "per_answer_type": {
            key.removeprefix("vqa_accuracy_"): value for key, value in scores.items() if key.startswith("vqa_accuracy_")
        },
        "loss": scores.get("loss"),
        "seed": seed,
        **extra,
    }


def official_results(dataset: Dataset, answers: list[str]) -> list[dict[str, Any]]:
    """Predictions in the official results format: `[{"question_id": ..., "answer": ...}]`."""
    return [
        {"question_id": question_id, "answer": answer}
        for question_id, answer in zip(column(dataset, "question_id"), answers, strict=True)
    ]


def run_card(
    code_folder: Path,
    splits: dict[str, Dataset],
    wall_seconds: float,
    train_metrics: dict[str, float],
    world_size: int,
) -> dict[str, Any]:
    """What is needed to trust or repeat a run: code and package versions, data fingerprints, device, speed."""
    return {
        "git_commit": git_commit(code_folder),
        "packages": package_versions(),
        "python": platform.python_version(),
        "datasets": {name: {"fingerprint": split._fingerprint, "rows": len(split)} for name, split in splits.items()},
        "device": device_description(),
        "world_size": world_size,
        "wall_seconds": round(wall_seconds, 1),
        "train_seconds": round(train_metrics.get("train_runtime", 0.0), 1),
        "train_samples_per_second": round(train_metrics.get("train_samples_per_second", 0.0), 1),
    }
