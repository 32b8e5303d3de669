"""The one schema every data source produces, and the error type for bad input.

Columns: `question_id, image_id, question, answers` (the ten human answers; empty on test splits),
`multiple_choice_answer, answer_type, question_type` (None on test splits) and `image`.

On disk the image column is a plain path string: `Dataset.save_to_disk` would otherwise copy every image's bytes
into the Arrow files (once per question, about 5 times COCO's size for VQA v2). `with_image_column` turns it into
a `datasets.Image` column when the dataset is loaded; images are decoded lazily, one row at a time.
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset, DatasetInfo, Features, Image, List, Value
from datasets.table import InMemoryTable

ANSWERS_PER_QUESTION = 10

STORED_FEATURES = Features(
    {
        "question_id": Value("int64"),
        "image_id": Value("int64"),
        "question": Value("string"),
        "answers": List(Value("string")),
        "multiple_choice_answer": Value("string"),
        "answer_type": Value("string"),
        "question_type": Value("string"),
        "image": Value("string"),
    }
)
COLUMNS: tuple[str, ...] = tuple(STORED_FEATURES)


class DataError(ValueError):
    """Bad input data. The message is one line: which file or field, what was found, what was expected."""


def empty_columns() -> dict[str, list[Any]]:
    """A column-wise record buffer in schema order."""
    return {name: [] for name in COLUMNS}


def stored_dataset(columns: dict[str, list[Any]]) -> Dataset:
    """Build the on-disk form (image as a path string) from column lists.

    Straight to Arrow with the schema's types: `Dataset.from_dict` would encode every value in Python first
    (about 16 s for VQA v2 train).
    """
    table = InMemoryTable.from_pydict(columns, schema=STORED_FEATURES.arrow_schema)
    return Dataset(table, info=DatasetInfo(features=STORED_FEATURES))


def with_image_column(dataset: Dataset) -> Dataset:
    """Turn the stored path column into a lazily decoded `datasets.Image` column (no file is read here)."""
    return dataset.cast_column("image", Image())


def has_answers(dataset: Dataset) -> bool:
    """Whether the split carries human answers (test splits do not)."""
    return len(dataset) > 0 and len(dataset[0]["answers"]) > 0
