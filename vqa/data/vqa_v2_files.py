"""Reading the official VQA v2 JSON files (questions and annotations) with every field checked: a malformed file, a
missing or mistyped field, a repeated id, text that is not UTF-8, or the file of another split is one line naming
the file, the entry and what was expected (`DataError`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from vqa.data.schema import ANSWERS_PER_QUESTION, DataError


def read_json(path: Path, object_hook: Any = None) -> Any:
    try:
        with path.open(encoding="utf-8") as file:
            return json.load(file, object_hook=object_hook)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: a folder, expected a JSON file") from None
    except OSError as error:  # unreadable: permissions, a device error
        raise DataError(f"{path}: cannot be read ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: malformed JSON at line {error.lineno} column {error.colno}: {error.msg}") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


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


def _require_fields(path: Path, list_key: str, index: int, entry: Any, fields: dict[str, type]) -> None:
    if not isinstance(entry, dict):
        raise DataError(f"{path}: {list_key}[{index}] is a {type(entry).__name__}, expected an object")
    for name, kind in fields.items():
        value = entry.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DataError(
                f"{path}: {list_key}[{index}].{name} is {value!r}, expected {getattr(kind, '__name__', kind)}"
            )


QUESTION_FIELDS = {"question_id": int, "image_id": int, "question": str}
ANNOTATION_FIELDS = {
    "question_id": int,
    "image_id": int,
    "answers": list,
    "multiple_choice_answer": str,
    "answer_type": str,
    "question_type": str,
}


def _require_unique_id(path: Path, list_key: str, index: int, question_id: int, first_index: dict[int, int]) -> None:
    """Record where `question_id` first appeared; a repeat is an error (a join would silently keep one of them)."""
    first = first_index.setdefault(question_id, index)
    if first != index:
        raise DataError(
            f"{path}: {list_key}[{index}] repeats question_id {question_id} (first at {list_key}[{first}]), "
            "expected each question_id once"
        )


def _require_utf8(path: Path, list_key: str, index: int, entry: dict[str, Any], fields: tuple[str, ...]) -> None:
    """Text that Arrow can store: a lone surrogate (a JSON escape like \\ud800) cannot be encoded as UTF-8.

    `fields` name strings or lists of strings. One encode per entry; the culprit is only looked for on failure.
    """
    texts = [text for name in fields for text in (entry[name] if isinstance(entry[name], list) else [entry[name]])]
    try:
        "\n".join(texts).encode("utf-8")
    except UnicodeEncodeError:
        for name in fields:
            values = entry[name] if isinstance(entry[name], list) else [entry[name]]
            for position, text in enumerate(values):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as error:
                    field = f"{name}[{position}]" if isinstance(entry[name], list) else name
                    raise DataError(
                        f"{path}: {list_key}[{index}].{field} (question_id {entry['question_id']}) is {text!r}, "
                        f"{error.reason} at character {error.start}; expected text encodable as UTF-8"
                    ) from None


TEXT_ANNOTATION_FIELDS = ("answers", "multiple_choice_answer", "answer_type", "question_type")


def load_questions(path: Path, split: str | None = None) -> list[dict[str, Any]]:
    """The `questions` list of an official questions file, each entry checked: fields, unique ids, text."""
    content = read_json(path)
    _check_subtype(path, content if isinstance(content, dict) else {}, split)
    entries = _entries(path, content, "questions")
    first_index: dict[int, int] = {}
    for index, entry in enumerate(entries):
        _require_fields(path, "questions", index, entry, QUESTION_FIELDS)
        _require_unique_id(path, "questions", index, entry["question_id"], first_index)
        if not entry["question"].strip():
            raise DataError(
                f"{path}: questions[{index}].question is {entry['question']!r} (question_id {entry['question_id']}), "
                "expected the question's text"
            )
        _require_utf8(path, "questions", index, entry, ("question",))
    return entries


def _compact_answer(entry: dict[str, Any]) -> Any:
    """json object_hook: each human answer `{answer, answer_confidence, answer_id}` becomes its interned text.

    VQA v2 train has 4.4 million of these; as dicts they would take gigabytes, as shared strings a few MB.
    """
    if "answer_id" in entry and isinstance(entry.get("answer"), str):
        return sys.intern(entry["answer"])
    return entry


def load_annotations(path: Path, split: str | None = None) -> dict[int, dict[str, Any]]:
    """Official annotations by question id; each entry's `answers` becomes the list of ten answer strings."""
    content = read_json(path, object_hook=_compact_answer)
    _check_subtype(path, content if isinstance(content, dict) else {}, split)
    entries = _entries(path, content, "annotations")
    by_question: dict[int, dict[str, Any]] = {}
    first_index: dict[int, int] = {}
    for index, entry in enumerate(entries):
        _require_fields(path, "annotations", index, entry, ANNOTATION_FIELDS)
        _require_unique_id(path, "annotations", index, entry["question_id"], first_index)
        answers = entry["answers"]
        if len(answers) != ANSWERS_PER_QUESTION or not all(isinstance(answer, str) for answer in answers):
            raise DataError(
                f"{path}: annotations[{index}].answers has {len(answers)} entries of "
                f"{sorted({type(a).__name__ for a in answers})}, expected {ANSWERS_PER_QUESTION} objects "
                "with 'answer', 'answer_confidence', 'answer_id'"
            )
        _require_utf8(path, "annotations", index, entry, TEXT_ANNOTATION_FIELDS)
        by_question[entry["question_id"]] = entry
    return by_question
