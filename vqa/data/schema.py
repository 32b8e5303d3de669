"""The one schema every data source produces, the error type for bad input, and what a build returns.

Columns: `question_id, image_id, question, answers` (the ten human answers; empty on test splits),
`multiple_choice_answer, answer_type, question_type` (None on test splits) and `image`.

The image column is a `datasets.Image` feature that holds only the file's path (`{"bytes": None, "path": ...}`):
images are decoded lazily, one row at a time, and never copied. `Dataset.save_to_disk` would copy every image's
bytes into the Arrow files (once per question, about 5 times COCO's size for VQA v2), so the build cache writes
its folders with `vqa.data.cache.save_dataset` instead, which keeps the paths and the feature.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, DatasetInfo, Features, Image, List, Value
from datasets.table import InMemoryTable, table_cast
from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

from vqa.data.benchmark import VQA, Benchmark
from vqa.errors import UserError

ANSWERS_PER_QUESTION = 10

FEATURES = Features(
    {
        "question_id": Value("int64"),
        "image_id": Value("int64"),
        "question": Value("string"),
        "answers": List(Value("string")),
        "multiple_choice_answer": Value("string"),
        "answer_type": Value("string"),
        "question_type": Value("string"),
        "image": Image(),
    }
)
COLUMNS: tuple[str, ...] = tuple(FEATURES)
# The builders collect the image column as path strings; Arrow turns them into the Image feature's storage.
_COLLECTED_SCHEMA = Features({**FEATURES, "image": Value("string")}).arrow_schema

# What a build can drop, and why: the keys of `TrainingSplits.dropped` (and fields of the builders' reports).
DROPPED_KEYS: tuple[str, ...] = (
    "questions_without_annotation",  # in the questions file, no annotation for it
    "annotations_without_question",  # in the annotations file, no question for it
    "questions_removed_by_agreement",  # fewer than min_agreement humans gave the answer
    "questions_skipped_for_images",  # their image file is bad (policy `skip`); the four counts below are files
    "missing_image_files",
    "unreadable_image_files",  # not an image: the header cannot be parsed
    "undecodable_image_files",  # the header is fine, the pixel data is truncated or corrupt
    "oversized_image_files",  # over PIL's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS)
)


class DataError(UserError, ValueError):
    """Bad input data. The message is one line: which file or field, what was found, what was expected."""


def require_positive_or_none(name: str, value: Any) -> None:
    """Raises DataError unless `value` is None or an int >= 1 (a count such as max_questions)."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise DataError(f"{name}: got {value!r}, expected a positive number or None")


def require_bool(name: str, value: Any) -> None:
    """Raises DataError unless `value` is a bool (a config string such as 'no' would otherwise count as true)."""
    if not isinstance(value, bool):
        raise DataError(f"{name}: got {value!r}, expected true or false")


class TrainingSplits(DatasetDict):
    """`train`, `validation` and `test`; `dropped`: what the builds behind them left out, by reason; and `benchmark`:
    how the splits are scored and their predictions uploaded (`vqa.data.benchmark`); `corpus_files`: the passage
    corpora a knowledge task comes with, name -> JSONL file (`vqa.data.easy_vqa_facts`: `facts`, `swapped`).

    `dropped` sums the counts over the builds (a split built once counts once, also when loaded from the cache),
    with the keys of DROPPED_KEYS that apply to the source.
    """

    def __init__(
        self,
        *args: Any,
        dropped: Mapping[str, int] | None = None,
        benchmark: Benchmark = VQA,
        corpus_files: Mapping[str, Path] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.dropped: dict[str, int] = dict(dropped or {})
        self.benchmark = benchmark
        self.corpus_files: dict[str, Path] = dict(corpus_files or {})


def sum_dropped(reports: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The DROPPED_KEYS counts of build reports, summed; keys that no report has are left out."""
    totals: dict[str, int] = {}
    for report in reports:
        for key in DROPPED_KEYS:
            if key in report:
                totals[key] = totals.get(key, 0) + int(report[key])
    return totals


def empty_columns() -> dict[str, list[Any]]:
    """A column-wise record buffer in schema order; the image column takes path strings."""
    return {name: [] for name in COLUMNS}


def stored_dataset(columns: dict[str, list[Any]], extra_features: Mapping[str, Any] | None = None) -> Dataset:
    """The dataset in the schema from column lists (images as path strings), in memory.

    Straight to Arrow with the schema's types: `Dataset.from_dict` would encode every value in Python first
    (about 16 s for VQA v2 train). The path strings become the Image feature's `{bytes: None, path}` storage.

    Args:
        extra_features: a benchmark's own columns after the shared ones (A-OKVQA's choices, TextVQA's OCR tokens),
            name -> `datasets` feature; `columns` holds them too.
    """
    features, collected = FEATURES, _COLLECTED_SCHEMA
    if extra_features:
        features = Features({**FEATURES, **extra_features})
        collected = Features({**features, "image": Value("string")}).arrow_schema
    table = InMemoryTable.from_pydict(columns, schema=collected)
    return Dataset(InMemoryTable(table_cast(table.table, features.arrow_schema)), info=DatasetInfo(features=features))


def with_image_column(dataset: Dataset) -> Dataset:
    """The dataset with a lazily decoded `datasets.Image` column (no file is read here).

    Build caches already store that feature; older stored forms (a path string column) are converted.
    """
    feature = dataset.features["image"]
    if isinstance(feature, Image) and feature.decode:
        return dataset
    with quiet_datasets():
        return dataset.cast_column("image", Image())


def column(dataset: Dataset, name: str) -> list[Any]:
    """A column as a list, read in one piece. Iterating `dataset[name]` (a datasets `Column`) reads row by row: 1.16 s
    for the 34,671 training question types of easy-VQA, against 0.08 s for the whole column."""
    return dataset[name][:]


def has_answers(dataset: Dataset) -> bool:
    """Whether the split carries human answers (test splits do not)."""
    return len(dataset) > 0 and len(dataset["answers"][0]) > 0  # the column alone: a row would decode its image


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """Hide `datasets`' progress bars of its internals (saving, casting, loading) inside the block.

    They flood logs with lines about steps a user did not ask for. An explicit HF_DATASETS_DISABLE_PROGRESS_BARS=0
    (the user wants them) is respected, as is an earlier global disable (left as it was).
    """
    if are_progress_bars_disabled() or datasets.config.HF_DATASETS_DISABLE_PROGRESS_BARS is False:
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()
