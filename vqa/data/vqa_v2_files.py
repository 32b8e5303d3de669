"""Reading the official VQA v2 JSON files (questions and annotations) with every field checked: a malformed file, a
missing or mistyped field, a repeated id, text that is not UTF-8, or the file of another split is one line naming
the file, the entry and what was expected (`DataError`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from vqa.data.json_checks import read_json, require_fields, require_question_text, require_unique, require_utf8
from vqa.data.schema import ANSWERS_PER_QUESTION, DataError

__all__ = ["load_annotations", "load_questions", "read_json"]


def _check_subtype(path: Path, content: dict[str, Any], split: str | None) -> None:
    # test-dev questions say "test-dev2015"; a file for another split under this name is a common mix-up.
    subtype = content.get("data_subtype")
    if split is not None and subtype is not None and subtype != split:
        raise DataError(f"{path}: data_subtype is {subtype!r}, expected {split!r}")


def _entries(path: Path, content: Any, list_key: str) -> list[dict[str, Any]]:
    if not isinstance(content, dict) or not isinstance(content.get(list_key), list):
        found = type(content).__name__ if not isinstance(content, dict) else f"keys {sorted(content)}"
        raise DataError(f"{path}: expected an object with a {list_key!r} list, found {found}")
    return content[list_key]


QUESTION_FIELDS = {"question_id": int, "image_id": int, "question": str}
ANNOTATION_FIELDS = {
    "question_id": int,
    "image_id": int,
    "answers": list,
    "multiple_choice_answer": str,
    "answer_type": str,
    "question_type": str,
}


TEXT_ANNOTATION_FIELDS = ("answers", "multiple_choice_answer", "answer_type", "question_type")


def load_questions(path: Path, split: str | None = None) -> list[dict[str, Any]]:
    """The `questions` list of an official questions file, each entry checked: fields, unique ids, text."""
    content = read_json(path)
    _check_subtype(path, content if isinstance(content, dict) else {}, split)
    entries = _entries(path, content, "questions")
    first_seen: dict[Any, str] = {}
    for index, entry in enumerate(entries):
        where = f"questions[{index}]"
        require_fields(path, where, entry, QUESTION_FIELDS)
        require_unique(path, where, "question_id", entry["question_id"], first_seen)
        label = f"question_id {entry['question_id']}"
        require_question_text(path, where, entry["question"], label)
        require_utf8(path, where, entry, ("question",), label)
    return entries


def _compact_answer(entry: dict[str, Any]) -> Any:
    """json object_hook: each human answer `{answer, answer_confidence, answer_id}` becomes its interned text.

    VQA v2 train has 4.4 million of these; as dicts they would take gigabytes, as shared strings a few MB.
    """
    if "answer_id" in entry and isinstance(entry.get("answer"), str):
        return sys.intern(entry["answer"])
    return entry


def load_annotations(
    path: Path, split: str | None = None, fields: dict[str, type] = ANNOTATION_FIELDS
) -> dict[int, dict[str, Any]]:
    """Official annotations by question id; each entry's `answers` becomes the list of ten answer strings.

    Args:
        fields: what each annotation must hold (OK-VQA's have no `multiple_choice_answer`).
    """
    content = read_json(path, object_hook=_compact_answer)
    _check_subtype(path, content if isinstance(content, dict) else {}, split)
    entries = _entries(path, content, "annotations")
    by_question: dict[int, dict[str, Any]] = {}
    first_seen: dict[Any, str] = {}
    for index, entry in enumerate(entries):
        where = f"annotations[{index}]"
        require_fields(path, where, entry, fields)
        require_unique(path, where, "question_id", entry["question_id"], first_seen)
        answers = entry["answers"]
        if len(answers) != ANSWERS_PER_QUESTION or not all(isinstance(answer, str) for answer in answers):
            raise DataError(
                f"{path}: annotations[{index}].answers has {len(answers)} entries of "
                f"{sorted({type(a).__name__ for a in answers})}, expected {ANSWERS_PER_QUESTION} objects "
                "with 'answer', 'answer_confidence', 'answer_id'"
            )
        require_utf8(path, where, entry, TEXT_ANNOTATION_FIELDS, f"question_id {entry['question_id']}")
        by_question[entry["question_id"]] = entry
    return by_question
