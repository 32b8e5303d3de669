"""TextVQA v0.5.1 (questions that need the text in the image) from its official files, with its official accuracy.

Expected layout under `root` (the official downloads, unzipped):

    TextVQA_0.5.1_{train,val,test}.json
    TextVQA_Rosetta_OCR_v0.2_{train,val,test}.json      only with ocr_tokens=true
    train_images/<image_id>.jpg                         train and val (train_val_images.zip)
    test_images/<image_id>.jpg                          test (test_images.zip)

A questions file is `{"dataset_type", "dataset_name", "dataset_version", "data": [...]}`; an entry has `question_id`
(int), `image_id` (OpenImages' hex string), `question` and, except in test, ten `answers`. In the shared schema
`image_id` numbers the split's distinct image ids in sorted order (`official_image_id` keeps the string); the most
common answer (the first given among ties) is `multiple_choice_answer`, and `answer_type` is VQA v2's yes/no, number
or other of it (TextVQA has no types; `question_type` is None).

OCR tokens are not in the questions files: with `ocr_tokens=true` the Rosetta OCR file's tokens of each image fill
the `ocr_tokens` column (a model that reads them can make them a text segment); otherwise the column is empty.

The official accuracy (`textvqa_accuracy`) is MMF's TextVQAAccuracyEvaluator, what the EvalAI server computes: the
EvalAI answer processing always applied to the prediction and the ten answers (VQA v2's code applies it only when the
answers differ), then the leave-one-out mean of min(1, matches / 3); unrounded, in percent.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, List, Value

from vqa.data.benchmark import Benchmark
from vqa.data.build import (
    BuildReport,
    OfficialRelease,
    build_release,
    dense_ids,
    majority_answer,
    release_training_splits,
    vqa_answer_type,
)
from vqa.data.json_checks import (
    has_text,
    read_json,
    require_fields,
    require_file_name,
    require_question_text,
    require_string_list,
    require_unique,
    require_utf8,
)
from vqa.data.schema import ANSWERS_PER_QUESTION, DataError, TrainingSplits, column
from vqa.evaluation.metrics import percent, textvqa_accuracy

VERSION = 1  # of what `read_split` returns: bump when it changes
SPLITS = ("train", "val", "test")
EXTRA_FEATURES = {"official_image_id": Value("string"), "ocr_tokens": List(Value("string"))}
QUESTION_FIELDS = {"question_id": int, "image_id": str, "question": str}


def questions_file(split: str) -> str:
    return f"TextVQA_0.5.1_{split}.json"


def ocr_file(split: str) -> str:
    return f"TextVQA_Rosetta_OCR_v0.2_{split}.json"


def image_folder(split: str) -> str:
    return "test_images" if split == "test" else "train_images"


def data_entries(path: Path) -> list[Any]:
    content = read_json(path)
    if not isinstance(content, dict) or not isinstance(content.get("data"), list):
        found = f"keys {sorted(content)}" if isinstance(content, dict) else f"a JSON {type(content).__name__}"
        raise DataError(f"{path}: expected an object with a 'data' list, found {found}")
    return content["data"]


def read_ocr_tokens(path: Path) -> dict[str, list[str]]:
    """Rosetta OCR tokens by image id. An image may have several records (one per question, in some copies of the
    file) as long as they agree; records with other tokens for the same image are refused."""
    tokens: dict[str, list[str]] = {}
    first_seen: dict[str, str] = {}
    for index, entry in enumerate(data_entries(path)):
        where = f"data[{index}]"
        require_fields(path, where, entry, {"image_id": str, "ocr_tokens": list})
        require_string_list(path, f"{where}.ocr_tokens", entry["ocr_tokens"])
        require_utf8(path, where, entry, ("image_id", "ocr_tokens"), f"image {entry['image_id']!r}")
        image_id = entry["image_id"]
        if image_id in tokens and tokens[image_id] != entry["ocr_tokens"]:
            raise DataError(
                f"{path}: {where} gives image {image_id!r} other tokens than {first_seen[image_id]}, expected one set "
                "of OCR tokens per image"
            )
        first_seen.setdefault(image_id, where)
        tokens[image_id] = entry["ocr_tokens"]
    return tokens


def read_split(root: Path, split: str, ocr_tokens: bool = False) -> list[dict[str, Any]]:
    """The split's questions as records of the shared schema (see the module docstring), each field checked."""
    path = root / questions_file(split)
    entries = data_entries(path)
    ocr = read_ocr_tokens(root / ocr_file(split)) if ocr_tokens else None
    answered = split != "test"
    image_ids = dense_ids(entry["image_id"] for entry in entries if has_text(entry, "image_id"))
    records = []
    first_seen: dict[Any, str] = {}
    for index, entry in enumerate(entries):
        where = f"data[{index}]"
        require_fields(path, where, entry, {**QUESTION_FIELDS, **({"answers": list} if answered else {})})
        require_unique(path, where, "question_id", entry["question_id"], first_seen)
        label = f"question_id {entry['question_id']}"
        require_question_text(path, where, entry["question"], label)
        answers = entry["answers"] if answered else []
        if answered:
            require_string_list(path, f"{where}.answers", answers, ANSWERS_PER_QUESTION)
        require_file_name(path, f"{where}.image_id", entry["image_id"])
        require_utf8(path, where, entry, ("image_id", "question", "answers"), label)
        if ocr is not None and entry["image_id"] not in ocr:
            raise DataError(
                f"{root / ocr_file(split)}: no OCR tokens for image {entry['image_id']} ({label} in {path.name}), "
                "expected an entry for every image of the split"
            )
        majority = majority_answer(answers) if answered else None
        records.append(
            {
                "question_id": entry["question_id"],
                "image_id": image_ids[entry["image_id"]],
                "question": entry["question"],
                "answers": answers,
                "multiple_choice_answer": majority,
                "answer_type": vqa_answer_type(majority) if majority is not None else None,
                "question_type": None,
                "image": root / image_folder(split) / f"{entry['image_id']}.jpg",
                "official_image_id": entry["image_id"],
                "ocr_tokens": ocr[entry["image_id"]] if ocr is not None else [],
            }
        )
    return records


