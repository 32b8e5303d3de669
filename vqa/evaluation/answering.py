"""What answers a split, as the end of a run sees it: a trained model and an answer prior give the same things, so
one evaluation path (`vqa.evaluation.final`) and one run folder serve both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset


@dataclass
class AnsweredSplit:
    """One answer per question of a split, in its order, and the teacher-forced loss where a network gave them."""

    answers: list[str]
    loss: float | None = None


# (split, a name for it: "test", "shuffled", "eval") -> its answers. Under DDP every rank calls it.
Answerer = Callable[[Dataset, str], AnsweredSplit]


@dataclass
class Fitted:
    """What fitting leaves for the evaluation and the run folder, whatever answers (`vqa.training.fit.fit_model`, a
    prior's `vqa.evaluation.baselines.fit_prior`).

    Attributes:
        answer: answers a split.
        logged_validation: the eval split's accuracy of the final weights when training already logged it.
        train_metrics: the Trainer's own (runtime, samples per second); {} without training.
        world_size: processes that trained.
        card: run_card.json entries beyond the common ones.
        metrics: metrics.json entries beyond the common ones (the data report, a baseline's settings), asked for when
            the run folder is written: after the final evaluation, whose undecodable images count too.
        report_parts: what report.html can reuse (the model and processor).
        write_checkpoint: writes the model and processor into a folder; None when there is no network. Every
            process calls it (under FSDP it gathers the whole weights from all ranks); only the writer writes.
        writes_run_folder: whether this process writes the run folder (rank 0).
    """

    answer: Answerer
    logged_validation: float | None = None
    train_metrics: dict[str, float] = field(default_factory=dict)
    world_size: int = 1
    card: dict[str, Any] = field(default_factory=dict)
    metrics: Callable[[], dict[str, Any]] = dict
    report_parts: dict[str, Any] = field(default_factory=dict)
    write_checkpoint: Callable[[Path], None] | None = None
    writes_run_folder: bool = True
