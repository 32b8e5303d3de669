"""Time to accuracy over seeds or variants: validation accuracy after each epoch against wall time, for every run
of a sweep.

Reads the run folders of a multirun such as `python train.py -m seed=0,1,2` or `experiment=variants` (each run's
`trainer_state.json`, `metrics.json` and `run_card.json`) and writes one JSON file with, per run, its seed and
overrides, the final split's accuracy, wall and training time, and the evaluations logged during training
(`elapsed_seconds` is wall time since training began); it prints a markdown table of validation accuracy per epoch,
one column per run (named by the overrides that differ between the runs, or by its seed).

    python benchmarks/seed_curves.py multirun/<date>/<time> --out benchmarks/results/default_run_seeds.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml

from vqa.provenance import provenance

RUN_FILES = ("metrics.json", "run_card.json", "trainer_state.json")


def run_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides Hydra recorded for the run (none for a run made without Hydra's files)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    return list(yaml.safe_load(path.read_text()) or []) if path.is_file() else []


def run_record(run_dir: Path) -> dict[str, Any]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    card = json.loads((run_dir / "run_card.json").read_text())
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    evaluations = [
        {
            "epoch": round(entry["epoch"], 2),
            "elapsed_seconds": entry.get("elapsed_seconds"),
            "vqa_accuracy": entry["eval_vqa_accuracy"],
            "loss": entry["eval_loss"],
        }
        for entry in history
        if "eval_vqa_accuracy" in entry
    ]
    rewards = [  # objective=rl logs its mean reward with each training loss
        {"step": entry["step"], "elapsed_seconds": entry.get("elapsed_seconds"), "reward": entry["reward"]}
        for entry in history
        if "reward" in entry
    ]
    return {
        "run": run_dir.name,
        "seed": metrics.get("seed"),
        "overrides": run_overrides(run_dir),
        "git_commit": card.get("git_commit"),
        "device": card.get("device"),
        "test": {key: metrics[key] for key in ("vqa_accuracy", "vqa_accuracy_shuffled_images", "per_answer_type")},
        "wall_seconds": card["wall_seconds"],
        "train_seconds": card["train_seconds"],
        "train_samples_per_second": card["train_samples_per_second"],
        "validation": evaluations,
        **({"training_rewards": rewards} if rewards else {}),
    }


def column_names(records: list[dict[str, Any]]) -> list[str]:
    """Per run: the overrides that differ between the runs (a sweep over variants), else its seed."""
    shared = set.intersection(*(set(record["overrides"]) for record in records))
    differing = [[item for item in record["overrides"] if item not in shared] for record in records]
    if any(differing):
        return [" ".join(items) or "(defaults)" for items in differing]
    return [f"seed {record['seed']}" for record in records]


def markdown(records: list[dict[str, Any]]) -> str:
    names = column_names(records)
    lines = ["| epoch | " + " | ".join(names) + " |", "|---|" + "---|" * len(records)]
    longest = max(records, key=lambda record: len(record["validation"]))
    for index, evaluation in enumerate(longest["validation"]):
        cells = [
            f"{record['validation'][index]['vqa_accuracy']} ({record['validation'][index]['elapsed_seconds']:.0f} s)"
            if index < len(record["validation"])
            else ""
            for record in records
        ]
        lines.append(f"| {evaluation['epoch']:g} | " + " | ".join(cells) + " |")
    tests = [record["test"]["vqa_accuracy"] for record in records]
    walls = [record["wall_seconds"] for record in records]
    lines.append("| test | " + " | ".join(f"**{value}**" for value in tests) + " |")
    lines.append("| wall time | " + " | ".join(f"{value:.0f} s" for value in walls) + " |")
    if not names[0].startswith("seed "):  # a sweep over variants: a mean over them means nothing
        return "\n".join(lines)
    spread = statistics.stdev(tests) if len(tests) > 1 else 0.0
    lines.append(
        f"\ntest accuracy {statistics.fmean(tests):.2f} +- {spread:.2f} (mean +- standard deviation, "
        f"{min(tests)}-{max(tests)}); wall time {statistics.fmean(walls):.0f} s ({min(walls):.0f}-{max(walls):.0f})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/default_run_seeds.json"))
    args = parser.parse_args(argv)
    run_dirs = [path.parent for path in args.sweep_dir.glob("*/metrics.json")]
    run_dirs.sort(key=lambda path: (len(path.name), path.name))  # 0, 1, ..., 10 in the order Hydra numbered them
    if not run_dirs:
        print(f"error: {args.sweep_dir}: no run folder with metrics.json", file=sys.stderr)
        return 2
    for run_dir in run_dirs:
        missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
        if missing:
            # Runs from before trainer_state.json was written to the run folder have it only in checkpoint-N/.
            print(f"error: {run_dir}: no {', '.join(missing)}, expected a finished run of train.py", file=sys.stderr)
            return 2
    records = [run_record(run_dir) for run_dir in run_dirs]
    command = "python benchmarks/seed_curves.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {
        "command": command,
        "runs": records,
        # The runs' own code and machine (each run card's); `provenance` is the process that collected them.
        "measured_at": sorted({str(record["git_commit"]) for record in records}),
        "measured_on": sorted({str(record["device"]) for record in records}),
        "provenance": provenance(Path(__file__).resolve().parents[1]),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
