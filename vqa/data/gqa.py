"""GQA (balanced splits, questions release 1.2) from its official files, with its official metrics.

Expected layout under `root` (the official downloads, unzipped):

    {train,val,testdev,test,challenge}_balanced_questions.json    from questions1.2.zip
    images/<imageId>.jpg                                           from images.zip

A questions file is one object keyed by question id (a digit string that may start with 0). Each question names its
`imageId`, and where the split has answers its `answer`, `fullAnswer`, `types` (structural, semantic, detailed),
`entailed` question ids, `groups.global` and the `semantic` program. test and challenge have no answers.

In the shared schema: `question_id` is the question's position in its file and `official_question_id` its GQA id;
`image_id` numbers the split's distinct imageIds in sorted order. The answer is repeated ten times (so the VQA
accuracy equals exact match after whitespace stripping), `answer_type` is GQA's binary/open (open: structural type
`query`) and `question_type` the structural type.

The metrics are those of the official eval.py: exact, case-sensitive match overall, binary/open, per structural and
per semantic type; consistency over the entailed questions that are in the split (eval.py reads them from
`*_all_questions.json`, which is not read here, so the number covers fewer questions); the distribution score.
Validity and plausibility need `{split}_choices.json` and grounding needs attention maps and scene graphs: not read,
not computed. Percentages are unrounded (eval.py prints two decimals).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, List, Value

from vqa.data.benchmark import Benchmark
from vqa.data.build import BuildReport, OfficialRelease, build_release, dense_ids, release_training_splits
from vqa.data.json_checks import (
    has_text,
    read_json_object_without_repeats,
    require_fields,
    require_file_name,
    require_question_text,
    require_utf8,
)
from vqa.data.schema import ANSWERS_PER_QUESTION, DataError, TrainingSplits, column
from vqa.evaluation.metrics import gqa_consistency, gqa_distribution, gqa_steps, percent
from vqa.evaluation.scoring import metric_name

VERSION = 1  # of what `read_split` returns: bump when it changes
IMAGE_FOLDER = "images"
ANSWERED_SPLITS = ("train", "val", "testdev")
SPLITS = (*ANSWERED_SPLITS, "test", "challenge")
EXTRA_FEATURES = {
    "official_question_id": Value("string"),
    "full_answer": Value("string"),
    "semantic_type": Value("string"),
    "detailed_type": Value("string"),
    "entailed": List(Value("string")),
    "global_group": Value("string"),
    "steps": Value("int32"),
}
QUESTION_FIELDS = {"imageId": str, "question": str}
ANSWER_FIELDS = {"answer": str, "fullAnswer": str, "types": dict, "entailed": list, "groups": dict, "semantic": list}
TEXT_FIELDS = ("key", "imageId", "question", "answer", "fullAnswer")  # "key": the question id
TYPE_FIELDS = {"structural": str, "semantic": str, "detailed": str}


def questions_file(split: str) -> str:
    return f"{split}_balanced_questions.json"


def read_split(root: Path, split: str) -> list[dict[str, Any]]:
    """The split's questions as records of the shared schema (see the module docstring), each field checked."""
    path = root / questions_file(split)
    questions = read_json_object_without_repeats(path, "question id")
    answered = split in ANSWERED_SPLITS
    image_ids = dense_ids(entry.get("imageId") for entry in questions.values() if has_text(entry, "imageId"))
    records = []
    for position, (official_id, entry) in enumerate(questions.items()):
        where = f"[{official_id!r}]"
        require_fields(path, where, entry, {**QUESTION_FIELDS, **(ANSWER_FIELDS if answered else {})})
        label = f"question id {official_id!r}"
        require_question_text(path, where, entry["question"], label)
        require_file_name(path, f"{where}.imageId", entry["imageId"])
        require_utf8(path, where, {**entry, "key": official_id}, TEXT_FIELDS, label)
        record = {
            "question_id": position,
            "image_id": image_ids[entry["imageId"]],
            "question": entry["question"],
            "image": root / IMAGE_FOLDER / f"{entry['imageId']}.jpg",
            "official_question_id": official_id,
            **(_answer_columns(path, where, entry) if answered else _no_answer_columns()),
        }
        records.append(record)
    return records


