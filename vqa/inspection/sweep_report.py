"""Turn a Hydra multirun folder into one table of overrides against metrics (markdown and CSV).

    python -m vqa.inspection.sweep_report multirun/2026-11-21/10-00-00 [--csv table.csv]

Each run folder contributes one row: its seed (from `.hydra/config.yaml`), the overrides that differ between runs
(from `.hydra/overrides.yaml`; the ones all runs share are listed above the table) and its `metrics.json`
(`val_vqa_accuracy`, the validation split's accuracy that runs are compared on; `vqa_accuracy`, the final split's,
recorded; the shuffled-image check's accuracy as `shuffled_images`; the per-answer-type accuracies). The best run
by validation accuracy is named under the table.
Runs without metrics are listed with empty metric cells and counted, not dropped; a `status` column then says which
failed (their `error.json`, written by the job: the error line is printed under the table) and which are
unfinished. A run whose own files are damaged (`.hydra/overrides.yaml`, `.hydra/config.yaml` or `metrics.json`:
not readable, not YAML or JSON, or not the structure a run writes) is listed with what could be read, a warning on
stderr, and a `damaged` column naming each file and what is wrong with it; the rest of the sweep is reported as usual.

When a configuration (the varying overrides other than `seed`) ran with several seeds, as in
`python train.py -m seed=0,1,2`, a second table gives each configuration's mean, standard deviation (n - 1) and
range over its seeds, also written as `report_by_configuration.csv` beside the CSV.

A multirun prints these tables when it ends (`vqa.inspection.sweep_end`, a callback in conf/config.yaml). A job that
fails does not stop the sweep (`vqa.run.run_in_sweep`): the other jobs run, the table marks it, and the multirun
exits with status 2 when every failure was a user error, 1 when one was a bug.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import yaml

from vqa.errors import FAILURE_FILE, USER_ERROR_EXIT_STATUS, ArgumentParser, one_line

SEED = "seed"
VALIDATION = "val_vqa_accuracy"  # the column runs are compared on: the validation split's accuracy
STATUS, ERROR, USER_ERROR = "status", "error", "user_error"  # row keys; error and user_error only for failed jobs
DAMAGED = "damaged"  # row key and column, only for runs with damaged files: "<file>: <what is wrong>; ..."
T = TypeVar("T")


class SweepRows(NamedTuple):
    """A sweep folder as `collect_rows` reads it."""

    rows: list[dict[str, Any]]  # one per run folder, in run order
    override_columns: list[str]  # the overrides found, in order of first appearance
    metric_columns: list[str]  # the metrics found, likewise


def collect_rows(sweep_dir: Path) -> SweepRows:
    """Rows (one per run), override columns and metric columns, in a stable order. A run's damaged files leave
    their cells empty and are named in its `damaged` cell (`RunDamage`), so one damaged job never stops the report."""
    rows: list[dict[str, Any]] = []
    override_columns: list[str] = []
    metric_columns: list[str] = []
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml"), key=_run_order):
        run_dir = overrides_file.parent.parent
        damage = RunDamage(run_dir)
        row: dict[str, Any] = {"run": run_dir.name, SEED: damage.read(run_seed, run_dir, None, "a seed")}
        for key, value in damage.read(read_overrides, overrides_file, [], "its overrides"):
            if key == SEED:  # the seed column holds it, whether it was overridden or not
                continue
            row[key] = value
            if key not in override_columns:
                override_columns.append(key)
        failure = read_failure(run_dir / FAILURE_FILE)
        if failure is not None:
            row[STATUS], row[ERROR], row[USER_ERROR] = "failed", failure.get("error"), failure.get("user_error")
        metrics_file = run_dir / "metrics.json"
        has_metrics = metrics_file.exists() and failure is None
        metrics = damage.read(read_metrics, metrics_file, None, "metrics") if has_metrics else None
        row.setdefault(STATUS, "finished" if metrics is not None else "unfinished")
        for key, value in (metrics or {}).items():
            row[key] = value
            if key not in metric_columns:
                metric_columns.append(key)
        if damage.notes:
            row[DAMAGED] = "; ".join(damage.notes)
        rows.append(row)
    return SweepRows(rows, override_columns, metric_columns)


class DamagedFile(Exception):
    """A run's file that cannot be read as a run writes it; `reason` says what is wrong (one line)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class RunDamage:
    """The damaged files of one run: each read through `read`, which warns on stderr and keeps a note."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.notes: list[str] = []  # "<file relative to the run folder>: <reason>"

    def read(self, reader: Callable[[Path], T], path: Path, default: T, listed_without: str) -> T:
        """`reader(path)`, or `default` when it raises DamagedFile."""
        try:
            return reader(path)
        except DamagedFile as damaged:
            print(f"warning: {damaged}; its run is listed without {listed_without}", file=sys.stderr)
            name = damaged.path.relative_to(self.run_dir) if damaged.path.is_relative_to(self.run_dir) else damaged.path
            self.notes.append(f"{name}: {damaged.reason}")
            return default


def read_overrides(path: Path) -> list[tuple[str, str]]:
    """(key, value) of each `key=value` in a job's `.hydra/overrides.yaml` (a YAML list of strings).

    Raises:
        DamagedFile: unreadable, not YAML, or not a list of strings.
    """
    overrides = _load(path, yaml.safe_load)
    if overrides is None:
        return []
    if not isinstance(overrides, list) or not all(isinstance(override, str) for override in overrides):
        raise DamagedFile(path, f"expected a YAML list of key=value strings, found {_describe(overrides)}")
    return [(key, value) for key, _, value in (override.partition("=") for override in overrides)]


def run_seed(run_dir: Path) -> Any:
    """The seed a run used: `seed` of the config Hydra composed for it (None when that file is missing).

    Raises:
        DamagedFile: `.hydra/config.yaml` unreadable, not YAML or not a mapping.
    """
    config_file = run_dir / ".hydra" / "config.yaml"
    if not config_file.exists():
        return None
    config = _load(config_file, yaml.safe_load)
    if not isinstance(config, dict):
        raise DamagedFile(config_file, f"expected a YAML mapping, found {_describe(config)}")
    return config.get(SEED)


def _load(path: Path, parse: Callable[[str], Any]) -> Any:
    """`parse` of the file's text; DamagedFile when it cannot be read or parsed."""
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:  # JSONDecodeError is a ValueError
        raise DamagedFile(path, f"unreadable ({one_line(str(error))})") from None


