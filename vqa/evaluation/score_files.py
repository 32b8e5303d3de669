"""Official VQA accuracy for a results file.

    python -m vqa.evaluation.score_files --questions Q.json --annotations A.json --results R.json

prints one JSON object with `overall`, `perAnswerType` and `perQuestionType` (percent, 2 decimals), as the
official tool's `accuracy` dict. Results are `[{"question_id": int, "answer": str}, ...]` covering exactly the
annotated question ids. Exit status 2, with one line on stderr, for a malformed file or a mismatch.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from vqa.data.schema import DataError
from vqa.data.vqa_v2_files import load_annotations, load_questions, read_json
from vqa.errors import ArgumentParser, exit_on_user_error
from vqa.evaluation.metrics import ScoredQuestion, vqa_accuracy


def load_results(path: Path) -> dict[int, str]:
    """Results by question id; each entry must be `{"question_id": int, "answer": str}`, ids unique."""
    content = read_json(path)
    if not isinstance(content, list):
        raise DataError(f"{path}: expected a list of {{question_id, answer}} objects, found {type(content).__name__}")
    results: dict[int, str] = {}
    for index, entry in enumerate(content):
        if not isinstance(entry, dict):
            raise DataError(f"{path}: [{index}] is a {type(entry).__name__}, expected an object")
        question_id, answer = entry.get("question_id"), entry.get("answer")
        if not isinstance(question_id, int) or isinstance(question_id, bool):
            raise DataError(f"{path}: [{index}].question_id is {question_id!r}, expected an integer")
        if not isinstance(answer, str):
            raise DataError(f"{path}: [{index}].answer is {answer!r}, expected a string")
        if question_id in results:
            raise DataError(f"{path}: [{index}] repeats question_id {question_id}, expected one result per question")
        results[question_id] = answer
    return results


def check_file_argument(option: str, path: Path) -> None:
    """A path argument that is a folder, or a file that cannot be read, is one line naming the option (a missing
    file is named by the reader).

    Raises:
        DataError: `path` is a folder or not readable.
    """
    if path.is_dir():
        raise DataError(f"{option}: {path} is a folder; expected a JSON file")
    if path.exists() and not os.access(path, os.R_OK):
        raise DataError(f"{option}: {path} cannot be read (permission denied); expected a readable JSON file")


def evaluate_files(questions_path: Path, annotations_path: Path, results_path: Path) -> dict[str, Any]:
    """Check the three files against each other and score the results."""
    questions = {entry["question_id"] for entry in load_questions(questions_path)}
    annotations = load_annotations(annotations_path)
    results = load_results(results_path)
    unasked = sorted(set(annotations) - questions)
    if unasked:
        raise DataError(f"{questions_path}: {len(unasked)} annotated question ids are not here (first: {unasked[0]})")
    missing, extra = sorted(set(annotations) - set(results)), sorted(set(results) - set(annotations))
    if missing or extra:
        raise DataError(
            f"{results_path}: results must cover exactly the annotated question ids; "
            f"{len(missing)} have no result (first: {missing[:1]}), {len(extra)} are not annotated (first: {extra[:1]})"
        )
    return vqa_accuracy(
        ScoredQuestion(
            question_id=question_id,
            prediction=results[question_id],
            human_answers=annotation["answers"],
            answer_type=annotation["answer_type"],
            question_type=annotation["question_type"],
        )
        for question_id, annotation in annotations.items()
    )


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m vqa.evaluation.score_files",
        description="Official VQA accuracy (GT-Vision-Lab/VQA, 2021 behaviour) of a results file.",
    )
    parser.add_argument("--questions", required=True, type=Path, help="official questions JSON")
    parser.add_argument("--annotations", required=True, type=Path, help="official annotations JSON")
    parser.add_argument("--results", required=True, type=Path, help='[{"question_id": ..., "answer": ...}]')
    args = parser.parse_args(argv)
    with exit_on_user_error():
        for option in ("questions", "annotations", "results"):
            check_file_argument(f"--{option}", getattr(args, option))
        accuracy = evaluate_files(args.questions, args.annotations, args.results)
    print(json.dumps(accuracy, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