def score(dataset: Dataset, predictions: Sequence[str]) -> dict[str, float]:
    """`textvqa_accuracy`: the official TextVQA accuracy (see the module docstring), in percent."""
    answers = column(dataset, "answers")
    return {
        "textvqa_accuracy": percent(
            [textvqa_accuracy(prediction, human) for prediction, human in zip(predictions, answers, strict=True)]
        )
    }


TEXTVQA = Benchmark("textvqa", score)  # EvalAI takes VQA v2's results format, [{"question_id": int, "answer": str}]


def release_files(split: str, ocr_tokens: bool = False) -> list[str]:
    """The split's questions file, and its OCR file with `ocr_tokens`."""
    if not isinstance(ocr_tokens, bool):
        raise DataError(f"ocr_tokens: got {ocr_tokens!r}, expected true or false")
    return [questions_file(split), *([ocr_file(split)] if ocr_tokens else [])]


RELEASE = OfficialRelease(
    "textvqa", "TextVQA", SPLITS, release_files, image_folder, read_split, TEXTVQA, EXTRA_FEATURES, VERSION
)


def build_textvqa(
    root: str | Path, split: str, cache_dir: str | Path, ocr_tokens: bool = False, **options: Any
) -> tuple[Dataset, BuildReport]:
    """One TextVQA split in the shared schema, built once into `cache_dir`; `ocr_tokens` fills the `ocr_tokens`
    column from the Rosetta OCR file; `options` are `BuildOptions` fields."""
    return build_release(RELEASE, root, split, cache_dir, {"ocr_tokens": ocr_tokens}, **options)


def training_splits(
    root: str | Path,
    cache_dir: str | Path,
    train_split: str = "train",
    final_split: str = "val",
    minival_images: float | int = 1000,
    seed: int = 0,
    ocr_tokens: bool = False,
    **options: Any,
) -> TrainingSplits:
    """For `data=textvqa`: train = `train_split` without an image-disjoint minival, validation = that minival, test =
    `final_split` (val by default: test's answers are not public); `options` are `BuildOptions` fields."""
    return release_training_splits(
        RELEASE, root, cache_dir, train_split, final_split, minival_images, seed, {"ocr_tokens": ocr_tokens}, **options
    )
