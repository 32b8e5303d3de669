"""The sweep report over seeds: a seed column, and mean and spread per configuration (vqa.inspection.sweep_report)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from vqa.inspection.sweep_report import main as sweep_report

# (run, overrides, seed, accuracy): two configurations, three seeds each; run 5 failed (no metrics.json).
RUNS = [
    ("0", ["model.fusion=tokens", "seed=0"], 0, 99.0),
    ("1", ["model.fusion=tokens", "seed=1"], 1, 99.5),
    ("2", ["model.fusion=tokens", "seed=2"], 2, 98.5),
    ("3", ["model.fusion=pooled", "seed=0"], 0, 90.0),
    ("4", ["model.fusion=pooled", "seed=1"], 1, 94.0),
    ("5", ["model.fusion=pooled", "seed=2"], 2, None),
]


def write_sweep(sweep_dir: Path) -> None:
    for run, overrides, seed, accuracy in RUNS:
        hydra_dir = sweep_dir / run / ".hydra"
        hydra_dir.mkdir(parents=True)
        (hydra_dir / "overrides.yaml").write_text("".join(f"- {override}\n" for override in overrides))
        (hydra_dir / "config.yaml").write_text(f"seed: {seed}\nmodel:\n  fusion: x\n")
        if accuracy is not None:
            metrics = {"vqa_accuracy": accuracy, "seed": seed, "per_answer_type": {"yes_no": accuracy - 1}}
            (sweep_dir / run / "metrics.json").write_text(json.dumps(metrics))


def spread(summary: dict[str, str]) -> list[str]:
    return [summary[f"vqa_accuracy_{name}"] for name in ("mean", "std", "min", "max")]


def test_seeds_get_their_own_column_and_each_configuration_its_mean_and_spread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_sweep(tmp_path)
    assert sweep_report([str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| run | seed | status | model.fusion | vqa_accuracy | acc_yes_no |" in printed
    assert (
        "| 4 | 1 | finished | pooled | 94.0 | 93.0 |" in printed and "| 5 | 2 | unfinished | pooled |  |  |" in printed
    )
    assert "1 of 6 runs have no metrics.json" in printed
    with (tmp_path / "report_by_configuration.csv").open() as file:
        summary = {row["model.fusion"]: row for row in csv.DictReader(file)}
    tokens, pooled = summary["tokens"], summary["pooled"]
    assert (tokens["runs"], tokens["seeds"]) == ("3", "0 1 2")
    # Mean 99.0; sample standard deviation of (99.0, 99.5, 98.5): sqrt((0 + 0.25 + 0.25) / 2) = 0.5.
    assert spread(tokens) == ["99.0", "0.5", "98.5", "99.5"]
    assert tokens["acc_yes_no_mean"] == "98.0"
    # The failed run is not averaged as a zero: two runs, mean 92.0, standard deviation sqrt(8) = 2.83.
    assert (pooled["runs"], pooled["seeds"]) == ("2", "0 1")
    assert spread(pooled) == ["92.0", "2.83", "90.0", "94.0"]
    assert "per configuration, over its seeds" in printed


def test_a_sweep_without_repeated_configurations_has_no_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_sweep(tmp_path)
    for run in ("1", "2", "4", "5"):
        shutil.rmtree(tmp_path / run)
    assert sweep_report([str(tmp_path)]) == 0
    assert "per configuration" not in capsys.readouterr().out
    assert not (tmp_path / "report_by_configuration.csv").exists()


def test_a_damaged_run_config_leaves_its_seed_cell_empty_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_sweep(tmp_path)
    (tmp_path / "1" / ".hydra" / "config.yaml").write_text("seed: [unclosed\n")
    assert sweep_report([str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert f"warning: {tmp_path / '1' / '.hydra' / 'config.yaml'}: unreadable" in captured.err
    assert "| 1 |  | finished | tokens | 99.5 | 98.5 |" in captured.out


def test_a_failed_job_is_marked_with_its_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_sweep(tmp_path)
    (tmp_path / "5" / "error.json").write_text(
        json.dumps({"error": "seed: got 'x' (str), expected int", "user_error": True})
    )
    (tmp_path / "4" / "error.json").write_text("{damaged")
    assert sweep_report([str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| 5 | 2 | failed | pooled |  |  |" in printed
    assert "run 5 failed: seed: got 'x' (str), expected int" in printed
    # A damaged error.json still marks its job failed (its metrics are not counted), naming the file.
    assert (
        "| 4 | 1 | failed | pooled |  |  |" in printed
        and f"run 4 failed: {tmp_path / '4' / 'error.json'}: unreadable" in printed
    )
    assert "no metrics.json" not in printed  # no job is merely unfinished


def test_the_best_run_is_chosen_by_validation_never_by_the_final_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run 1 has the best test accuracy, run 0 the best validation accuracy: the table shows both and names run 0."""
    for run, (validation, test) in enumerate([(97.0, 95.0), (96.0, 99.0)]):
        hydra_dir = tmp_path / str(run) / ".hydra"
        hydra_dir.mkdir(parents=True)
        (hydra_dir / "overrides.yaml").write_text(f"- trainer.args.learning_rate={run + 1}e-4\n")
        metrics = {"vqa_accuracy": test, "validation": {"split": "validation", "vqa_accuracy": validation}}
        (tmp_path / str(run) / "metrics.json").write_text(json.dumps(metrics))
    assert sweep_report([str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| run | seed | trainer.args.learning_rate | val_vqa_accuracy | vqa_accuracy |" in printed
    assert "best by validation: run 0 (val_vqa_accuracy 97.0; its final-split vqa_accuracy 95.0" in printed
