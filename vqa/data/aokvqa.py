"""A-OKVQA v1.0 (outside knowledge and commonsense) from its official files, with its official metrics.

Expected layout under `root` (the official downloads, unpacked; the images are COCO 2017's):

    aokvqa_v1p0_{train,val,test}.json                 from aokvqa_v1p0.tar.gz
    {train,val,test}2017/{image_id:012d}.jpg

A split file is a list of questions: `question_id` (a string), `image_id` (COCO's), `question`, four `choices` and
`difficult_direct_answer`; except in test also `correct_choice_idx`, ten `direct_answers` and three `rationales`.
In the shared schema `question_id` is the question's position in its file (`official_question_id` keeps the id),
`answers` are the direct answers and `multiple_choice_answer` the most common of them (the first given among ties),
the training target; `answer_type` is VQA v2's yes/no, number or other of it; `question_type` is None.

The metrics are those of the official evaluation/eval_predictions.py:
- `aokvqa_direct_answer`: min(1, exact matches among the ten direct answers / 3), no processing of the texts and no
  leave-one-out averaging, over the questions not marked `difficult_direct_answer`;
- `aokvqa_multiple_choice`: the share of questions whose predicted choice is the correct one. The predicted choice
  is the generated answer itself when it is one of the choices, otherwise the most similar choice by `difflib`'s
  ratio (`vqa.evaluation.metrics.nearest_choice`); the official remap_predictions.py uses averaged GloVe vectors
  instead, so numbers can differ where a generated answer is not a choice.
Percentages are unrounded, as the official script prints them.
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
    majority_answer,
    release_training_splits,
    vqa_answer_type,
)
from vqa.data.json_checks import (
    read_json,
    require_fields,
    require_question_text,
    require_string_list,
    require_unique,
    require_utf8,
)
from vqa.data.schema import ANSWERS_PER_QUESTION, DataError, TrainingSplits, column
from vqa.evaluation.metrics import aokvqa_direct_answer_accuracy, nearest_choice, percent

VERSION = 1  # of what `read_split` returns: bump when it changes
SPLITS = ("train", "val", "test")
CHOICES = 4
EXTRA_FEATURES = {
    "official_question_id": Value("string"),
    "choices": List(Value("string")),
    "correct_choice": Value("int32"),
    "difficult_direct_answer": Value("bool"),
    "rationales": List(Value("string")),
}
QUESTION_FIELDS = {
    "question_id": str,
    "image_id": int,
    "question": str,
    "choices": list,
    "difficult_direct_answer": bool,
}
ANSWER_FIELDS = {"correct_choice_idx": int, "direct_answers": list, "rationales": list}


def questions_file(split: str) -> str:
    return f"aokvqa_v1p0_{split}.json"


def read_split(root: Path, split: str) -> list[dict[str, Any]]:
    """The split's questions as records of the shared schema (see the module docstring), each field checked."""
    path = root / questions_file(split)
    entries = read_json(path)
    if not isinstance(entries, list):
        raise DataError(f"{path}: a JSON {type(entries).__name__}, expected a list of questions")
    answered = split != "test"
    records = []
    first_seen: dict[Any, str] = {}
    for index, entry in enumerate(entries):
        where = f"[{index}]"
        require_fields(path, where, entry, {**QUESTION_FIELDS, **(ANSWER_FIELDS if answered else {})})
        require_unique(path, where, "question_id", entry["question_id"], first_seen)
        label = f"question_id {entry['question_id']!r}"
        require_question_text(path, where, entry["question"], label)
        require_string_list(path, f"{where}.choices", entry["choices"], CHOICES)
        answers = entry["direct_answers"] if answered else []
        if answered:
            require_string_list(path, f"{where}.direct_answers", answers, ANSWERS_PER_QUESTION)
            require_string_list(path, f"{where}.rationales", entry["rationales"])
            if not 0 <= entry["correct_choice_idx"] < CHOICES:
                raise DataError(
                    f"{path}: {where}.correct_choice_idx is {entry['correct_choice_idx']}, expected 0..{CHOICES - 1}"
                )
        texts = ("question_id", "question", "choices", "direct_answers", "rationales")
        require_utf8(path, where, entry, texts, label)
        majority = majority_answer(answers) if answered else None
        records.append(
            {
                "question_id": index,
                "image_id": entry["image_id"],
                "question": entry["question"],
                "answers": answers,
                "multiple_choice_answer": majority,
                "answer_type": vqa_answer_type(majority) if majority is not None else None,
                "question_type": None,
                "image": root / f"{split}2017" / f"{entry['image_id']:012d}.jpg",
                "official_question_id": entry["question_id"],
                "choices": entry["choices"],
                "correct_choice": entry["correct_choice_idx"] if answered else -1,
                "difficult_direct_answer": entry["difficult_direct_answer"],
                "rationales": entry["rationales"] if answered else [],
            }
        )
    return records


def score(dataset: Dataset, predictions: Sequence[str]) -> dict[str, float]:
    """eval_predictions.py's direct-answer and multiple-choice accuracy (see the module docstring)."""
    direct = [
        aokvqa_direct_answer_accuracy(prediction, answers)
        for prediction, answers, difficult in zip(
            predictions, column(dataset, "answers"), column(dataset, "difficult_direct_answer"), strict=True
        )
        if not difficult
    ]
    chosen = [
        nearest_choice(prediction, choices) == choices[correct]
        for prediction, choices, correct in zip(
            predictions, column(dataset, "choices"), column(dataset, "correct_choice"), strict=True
        )
    ]
    metrics = {"aokvqa_multiple_choice": percent(chosen)}
    if direct:
        metrics["aokvqa_direct_answer"] = percent(direct)
    return metrics


def upload(dataset: Dataset, predictions: Sequence[str]) -> dict[str, dict[str, str]]:
    """eval_predictions.py's format: `{question_id: {"multiple_choice": choice, "direct_answer": answer}}`."""
    return {
        official_id: {"multiple_choice": nearest_choice(prediction, choices), "direct_answer": prediction}
        for official_id, choices, prediction in zip(
            column(dataset, "official_question_id"), column(dataset, "choices"), predictions, strict=True
        )
    }


AOKVQA = Benchmark("aokvqa", score, upload, upload_file="aokvqa_predictions.json")


RELEASE = OfficialRelease(
    "aokvqa",
    "A-OKVQA",
    SPLITS,
    lambda split: [questions_file(split)],
    lambda split: f"{split}2017",
    read_split,
    AOKVQA,
    EXTRA_FEATURES,
    VERSION,
)


def build_aokvqa(root: str | Path, split: str, cache_dir: str | Path, **options: Any) -> tuple[Dataset, BuildReport]:
    """One A-OKVQA split in the shared schema, built once into `cache_dir`; `options` are `BuildOptions` fields."""
    return build_release(RELEASE, root, split, cache_dir, **options)


def training_splits(
    root: str | Path,
    cache_dir: str | Path,
    train_split: str = "train",
    final_split: str = "val",
    minival_images: float | int = 1000,
    seed: int = 0,
    **options: Any,
) -> TrainingSplits:
    """For `data=aokvqa`: train = `train_split` without an image-disjoint minival, validation = that minival, test =
    `final_split` (val by default: the test leaderboard is no longer run); `options` are `BuildOptions` fields."""
    return release_training_splits(RELEASE, root, cache_dir, train_split, final_split, minival_images, seed, **options)
