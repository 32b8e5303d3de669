"""Reading an official JSON release file with every entry checked, for every benchmark's loader.

Each check raises `DataError` with one line: the file, where in it (`questions[3]`, `['20968379']`), what was found
and what was expected. `where` is the entry's place in the file as its loader names it.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

from vqa.data.schema import DataError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # the schema's id columns are int64


def read_json(path: Path, object_hook: Any = None, object_pairs_hook: Any = None) -> Any:
    """The parsed content of a JSON file; a missing, unreadable, malformed or non-UTF-8 file is a DataError."""
    try:
        with path.open(encoding="utf-8") as file:
            return json.load(file, object_hook=object_hook, object_pairs_hook=object_pairs_hook)
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


def read_json_object_without_repeats(path: Path, what: str) -> dict[str, Any]:
    """A JSON file holding one object keyed by id (GQA's questions by question id). `json.load` keeps the last of two
    equal keys silently; here a repeated key in any object of the file is a DataError naming it.

    Args:
        what: what the top-level keys are, for the messages ('question id').
    """

    def refuse_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        content = dict(pairs)
        if len(content) != len(pairs):
            seen: set[str] = set()
            repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
            raise DataError(f"{path}: key {repeated!r} appears twice in one object, expected each {what} once")
        return content

    content = read_json(path, object_pairs_hook=refuse_repeats)
    if not isinstance(content, dict):
        raise DataError(f"{path}: a JSON {type(content).__name__}, expected an object keyed by {what}")
    return content


def required_file(path: Path, benchmark: str) -> Path:
    """`path`, which must be a file of the official release of `benchmark` (named in the error)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected the official {benchmark} file {path.name})")
    return path


def type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(getattr(one, "__name__", str(one)) for one in kinds)


def has_text(entry: Any, name: str) -> bool:
    """Whether `entry` is an object with a string at `name` (to collect ids before each entry is checked in turn)."""
    return isinstance(entry, dict) and isinstance(entry.get(name), str)


def require_fields(path: Path, where: str, entry: Any, fields: Mapping[str, type | tuple[type, ...]]) -> None:
    """`entry` is an object whose `fields` hold values of their types (a bool is not an int here)."""
    if not isinstance(entry, dict):
        raise DataError(f"{path}: {where} is a {type(entry).__name__}, expected an object")
    for name, kind in fields.items():
        value = entry.get(name)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise DataError(f"{path}: {where}.{name} is {value!r}, expected {type_name(kind)}")
        if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
            raise DataError(f"{path}: {where}.{name} is {value}, expected an integer that fits in 64 bits")


def require_file_name(path: Path, where: str, name: str) -> None:
    """`name` (an image id that names a file) is a plain file name: not empty, no folder, no NUL."""
    if name in ("", ".", "..") or any(mark in name for mark in ("/", "\\", "\0")):
        raise DataError(f"{path}: {where} is {name!r}, expected a file name inside the split's image folder")


def require_string_list(path: Path, where: str, values: list[Any], length: int | None = None) -> None:
    """`values` (found at `where`) is a list of strings, of `length` entries when given."""
    if (length is not None and len(values) != length) or not all(isinstance(value, str) for value in values):
        kinds = sorted({type(value).__name__ for value in values})
        expected = f"{length} strings" if length is not None else "strings"
        raise DataError(f"{path}: {where} has {len(values)} entries of {kinds}, expected {expected}")


def require_unique(path: Path, where: str, name: str, value: Hashable, first_seen: dict[Hashable, str]) -> None:
    """Record where `value` of the id field `name` first appeared; a repeat is an error (a join or a score would
    silently keep one of the two)."""
    first = first_seen.setdefault(value, where)
    if first != where:
        raise DataError(f"{path}: {where} repeats {name} {value} (first at {first}), expected each {name} once")


def require_question_text(path: Path, where: str, text: str, label: str) -> None:
    """A question with text in it (`label` says which, e.g. 'question_id 5')."""
    if not text.strip():
        raise DataError(f"{path}: {where}.question is {text!r} ({label}), expected the question's text")


def require_utf8(path: Path, where: str, entry: dict[str, Any], fields: tuple[str, ...], label: str) -> None:
    """Text that Arrow can store: a lone surrogate (a JSON escape like \\ud800) cannot be encoded as UTF-8.

    `fields` name strings or lists of strings. One encode per entry; the culprit is only looked for on failure.
    """
    texts = [text for name in fields for text in _texts(entry.get(name))]
    try:
        "\n".join(texts).encode("utf-8")
    except UnicodeEncodeError:
        for name in fields:
            value = entry.get(name)
            for position, text in enumerate(_texts(value)):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as error:
                    field = f"{name}[{position}]" if isinstance(value, list) else name
                    raise DataError(
                        f"{path}: {where}.{field} ({label}) is {text!r}, {error.reason} at character {error.start}; "
                        "expected text encodable as UTF-8"
                    ) from None


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for text in value if isinstance(text, str)]
    return []