def _describe(value: Any) -> str:
    return (
        type(value).__name__
        if not isinstance(value, list)
        else f"a list of {sorted({type(v).__name__ for v in value})}"
    )


def by_configuration(
    rows: list[dict[str, Any]], configuration_columns: list[str], metric_columns: list[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per configuration (the values of `configuration_columns`): its runs with metrics, their seeds, and
    per metric the mean, standard deviation (n - 1; empty for one run), minimum and maximum, rounded to 2 places."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(str(row.get(column)) for column in configuration_columns), []).append(row)
    summary_columns = ["runs", "seeds"]
    for metric in metric_columns:
        summary_columns += [f"{metric}_mean", f"{metric}_std", f"{metric}_min", f"{metric}_max"]
    summaries = []
    for members in groups.values():
        finished = [row for row in members if row.get("vqa_accuracy") is not None]
        summary = {column: members[0].get(column) for column in configuration_columns}
        summary.update(runs=len(finished), seeds=" ".join(str(row.get(SEED)) for row in finished))
        for metric in metric_columns:
            values = [float(row[metric]) for row in finished if row.get(metric) is not None]
            if values:
                summary[f"{metric}_mean"] = round(statistics.fmean(values), 2)
                summary[f"{metric}_std"] = round(statistics.stdev(values), 2) if len(values) > 1 else None
                summary[f"{metric}_min"], summary[f"{metric}_max"] = min(values), max(values)
        summaries.append(summary)
    return summaries, [*configuration_columns, *summary_columns]


def read_failure(path: Path) -> dict[str, Any] | None:
    """A failed job's `error.json` (written by `vqa.run.run_in_sweep`), or None when the job did not fail there.
    A damaged file still marks the job failed, with the damage as its error line."""
    if not path.is_file():
        return None
    try:
        failure = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return {"error": f"{path}: unreadable ({one_line(str(error))})", "user_error": False}
    return failure if isinstance(failure, dict) else {"error": f"{path}: not a JSON object", "user_error": False}


def read_metrics(path: Path) -> dict[str, Any]:
    """A run's metrics.json as the table's metric cells: `val_vqa_accuracy` (when the run has a validation split),
    `vqa_accuracy`, `shuffled_images` (when measured) and `acc_<answer type>`.

    Raises:
        DamagedFile: unreadable, not JSON, or not the object a run writes (a metric that is not a number or null).
    """
    metrics = _load(path, json.loads)
    if not isinstance(metrics, dict):
        raise DamagedFile(path, f"expected a JSON object, found {_describe(metrics)}")
    validation, per_type = metrics.get("validation") or {}, metrics.get("per_answer_type") or {}
    for name, value in (("validation", validation), ("per_answer_type", per_type)):
        if not isinstance(value, dict):
            raise DamagedFile(path, f"{name} is {_describe(value)}, expected an object")
    # (cell, field in metrics.json, value). The held-out split the runs are compared on first; the final split's
    # accuracy is for the record. (Runs written before metrics.json had a `validation` entry have no such cell.)
    found = [(VALIDATION, "validation.vqa_accuracy", validation.get("vqa_accuracy"))] if validation else []
    found.append(("vqa_accuracy", "vqa_accuracy", metrics.get("vqa_accuracy")))
    found.append(("shuffled_images", "vqa_accuracy_shuffled_images", metrics.get("vqa_accuracy_shuffled_images")))
    found += [(f"acc_{name}", f"per_answer_type.{name}", value) for name, value in per_type.items()]
    for _, field, value in found:
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise DamagedFile(path, f"{field} is {repr(value)[:60]}, expected a number or null")
    optional = (VALIDATION, "shuffled_images")  # cells only for runs that have the value
    return {cell: value for cell, _, value in found if value is not None or cell not in optional}


def _run_order(path: Path) -> tuple[int, str]:
    name = path.parent.parent.name
    return (int(name), name) if name.isdigit() else (sys.maxsize, name)


def best_run(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The run with the highest validation accuracy (the first of a tie); None when no run has one. Model selection
    reads validation only: the final split's accuracy never decides."""
    scored = [row for row in rows if row.get(VALIDATION) is not None]
    return max(scored, key=lambda row: float(row[VALIDATION])) if scored else None


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def csv_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({column: row.get(column, "") for column in columns} for row in rows)
    return buffer.getvalue()


def damaged_column(rows: list[dict[str, Any]]) -> list[str]:
    """[DAMAGED] when a run has damaged files (the column goes last, after the metrics), else none."""
    return [DAMAGED] if any(row.get(DAMAGED) for row in rows) else []


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def split_overrides(rows: list[dict[str, Any]], override_columns: list[str]) -> tuple[list[str], list[str]]:
    """(the override columns whose value differs between runs, `key=value` of the overrides every run shares).
    The shared ones are the sweep's fixed settings: said once above the table, not as a column."""
    varying = [key for key in override_columns if len({str(row.get(key)) for row in rows}) > 1]
    common = [f"{key}={rows[0][key]}" for key in override_columns if key not in varying]
    return varying, common


def print_sweep_table(
    sweep_dir: Path, csv_path: Path | None = None, collected: SweepRows | None = None
) -> list[dict[str, Any]]:
    """Print the sweep's table (markdown) and write it as CSV (default `<sweep_dir>/report.csv`). Returns the rows
    reported (`collect_rows`, or `collected` when the caller has read them), none (after an error line) when the
    folder holds no runs."""
    rows, override_columns, metric_columns = collected or collect_rows(sweep_dir)
    if not rows:
        print(f"error: {sweep_dir}: no run folders with .hydra/overrides.yaml", file=sys.stderr)
        return rows
    varying, common = split_overrides(rows, override_columns)
    if common:
        print(f"common overrides: {' '.join(common)}\n")
    status = [STATUS] if any(row[STATUS] != "finished" for row in rows) else []
    columns = ["run", SEED, *status, *varying, *metric_columns, *damaged_column(rows)]
    print(markdown_table(rows, columns))
    failed = [row for row in rows if row[STATUS] == "failed"]
    for row in failed:
        print(f"\nrun {row['run']} failed: {row[ERROR]}")
    best = best_run(rows)
    if best is not None:
        print(
            f"\nbest by validation: run {best['run']} ({VALIDATION} {best[VALIDATION]}; "
            f"its final-split vqa_accuracy {best.get('vqa_accuracy')}, recorded, not used to choose)"
        )
    unfinished = sum(row[STATUS] == "unfinished" for row in rows)
    if unfinished:
        print(f"\n{unfinished} of {len(rows)} runs have no metrics.json (unfinished, or stopped without error.json)")
    csv_path = csv_path or sweep_dir / "report.csv"
    csv_path.write_text(csv_table(rows, columns))
    print(f"\nCSV: {csv_path}")
    summaries, summary_columns = by_configuration(rows, varying, metric_columns)
    if any(summary["runs"] > 1 for summary in summaries):
        print("\nper configuration, over its seeds (mean, standard deviation, range):\n")
        print(markdown_table(summaries, summary_columns))
        summary_path = csv_path.with_name(f"{csv_path.stem}_by_configuration.csv")
        summary_path.write_text(csv_table(summaries, summary_columns))
        print(f"\nCSV: {summary_path}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m vqa.inspection.sweep_report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder (holding 0/, 1/, ...)")
    parser.add_argument("--csv", type=Path, help="where to write the CSV (default: <sweep_dir>/report.csv)")
    args = parser.parse_args(argv)
    return 0 if print_sweep_table(args.sweep_dir, args.csv) else USER_ERROR_EXIT_STATUS


if __name__ == "__main__":
    sys.exit(main())
