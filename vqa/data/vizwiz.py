"""VizWiz-VQA (photos taken by blind people; the 2020+ release) from its official files, with its official metrics.

Expected layout under `root` (the official downloads, unzipped):

    Annotations/{train,val,test}.json
    {train,val,test}/VizWiz_{split}_{index:08d}.jpg

A split file is a list of questions, one per image, keyed by the image's file name (there is no question id):
`image`, `question` and, except in test, ten `answers` (`{answer, answer_confidence}`), `answer_type` (other, yes/no,
number, unanswerable) and `answerable` (0 or 1). In the shared schema `question_id` is the question's position in its
file and `image_id` numbers the file names in sorted order (`image_name` keeps the name, the key of the upload
format); the most common answer (the first given among ties) is `multiple_choice_answer`; `question_type` is None.

The official accuracy (`vizwiz_accuracy`, per answer type too) is the VizWiz API's: the prediction always normalised
(with the API's own contraction table), the human answers as given, VQA's leave-one-out mean of min(1, matches / 3);
"unanswerable" is an answer like any other. Answerability (unanswerable the positive class) is scored from the
answers: a prediction of "unanswerable" says unanswerable, with score 1, anything else 0; the API's average precision
and F1 (threshold 0.5) of these binary scores. (The API's caption metrics, BLEU to CIDEr, are not computed.)
Percentages are rounded to two decimals with Python 3's `round`, as the API rounds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, Value

from vqa.data.benchmark import Benchmark
from vqa.data.build import (
    BuildReport,
    OfficialRelease,
    build_release,
    dense_ids,
    majority_answer,
    release_training_splits,
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
from vqa.evaluation.metrics import average_precision, f1_score, percent, vizwiz_accuracy, vizwiz_normalize
from vqa.evaluation.scoring import metric_name

VERSION = 1  # of what `read_split` returns: bump when it changes
SPLITS = ("train", "val", "test")
UNANSWERABLE = "unanswerable"
EXTRA_FEATURES = {"image_name": Value("string"), "answerable": Value("bool")}
QUESTION_FIELDS = {"image": str, "question": str}
ANSWER_FIELDS = {"answers": list, "answer_type": str, "answerable": int}


def annotations_file(split: str) -> str:
    return f"Annotations/{split}.json"


def read_split(root: Path, split: str) -> list[dict[str, Any]]:
    """The split's questions as records of the shared schema (see the module docstring), each field checked."""
    path = root / annotations_file(split)
    entries = read_json(path)
    if not isinstance(entries, list):
        raise DataError(f"{path}: a JSON {type(entries).__name__}, expected a list of questions")
    answered = split != "test"
    image_ids = dense_ids(entry["image"] for entry in entries if has_text(entry, "image"))
    records = []
    first_seen: dict[Any, str] = {}
    for index, entry in enumerate(entries):
        where = f"[{index}]"
        require_fields(path, where, entry, {**QUESTION_FIELDS, **(ANSWER_FIELDS if answered else {})})
        require_unique(path, where, "image", entry["image"], first_seen)
        label = f"image {entry['image']!r}"
        require_question_text(path, where, entry["question"], label)
        answers = []
        if answered:
            if not all(isinstance(answer, dict) for answer in entry["answers"]):
                raise DataError(f"{path}: {where}.answers holds a non-object, expected objects with 'answer'")
            answers = [answer.get("answer") for answer in entry["answers"]]
            require_string_list(path, f"{where}.answers", answers, ANSWERS_PER_QUESTION)
            if entry["answerable"] not in (0, 1):
                raise DataError(f"{path}: {where}.answerable is {entry['answerable']!r}, expected 0 or 1")
        require_file_name(path, f"{where}.image", entry["image"])
        require_utf8(path, where, {**entry, "answers": answers}, ("image", "question", "answers", "answer_type"), label)
        records.append(
            {
                "question_id": index,
                "image_id": image_ids[entry["image"]],
                "question": entry["question"],
                "answers": answers,
                "multiple_choice_answer": majority_answer(answers) if answered else None,
                "answer_type": entry["answer_type"] if answered else None,
                "question_type": None,
                "image": root / split / entry["image"],
                "image_name": entry["image"],
                "answerable": bool(entry["answerable"]) if answered else None,
            }
        )
    return records


def says_unanswerable(prediction: str) -> bool:
    return vizwiz_normalize(prediction) == UNANSWERABLE


def score(dataset: Dataset, predictions: Sequence[str]) -> dict[str, float]:
    """The VizWiz API's accuracy, overall and per answer type, and answerability (see the module docstring)."""
    accuracies = [
        vizwiz_accuracy(prediction, human)
        for prediction, human in zip(predictions, column(dataset, "answers"), strict=True)
    ]
    metrics = {"vizwiz_accuracy": percent(accuracies)}
    by_type: dict[str, list[float]] = {}
    for answer_type, accuracy in zip(column(dataset, "answer_type"), accuracies, strict=True):
        by_type.setdefault(answer_type, []).append(accuracy)
    for answer_type in sorted(by_type):
        metrics[f"vizwiz_accuracy_{metric_name(answer_type)}"] = percent(by_type[answer_type])
    unanswerable = [not answerable for answerable in column(dataset, "answerable")]
    predicted = [says_unanswerable(prediction) for prediction in predictions]
    # Without unanswerable questions scikit-learn's average precision is 0 (recall is 1 at every threshold).
    precision = average_precision(unanswerable, [float(guess) for guess in predicted]) or 0.0
    metrics["vizwiz_unanswerable_average_precision"] = precision
    metrics["vizwiz_unanswerable_f1"] = f1_score(unanswerable, predicted)
    return {key: round(value, 2) for key, value in metrics.items()}  # the API's round(100 * x, 2), Python 3


def upload(dataset: Dataset, predictions: Sequence[str]) -> list[dict[str, Any]]:
    """The VizWiz results format: `[{"image": str, "answer": str, "answerable": float}]`, answerable 0.0 where the
    answer is "unanswerable"."""
    return [
        {"image": name, "answer": prediction, "answerable": 0.0 if says_unanswerable(prediction) else 1.0}
        for name, prediction in zip(column(dataset, "image_name"), predictions, strict=True)
    ]


VIZWIZ = Benchmark("vizwiz", score, upload, upload_file="vizwiz_results.json")


RELEASE = OfficialRelease(
    "vizwiz",
    "VizWiz",
    SPLITS,
    lambda split: [annotations_file(split)],
    lambda split: split,
    read_split,
    VIZWIZ,
    EXTRA_FEATURES,
    VERSION,
)


def build_vizwiz(root: str | Path, split: str, cache_dir: str | Path, **options: Any) -> tuple[Dataset, BuildReport]:
    """One VizWiz split in the shared schema, built once into `cache_dir`; `options` are `BuildOptions` fields."""
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
    """For `data=vizwiz`: train = `train_split` without an image-disjoint minival, validation = that minival, test =
    `final_split` (val by default: test's answers are not public); `options` are `BuildOptions` fields."""
    return release_training_splits(RELEASE, root, cache_dir, train_split, final_split, minival_images, seed, **options)
