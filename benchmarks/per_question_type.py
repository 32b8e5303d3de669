"""Official VQA accuracy per question type of finished runs, worst first: where a variant loses its points.

Scores each run's `predictions.json` against the split it answered (rebuilt from the run's own `config.yaml`, read
from the dataset cache) with the official code's `perQuestionType`, and writes one JSON file.

    python benchmarks/per_question_type.py RUN_DIR [RUN_DIR ...] --out benchmarks/results/per_question_type.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf

from vqa.evaluation.metrics import ScoredQuestion, vqa_accuracy
from vqa.provenance import provenance


def per_question_type(run_dir: Path) -> dict[str, Any]:
    """{split, overall, per_question_type: {type: accuracy}} of one run's predictions."""
    config = OmegaConf.load(run_dir / "config.yaml")
    split_name = config.final_split
    split = instantiate(config.data)[split_name]
    predictions = json.loads((run_dir / "predictions.json").read_text())
    answers = {entry["question_id"]: entry["answer"] for entry in predictions}
    accuracy = vqa_accuracy(
        ScoredQuestion(qid, answers[qid], humans, str(answer_type), str(question_type))
        for qid, humans, answer_type, question_type in zip(
            split["question_id"], split["answers"], split["answer_type"], split["question_type"], strict=True
        )
    )
    by_type = dict(sorted(accuracy["perQuestionType"].items(), key=lambda item: item[1]))
    card_file = run_dir / "run_card.json"
    card = json.loads(card_file.read_text()) if card_file.is_file() else {}
    return {
        "run": str(run_dir),
        "git_commit": card.get("git_commit"),  # the run's own code and machine; `provenance` is this process's
        "device": card.get("device"),
        "split": split_name,
        "overall": accuracy["overall"],
        "per_question_type": by_type,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/per_question_type.json"))
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        missing = [name for name in ("config.yaml", "predictions.json") if not (run_dir / name).is_file()]
        if missing:
            print(f"error: {run_dir}: no {', '.join(missing)}, expected a finished run of train.py", file=sys.stderr)
            return 2
    records = [per_question_type(run_dir) for run_dir in args.run_dirs]
    command = "python benchmarks/per_question_type.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {"command": command, "runs": records, "provenance": provenance(Path(__file__).resolve().parents[1])}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for record in records:
        print(f"{record['run']}: {record['overall']} on {record['split']}")
        for question_type, value in record["per_question_type"].items():
            print(f"  {value:6.2f}  {question_type}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
