"""easy-VQA (the `easy-vqa` package: 64x64 shapes, 13 answers) in the shared schema.

Splits: `train` and `validation` (an image-disjoint part of the package's train split, fixed seed) and `test`.
The single answer is repeated ten times, so official VQA accuracy equals exact match here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import easy_vqa
from datasets import Dataset, DatasetDict

from vqa.data.cache import cached_build
from vqa.data.images import MissingImagePolicy, check_images, validate_policy
from vqa.data.schema import ANSWERS_PER_QUESTION, DataError, empty_columns, stored_dataset, with_image_column
from vqa.data.splits import split_by_image

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
YES_NO = frozenset({"yes", "no"})
# The words after which an easy-VQA question names its subject; the words before them are its type.
CONTENT_WORDS = frozenset(easy_vqa.get_answers()) - YES_NO


def question_type(question: str) -> str:
    """The words before the first colour or shape name, VQA-style: 'is there not a teal shape?' -> 'is there not a'.

    Questions without one ('what shape is present?') are their own type, without the question mark.
    """
    words = question.lower().rstrip("?").split()
    for index, word in enumerate(words):
        if word in CONTENT_WORDS:
            return " ".join(words[:index])
    return " ".join(words)


@dataclass(frozen=True)
class EasyVQAOptions:
    validation_images: float | int = 0.1  # fraction (or number) of train images held out for validation
    seed: int = 0
    max_questions: int | None = None  # per package split, first N (for quick runs)
    missing_images: MissingImagePolicy = "error"


def _package_split(split: str) -> tuple[list[str], list[str], list[int], dict[int, str]]:
    if split == "train":
        return (*easy_vqa.get_train_questions(), easy_vqa.get_train_image_paths())
    return (*easy_vqa.get_test_questions(), easy_vqa.get_test_image_paths())


def _build_split(split: str, options: EasyVQAOptions) -> tuple[Dataset, dict[str, Any]]:
    questions, answers, image_ids, image_paths = _package_split(split)
    if options.max_questions is not None:
        questions, answers, image_ids = (
            questions[: options.max_questions],
            answers[: options.max_questions],
            image_ids[: options.max_questions],
        )
    paths = {image_id: Path(image_paths[image_id]) for image_id in set(image_ids)}
    bad = check_images(paths, options.missing_images).bad
    columns = empty_columns()
    skipped = 0
    for question_id, (question, answer, image_id) in enumerate(zip(questions, answers, image_ids, strict=True)):
        if image_id in bad:
            skipped += 1
            continue
        columns["question_id"].append(question_id)
        columns["image_id"].append(image_id)
        columns["question"].append(question)
        columns["answers"].append([answer] * ANSWERS_PER_QUESTION)
        columns["multiple_choice_answer"].append(answer)
        columns["answer_type"].append("yes/no" if answer in YES_NO else "other")
        columns["question_type"].append(question_type(question))
        columns["image"].append(str(paths[image_id].resolve()))
    if skipped:
        logger.warning("easy-VQA %s: skipped %d questions whose image is missing or unreadable", split, skipped)
    if not columns["question_id"]:
        raise DataError(f"easy-VQA {split}: no questions left after filters and image checks")
    report = {"split": split, "questions": len(columns["question_id"]), "questions_skipped_for_images": skipped}
    return stored_dataset(columns), report


def build_easy_vqa(cache_dir: str | Path, options: EasyVQAOptions | None = None) -> DatasetDict:
    """Build (or load from `cache_dir`) easy-VQA's `train`, `validation` and `test` splits."""
    options = options or EasyVQAOptions()
    validate_policy(options.missing_images)
    built = {}
    for split in ("train", "test"):
        key = {
            "builder": "easy_vqa",
            "schema_version": SCHEMA_VERSION,
            "split": split,
            "package": str(Path(easy_vqa.__file__).parent.resolve()),
            "max_questions": options.max_questions,
            "missing_images": options.missing_images,
        }
        dataset, _, _ = cached_build(
            Path(cache_dir), f"easy_vqa-{split}", key, lambda s=split: _build_split(s, options)
        )
        built[split] = with_image_column(dataset)
    train, validation = split_by_image(built["train"], options.validation_images, options.seed)
    splits = DatasetDict(train=train, validation=validation, test=built["test"])
    logger.info("easy-VQA: %s", ", ".join(f"{name} {len(split)}" for name, split in splits.items()))
    return splits


__all__ = ["EasyVQAOptions", "build_easy_vqa", "question_type"]


def training_splits(
    cache_dir: str | Path,
    validation_images: float | int = 0.1,
    seed: int = 0,
    max_questions: int | None = None,
    missing_images: MissingImagePolicy = "error",
) -> DatasetDict:
    """`build_easy_vqa` with flat arguments, for the Hydra `data` group: train, validation, test."""
    return build_easy_vqa(cache_dir, EasyVQAOptions(validation_images, seed, max_questions, missing_images))