def _answer_columns(path: Path, where: str, entry: dict[str, Any]) -> dict[str, Any]:
    require_fields(path, f"{where}.types", entry["types"], TYPE_FIELDS)
    types = entry["types"]
    group = entry["groups"].get("global")
    if group is not None and not isinstance(group, str):
        raise DataError(f"{path}: {where}.groups.global is {group!r}, expected a string or null")
    entailed = entry["entailed"]
    if not all(isinstance(other, str) for other in entailed):
        raise DataError(f"{path}: {where}.entailed is {entailed!r}, expected a list of question ids")
    texts = {f"types.{name}": value for name, value in types.items()} | {"entailed": entailed, "groups.global": group}
    require_utf8(path, where, texts, tuple(texts), f"{where}")
    operations = []
    for index, step in enumerate(entry["semantic"]):
        require_fields(path, f"{where}.semantic[{index}]", step, {"operation": str, "argument": str})
        operations.append(f"{step['operation']}: {step['argument']}")
    return {
        "answers": [entry["answer"]] * ANSWERS_PER_QUESTION,
        "multiple_choice_answer": entry["answer"],
        "answer_type": "open" if types["structural"] == "query" else "binary",
        "question_type": types["structural"],
        "full_answer": entry["fullAnswer"],
        "semantic_type": types["semantic"],
        "detailed_type": types["detailed"],
        "entailed": entailed,
        "global_group": group,
        "steps": gqa_steps(operations),
    }


def _no_answer_columns() -> dict[str, Any]:
    return {
        "answers": [],
        "multiple_choice_answer": None,
        "answer_type": None,
        "question_type": None,
        "full_answer": None,
        "semantic_type": None,
        "detailed_type": None,
        "entailed": [],
        "global_group": None,
        "steps": None,
    }


def score(dataset: Dataset, predictions: Sequence[str]) -> dict[str, float]:
    """eval.py's metrics (see the module docstring) of `predictions`, in the split's row order."""
    answers = column(dataset, "multiple_choice_answer")
    correct = [prediction == answer for prediction, answer in zip(predictions, answers, strict=True)]
    metrics = {"gqa_accuracy": percent(correct)}
    for name, types in (
        ("", column(dataset, "answer_type")),
        ("structural_", column(dataset, "question_type")),
        ("semantic_", column(dataset, "semantic_type")),
    ):
        by_type: dict[str, list[bool]] = {}
        for kind, right in zip(types, correct, strict=True):
            by_type.setdefault(kind, []).append(right)
        for kind in sorted(by_type):
            metrics[f"gqa_accuracy_{name}{metric_name(kind)}"] = percent(by_type[kind])
    official_ids = column(dataset, "official_question_id")
    consistency = gqa_consistency(
        dict(zip(official_ids, correct, strict=True)), dict(zip(official_ids, column(dataset, "entailed"), strict=True))
    )
    metrics["gqa_consistency"] = 0.0 if consistency is None else consistency  # eval.py's avg([]) is 0
    metrics["gqa_distribution"] = gqa_distribution(
        list(zip(column(dataset, "global_group"), answers, strict=True)), predictions
    )
    return metrics


def upload(dataset: Dataset, predictions: Sequence[str]) -> list[dict[str, str]]:
    """eval.py's predictions format: `[{"questionId": str, "prediction": str}]`."""
    return [
        {"questionId": official_id, "prediction": prediction}
        for official_id, prediction in zip(column(dataset, "official_question_id"), predictions, strict=True)
    ]


GQA = Benchmark("gqa", score, upload, upload_file="gqa_predictions.json")


RELEASE = OfficialRelease(
    "gqa",
    "GQA",
    SPLITS,
    lambda split: [questions_file(split)],
    lambda split: IMAGE_FOLDER,
    read_split,
    GQA,
    EXTRA_FEATURES,
    VERSION,
)


def build_gqa(root: str | Path, split: str, cache_dir: str | Path, **options: Any) -> tuple[Dataset, BuildReport]:
    """One GQA balanced split in the shared schema, built once into `cache_dir`; `options` are `BuildOptions` fields."""
    return build_release(RELEASE, root, split, cache_dir, **options)


def training_splits(
    root: str | Path,
    cache_dir: str | Path,
    train_split: str = "train",
    final_split: str = "testdev",
    minival_images: float | int = 2000,
    seed: int = 0,
    **options: Any,
) -> TrainingSplits:
    """For `data=gqa`: train = `train_split` without an image-disjoint minival, validation = that minival, test =
    `final_split` (testdev by default, whose answers are public); `options` are `BuildOptions` fields."""
    return release_training_splits(RELEASE, root, cache_dir, train_split, final_split, minival_images, seed, **options)
