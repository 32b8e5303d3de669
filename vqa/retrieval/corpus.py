"""A passage corpus: `id`, `title`, `text` from a JSONL or Parquet file, as a Datasets table in the cache.

The file is read once per content: the table is cached under its fingerprint (the SHA-256 of the file's bytes), so
an edited or replaced corpus, even at the same path, is read again and every index built over it is rebuilt.

Each record is checked, and a bad one is a `DataError` naming the file, the line (JSONL) or row (Parquet), the field,
what was found and what was expected: an id that is not a string or an integer, a missing or empty text, a title
that is not a string, a repeated id. `title` may be left out (it is then ""); ids are stored as strings. Blank lines
of a JSONL file are not records.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from datasets import Dataset, Features, Value

from vqa.data.cache import cached_build
from vqa.data.json_checks import require_fields, require_unique, require_utf8
from vqa.data.schema import DataError, column

PASSAGE_FEATURES = Features({"id": Value("string"), "title": Value("string"), "text": Value("string")})
SUFFIXES = {".jsonl": "JSONL", ".parquet": "Parquet"}


@dataclass(frozen=True)
class Corpus:
    """The passages of one corpus file.

    Attributes:
        passages: the table, one row per passage: `id`, `title`, `text` (memory-mapped from the cache).
        fingerprint: the SHA-256 (16 hex digits) of the file's bytes: what caches of anything built on it are keyed by.
        path: the file it was read from.
    """

    passages: Dataset
    fingerprint: str
    path: Path

    def __len__(self) -> int:
        return len(self.passages)

    @cached_property
    def ids(self) -> list[str]:
        """The passages' ids in row order (read once: a search maps its rows to ids)."""
        return column(self.passages, "id")

    def documents(self) -> list[str]:
        """Each passage as one text, `title. text` (or the text alone without a title): what the indexes embed or
        tokenize, and what the model reads."""
        titles, texts = column(self.passages, "title"), column(self.passages, "text")
        return [join_title(title, text) for title, text in zip(titles, texts, strict=True)]

    def document(self, row: int) -> str:
        """The passage of one row as `documents` gives it."""
        record = self.passages[row]
        return join_title(record["title"], record["text"])


def load_corpus(path: str | Path, cache_dir: str | Path) -> Corpus:
    """Read `path` (`.jsonl` or `.parquet`) into the cache, or take it from there when the same content was read before.

    Raises:
        DataError: a missing file, another suffix, or a bad record (one line, see the module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: corpus file not found (expected a .jsonl or .parquet file of id, title, text)")
    if path.suffix not in SUFFIXES:
        raise DataError(f"{path}: a {path.suffix or 'suffixless'} file, expected a corpus in .jsonl or .parquet")
    fingerprint = file_fingerprint(path)

    def build() -> tuple[Dataset, dict[str, Any]]:
        records = read_jsonl(path) if path.suffix == ".jsonl" else read_parquet(path)
        columns = {name: [record[name] for record in records] for name in PASSAGE_FEATURES}
        return Dataset.from_dict(columns, features=PASSAGE_FEATURES), {"source": str(path), "passages": len(records)}

    key = {"corpus": fingerprint, "format": 1}
    passages, _, _ = cached_build(Path(cache_dir) / "retrieval", "corpus", key, build)
    return Corpus(passages, fingerprint, path)


def read_jsonl(path: Path) -> list[dict[str, str]]:
    """The checked records of a JSONL corpus: one JSON object per line."""
    records, first_seen = [], {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}: line {number} is not JSON ({error.msg} at column {error.colno})") from None
        records.append(checked_record(path, f"line {number}", entry, first_seen))
    return require_passages(path, records)


def read_parquet(path: Path) -> list[dict[str, str]]:
    """The checked records of a Parquet corpus: columns `id`, `text` and optionally `title`."""
    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for a damaged or foreign file
        raise DataError(f"{path}: not a readable Parquet file ({error})") from None
    missing = [name for name in ("id", "text") if name not in table.column_names]
    if missing:
        raise DataError(
            f"{path}: no column {', '.join(missing)} (found {', '.join(table.column_names)}), expected id, text"
        )
    names = [name for name in PASSAGE_FEATURES if name in table.column_names]
    first_seen: dict[Any, str] = {}
    entries = table.select(names).to_pylist()
    records = [checked_record(path, f"row {row}", entry, first_seen) for row, entry in enumerate(entries)]
    return require_passages(path, records)


def checked_record(path: Path, where: str, entry: Any, first_seen: dict[Any, str]) -> dict[str, str]:
    """One passage as {id, title, text} strings, after the checks of the module docstring."""
    require_fields(path, where, entry, {"id": (str, int), "text": str})
    title = entry.get("title", "")
    if not isinstance(title, str):
        raise DataError(f"{path}: {where}.title is {title!r}, expected a string (or no title)")
    if not entry["text"].strip():
        raise DataError(f"{path}: {where}.text is {entry['text']!r}, expected the passage's text")
    passage_id = str(entry["id"])
    require_unique(path, where, "id", passage_id, first_seen)
    record = {"id": passage_id, "title": title, "text": entry["text"]}
    require_utf8(path, where, record, ("id", "title", "text"), f"id {passage_id}")
    return record


def require_passages(path: Path, records: list[dict[str, str]]) -> list[dict[str, str]]:
    if not records:
        raise DataError(f"{path}: no passages, expected at least one record of id, title, text")
    return records


def join_title(title: str, text: str) -> str:
    """`title. text`, or `text` alone for an untitled passage."""
    return f"{title}. {text}" if title else text


def file_fingerprint(path: Path) -> str:
    """The SHA-256 of a file's bytes (16 hex digits), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
