"""OK-VQA v1.1 (outside-knowledge VQA) from its official files, scored with the VQA accuracy and per knowledge category.

Expected layout under `root` (the official downloads, unzipped; the images are COCO 2014's):

    OpenEnded_mscoco_{train,val}2014_questions.json
    mscoco_{train,val}2014_annotations.json          v1.1 (updated 2020-07-29)
    {train,val}2014/COCO_{train|val}2014_{image_id:012d}.jpg

The files have VQA v2's format, except that an annotation has no `multiple_choice_answer`: the most common of its ten
answers (the first given among ties) is used. Each answer's `answer` field holds v1.1's stemmed form ("race" for
"racing"), which is what the official scoring compares against; `raw_answer` is not read. There is no test split:
val2014 is the reported one. `question_type` is the knowledge category's code ("one" ... "ten", "other"), reported
per category by name (`okvqa_category_<name>`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset

from vqa.data.benchmark import Benchmark
from vqa.data.build import BuildReport, OfficialRelease, build_release, majority_answer, release_training_splits
from vqa.data.schema import DataError, TrainingSplits
from vqa.data.vqa_v2_files import ANNOTATION_FIELDS, load_annotations, load_questions
from vqa.evaluation.scoring import metric_name, official_accuracy

VERSION = 1  # of what `read_split` returns: bump when it changes
SPLITS = ("train2014", "val2014")
ANNOTATION_FIELDS_OKVQA = {name: kind for name, kind in ANNOTATION_FIELDS.items() if name != "multiple_choice_answer"}
# The knowledge categories, by the code the annotations give as question_type (the OK-VQA paper, Table 1).
CATEGORIES = {
    "one": "Vehicles and Transportation",
    "two": "Brands, Companies and Products",
    "three": "Objects, Material and Clothing",
    "four": "Sports and Recreation",
    "five": "Cooking and Food",
    "six": "Geography, History, Language and Culture",
    "seven": "People and Everyday life",
    "eight": "Plants and Animals",
    "nine": "Science and Technology",
    "ten": "Weather and Climate",
    "other": "Other",
}


def questions_file(split: str) -> str:
    return f"OpenEnded_mscoco_{split}_questions.json"


def annotations_file(split: str) -> str:
    return f"mscoco_{split}_annotations.json"


def read_split(root: Path, split: str) -> list[dict[str, Any]]:
    """The split's questions joined with their annotations, as records of the shared schema. Every question must have
    its annotation (same image) and every annotation its question: the release has both complete."""
    questions_path, annotations_path = root / questions_file(split), root / annotations_file(split)
    questions = load_questions(questions_path, split)
    annotations = load_annotations(annotations_path, split, ANNOTATION_FIELDS_OKVQA)
    unmatched = [entry["question_id"] for entry in questions if entry["question_id"] not in annotations]
    if unmatched or len(annotations) != len(questions):
        asked = {entry["question_id"] for entry in questions}
        extra = [question_id for question_id in annotations if question_id not in asked]
        raise DataError(
            f"{annotations_path}: {len(unmatched)} questions of {questions_path.name} have no annotation and "
            f"{len(extra)} annotations no question (first: {(unmatched or extra)[0]}), expected the annotations of "
            "exactly these questions"
        )
    records = []
    for entry in questions:
        annotation = annotations[entry["question_id"]]
        if annotation["image_id"] != entry["image_id"]:
            raise DataError(
                f"{annotations_path}: question {entry['question_id']} has image_id {annotation['image_id']}, "
                f"but {entry['image_id']} in {questions_path.name}"
            )
        records.append(
            {
                "question_id": entry["question_id"],
                "image_id": entry["image_id"],
                "question": entry["question"],
                "answers": annotation["answers"],
                "multiple_choice_answer": majority_answer(annotation["answers"]),
                "answer_type": annotation["answer_type"],
                "question_type": annotation["question_type"],
                "image": root / split / f"COCO_{split}_{entry['image_id']:012d}.jpg",
            }
        )
    return records


def score(dataset: Dataset, predictions: Sequence[str]) -> dict[str, float]:
    """The VQA accuracy per knowledge category (`okvqa_category_<name>`); the overall number is `vqa_accuracy`."""
    per_type = official_accuracy(dataset, predictions)["perQuestionType"]
    return {
        f"okvqa_category_{metric_name(CATEGORIES.get(code, code)).lower()}": value
        for code, value in sorted(per_type.items())
    }


OKVQA = Benchmark("okvqa", score)  # uploads are VQA v2's results format


RELEASE = OfficialRelease(
    "okvqa",
    "OK-VQA",
    SPLITS,
    lambda split: [questions_file(split), annotations_file(split)],
    lambda split: split,
    read_split,
    OKVQA,
    version=VERSION,
)


def build_okvqa(root: str | Path, split: str, cache_dir: str | Path, **options: Any) -> tuple[Dataset, BuildReport]:
    """One OK-VQA split in the shared schema, built once into `cache_dir`; `options` are `BuildOptions` fields."""
    return build_release(RELEASE, root, split, cache_dir, **options)


def training_splits(
    root: str | Path,
    cache_dir: str | Path,
    train_split: str = "train2014",
    final_split: str = "val2014",
    minival_images: float | int = 500,
    seed: int = 0,
    **options: Any,
) -> TrainingSplits:
    """For `data=okvqa`: train = train2014 without an image-disjoint minival, validation = that minival, test =
    val2014 (OK-VQA's test set); `options` are `BuildOptions` fields."""
    return release_training_splits(RELEASE, root, cache_dir, train_split, final_split, minival_images, seed, **options)
