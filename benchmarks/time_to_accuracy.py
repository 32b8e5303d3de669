"""Time to accuracy of one training recipe over seeds: run `python train.py <overrides> seed=S` for each seed, one
after another, and record the whole command's wall time, when validation first reached 95% and 99% (seconds since
training began, from the evaluations the Trainer prints), the test accuracy and the shuffled-image check.

Each recipe is one entry (by `--name`) of the JSON file, which keeps the other recipes' entries and, for the same
name and overrides, the seeds not measured this time; so the table of docs/time-to-accuracy.md grows one
measurement at a time (`--table` prints it). A run past `--time-limit` is stopped; its entry keeps the evaluations
it printed and says so.

    python benchmarks/time_to_accuracy.py --name default --seeds 0 1 2
    python benchmarks/time_to_accuracy.py --name lr1e-3 --seeds 0 1 -- trainer.args.learning_rate=1e-3
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vqa.provenance import provenance

ROOT = Path(__file__).resolve().parent.parent
TARGETS = (95.0, 99.0)


def printed_logs(output: str) -> list[dict[str, Any]]:
    """The Trainer's printed log entries (`{'eval_loss': '0.1', ...}`), values as floats where they are numbers."""
    entries = []
    for line in output.splitlines():
        line = line.strip()
        if not (line.startswith("{'") and line.endswith("}")):
            continue
        try:
            entry = ast.literal_eval(line)
        except (ValueError, SyntaxError):
            continue
        entries.append({key: _number(value) for key, value in entry.items()})
    return entries


def _number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def first_reaching(evaluations: list[dict[str, float]], target: float) -> float | None:
    """Seconds since training began at the first evaluation with validation accuracy >= target."""
    for entry in evaluations:
        if entry["vqa_accuracy"] >= target:
            return entry["elapsed_seconds"]
    return None


def run_seed(overrides: list[str], seed: int, run_dir: Path, time_limit: float) -> dict[str, Any]:
    command = [sys.executable, "train.py", *overrides, f"seed={seed}", f"hydra.run.dir={run_dir}"]
    log_file = run_dir.parent / f"seed{seed}.out"  # written as the run goes, to follow it with `tail -f`
    log_file.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log_file.open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            returncode: int | None = process.wait(timeout=time_limit)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            returncode = None
    wall = time.perf_counter() - start
    output = log_file.read_text(errors="replace")
    evaluations = [
        {
            "step_epoch": entry.get("epoch"),
            "elapsed_seconds": entry.get("elapsed_seconds"),
            "vqa_accuracy": entry["eval_vqa_accuracy"],
        }
        for entry in printed_logs(output)
        if "eval_vqa_accuracy" in entry
    ]
    record: dict[str, Any] = {
        "seed": seed,
        "command": " ".join(["python train.py", *overrides, f"seed={seed}"]),
        "returncode": returncode,
        "stopped_at_time_limit": returncode is None,
        "wall_seconds": round(wall, 1),
        "evaluations": evaluations,
        **{f"seconds_to_{int(target)}": first_reaching(evaluations, target) for target in TARGETS},
    }
    metrics_file = run_dir / "metrics.json"
    if returncode == 0 and metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        card = json.loads((run_dir / "run_card.json").read_text())
        record.update(
            test=metrics.get("vqa_accuracy"),
            test_shuffled_images=metrics.get("vqa_accuracy_shuffled_images"),
            validation=metrics["validation"]["vqa_accuracy"],
            train_seconds=card.get("train_seconds"),
            train_samples_per_second=card.get("train_samples_per_second"),
        )
    return record


def markdown_table(results: dict[str, Any]) -> str:
    """One row per recipe, in the order measured; a cell lists the seeds' values in seed order ('-': not reached,
    or the run stopped before its test)."""

    def cells(seeds: list[dict[str, Any]], key: str) -> str:
        values = [seed.get(key) for seed in seeds]
        return ", ".join("-" if value is None else f"{value:g}" for value in values)

    def last_validation(seeds: list[dict[str, Any]]) -> str:
        """The last evaluation's accuracy and when (s since training began), per seed."""
        last = [seed["evaluations"][-1] if seed["evaluations"] else None for seed in seeds]
        return ", ".join(
            "-" if entry is None else f"{entry['vqa_accuracy']:g} ({entry['elapsed_seconds']:g})" for entry in last
        )

    lines = [
        "| recipe | overrides | seeds | s to 95% val | s to 99% val | last validation (s) | test | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, recipe in results["recipes"].items():
        seeds = recipe["seeds"]
        lines.append(
            f"| {name} | `{' '.join(recipe['overrides']) or '(none)'}` | {cells(seeds, 'seed')} "
            f"| {cells(seeds, 'seconds_to_95')} | {cells(seeds, 'seconds_to_99')} | {last_validation(seeds)} "
            f"| {cells(seeds, 'test')} "
            f"| {cells(seeds, 'wall_seconds')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", help="the recipe's name in the JSON file")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/time_to_accuracy_recipes.json")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/time_to_accuracy"), help="where run folders go")
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds before a run is stopped")
    parser.add_argument("--table", action="store_true", help="print the markdown table of --out and exit")
    parser.add_argument("overrides", nargs="*", help="train.py overrides (after --)")
    options = parser.parse_args()
    if options.table:
        if not options.out.is_file():
            parser.error(f"--table: {options.out} not found; measure a recipe first (--name ...) or pass --out")
        print(markdown_table(json.loads(options.out.read_text())))
        return
    if not options.name:
        parser.error("--name is required to measure a recipe")
    seeds = []
    for seed in options.seeds:
        record = run_seed(options.overrides, seed, options.runs / options.name / f"seed{seed}", options.time_limit)
        seeds.append(record)
        print(json.dumps({key: value for key, value in record.items() if key != "evaluations"}), flush=True)
    results = json.loads(options.out.read_text()) if options.out.is_file() else {"recipes": {}}
    earlier = results["recipes"].get(options.name)
    if earlier is not None and earlier["overrides"] == options.overrides:
        # The same recipe measured again: its other seeds stay, so seeds can be measured one session at a time.
        kept = [record for record in earlier["seeds"] if record["seed"] not in options.seeds]
        seeds = sorted(kept + seeds, key=lambda record: record["seed"])
    measured_by = provenance(ROOT)
    results["recipes"][options.name] = {"overrides": options.overrides, "seeds": seeds, "provenance": measured_by}
    results["provenance"] = measured_by  # of the latest recipe; each recipe keeps its own
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
