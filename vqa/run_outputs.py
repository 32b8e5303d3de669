"""The files a run leaves in its folder (metrics.json, predictions.json, run_card.json; config.yaml is written when
the run starts) and the summary it prints at the end."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from datasets import Dataset

from vqa.data.benchmark import VQA, question_id_results
from vqa.evaluation.answering import Fitted
from vqa.evaluation.final import FinalEvaluation
from vqa.provenance import device_description, git_commit, package_versions

CODE_FOLDER = Path(__file__).resolve().parents[1]  # the checkout whose commit a run card names


def write_json(path: Path, content: Any) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n")


def metrics_content(
    split: str,
    num_questions: int,
    scores: dict[str, Any],
    shuffled_accuracy: float | None = None,
    seed: int | None = None,
    benchmark: str = VQA.name,
    upload_file: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """metrics.json: the final split's VQA accuracy overall and per answer type, the benchmark's own official metrics,
    the shuffled-image check's accuracy, the loss (None without a network), the run's seed and `extra` entries (such
    as a baseline's settings).

    Args:
        scores: `vqa_accuracy`, `vqa_accuracy_<answer type>`, the benchmark's entries and optionally `loss`, as from
            `score_split`.
        benchmark: the name of the benchmark that scored the split.
        upload_file: the run folder's file in its upload format (None when the split was not answered).
    """
    return {
        "split": split,
        "num_questions": num_questions,
        "vqa_accuracy": scores.get("vqa_accuracy"),
        "vqa_accuracy_shuffled_images": shuffled_accuracy,
        "per_answer_type": {
            key.removeprefix("vqa_accuracy_"): value for key, value in scores.items() if key.startswith("vqa_accuracy_")
        },
        "benchmark": {
            "name": benchmark,
            "scores": {key: value for key, value in scores.items() if key != "loss" and not key.startswith("vqa_acc")},
            "upload_file": upload_file,
        },
        "loss": scores.get("loss"),
        "seed": seed,
        **extra,
    }


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


def write_run_folder(
    run_dir: Path,
    evaluation: FinalEvaluation,
    fitted: Fitted,
    splits: dict[str, Dataset],
    seed: int,
    wall_seconds: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """metrics.json, predictions.json and the benchmark's upload file (when the final split was answered) and
    run_card.json; returns the metrics and the card."""
    validation = {
        "split": evaluation.validation_split,
        "num_questions": evaluation.validation_questions,
        "vqa_accuracy": evaluation.validation_accuracy,
    }
    metrics = metrics_content(
        evaluation.split,
        evaluation.num_questions,
        evaluation.scores,
        evaluation.shuffled_accuracy,
        seed=seed,
        benchmark=evaluation.benchmark.name,
        upload_file=evaluation.benchmark.upload_file if evaluation.answers else None,
        validation=validation,
        **fitted.metrics(),
    )
    if evaluation.answers:
        final_split = splits[evaluation.split]
        write_json(run_dir / "predictions.json", question_id_results(final_split, evaluation.answers))
        benchmark = evaluation.benchmark
        if benchmark.upload_file != "predictions.json":
            write_json(run_dir / benchmark.upload_file, benchmark.upload(final_split, evaluation.answers))
    write_json(run_dir / "metrics.json", metrics)
    card = run_card(CODE_FOLDER, splits, wall_seconds, fitted.train_metrics, fitted.world_size) | fitted.card
    write_json(run_dir / "run_card.json", card)
    return metrics, card


def print_summary(run_dir: Path, metrics: dict[str, Any], card: dict[str, Any]) -> None:
    if not metrics["num_questions"]:
        scored = "not evaluated (final_evaluation: false)"
    elif metrics["vqa_accuracy"] is None:  # a split released without answers
        scored = f"none: the {metrics['num_questions']} {metrics['split']} questions have no human answers here"
    else:
        scored = f"{metrics['vqa_accuracy']} on {metrics['num_questions']} {metrics['split']} questions"
    lines = [
        "",
        f"run folder        {run_dir}",
        f"seed              {metrics.get('seed')}",
        f"VQA accuracy      {scored}",
    ]
    validation = metrics.get("validation")
    if validation and validation["vqa_accuracy"] is not None and validation["split"] != metrics["split"]:
        lines.insert(
            3,
            f"validation        {validation['vqa_accuracy']} on {validation['num_questions']} {validation['split']} "
            "questions (what searches maximise)",
        )
    lines += [f"  {name:<16}{value}" for name, value in metrics["per_answer_type"].items()]
    benchmark = metrics.get("benchmark") or {}
    if benchmark.get("scores"):
        lines.append(f"{benchmark['name']} (the benchmark's official metrics)")
        lines += [f"  {name:<32}{value:.4g}" for name, value in benchmark["scores"].items()]
    if metrics.get("vqa_accuracy_shuffled_images") is not None:
        lines.append(f"shuffled images   {metrics['vqa_accuracy_shuffled_images']} (each question on another image)")
    if metrics.get("classifier"):
        classifier = metrics["classifier"]
        final = classifier["coverage"].get(metrics["split"]) or {}
        covered = (
            f"; {final['covered']}% of the {metrics['split']} questions' answers, ceiling {final['accuracy_ceiling']}"
        )
        lines.append(f"classifier        {classifier['answers']} answers{covered if final else ''}")
    if "baseline" in metrics:
        lines.append(f"baseline          {metrics['baseline']['name']} by {metrics['baseline']['by']}, no training")
    lines += data_caveat_lines(metrics.get("data", {}))
    if benchmark.get("upload_file") not in (None, "predictions.json"):
        lines.append(f"upload file       {run_dir / benchmark['upload_file']} ({benchmark['name']}'s format)")
    lines.append(f"wall time         {card['wall_seconds']:.0f} s (training {card['train_seconds']:.0f} s)")
    if card["train_samples_per_second"]:
        lines.append(f"throughput        {card['train_samples_per_second']} training samples/s on {card['device']}")
    lines += [
        f"feature cache     {component}: {cache['bytes'] / 2**20:.1f} MiB in {len(cache['folders'])} split folders"
        for component, cache in card.get("feature_cache", {}).items()
    ]
    print("\n".join(lines), flush=True)


def data_caveat_lines(report: dict[str, Any]) -> list[str]:
    """Summary lines for what the run did not use as given: dropped records, cut questions, undecodable images."""
    dropped = {reason: count for reason, count in report.get("dropped", {}).items() if count}
    cut = {split: count for split, count in report.get("questions_cut", {}).items() if count}
    lines = []
    if dropped:
        lines.append("data dropped      " + ", ".join(f"{count} {reason}" for reason, count in dropped.items()))
    if cut:
        lines.append("questions cut     " + ", ".join(f"{count} in {split}" for split, count in cut.items()))
    if report.get("undecodable_images"):
        lines.append(
            f"undecodable images {report['undecodable_images']} question rows without their image (files in train.log)"
        )
    return lines
