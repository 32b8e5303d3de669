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
from datasets import Dataset

from vqa.data.cache import cached_build
from vqa.data.images import MissingImagePolicy, check_images, validate_policy
from vqa.data.schema import (
    ANSWERS_PER_QUESTION,
    DataError,
    TrainingSplits,
    empty_columns,
    require_bool,
    require_positive_or_none,
    stored_dataset,
    sum_dropped,
    with_image_column,
)
from vqa.data.splits import split_by_image, validate_holdout

logger = logging.getLogger(__name__)

# Bump when the stored columns, their meaning or the report change: old caches are then rebuilt.
# 2: the image column is stored as the datasets.Image feature (paths only); images are fully decoded once.
SCHEMA_VERSION = 2
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
    validation_images: float | int = 0.1  # fraction (0 < f < 1) or number (>= 1) of train images held out
    seed: int = 0
    max_questions: int | None = None  # per package split, first N (for quick runs)
    missing_images: MissingImagePolicy = "error"  # for missing, unreadable, truncated or oversized image files
    verify_images: bool = True  # decode every image once (remembered); False: headers only

    def validate(self) -> None:
        """Raises DataError for a bad option, before anything is read (slicing would take -5 as 'all but 5')."""
        require_positive_or_none("max_questions", self.max_questions)
        validate_holdout("validation_images", self.validation_images)
        validate_policy(self.missing_images)
        require_bool("verify_images", self.verify_images)


def _package_split(split: str) -> tuple[list[str], list[str], list[int], dict[int, str]]:
    if split == "train":
        return (*easy_vqa.get_train_questions(), easy_vqa.get_train_image_paths())
    return (*easy_vqa.get_test_questions(), easy_vqa.get_test_image_paths())


def _build_split(split: str, options: EasyVQAOptions, cache_dir: Path) -> tuple[Dataset, dict[str, Any]]:
    questions, answers, image_ids, image_paths = _package_split(split)
    if options.max_questions is not None:
        questions, answers, image_ids = (
            questions[: options.max_questions],
            answers[: options.max_questions],
            image_ids[: options.max_questions],
        )
    paths = {image_id: Path(image_paths[image_id]).resolve() for image_id in set(image_ids)}
    check = check_images(paths, options.missing_images, verify=options.verify_images, record_dir=cache_dir)
    columns = empty_columns()
    skipped = 0
    for question_id, (question, answer, image_id) in enumerate(zip(questions, answers, image_ids, strict=True)):
        if image_id in check.bad:
            skipped += 1
            continue
        columns["question_id"].append(question_id)
        columns["image_id"].append(image_id)
        columns["question"].append(question)
        columns["answers"].append([answer] * ANSWERS_PER_QUESTION)
        columns["multiple_choice_answer"].append(answer)
        columns["answer_type"].append("yes/no" if answer in YES_NO else "other")
        columns["question_type"].append(question_type(question))
        columns["image"].append(str(paths[image_id]))
    if skipped:
        logger.warning(
            "easy-VQA %s: skipped %d questions whose image file is bad (%s of %d images)",
            split,
            skipped,
            check.summary(),
            check.checked,
        )
    if not columns["question_id"]:
        raise DataError(
            f"easy-VQA {split}: no questions left after the image checks (all {check.checked} images bad: "
            f"{check.summary()}), expected at least one usable image"
        )
    report = {
        "split": split,
        "questions": len(columns["question_id"]),
        "questions_skipped_for_images": skipped,
        **check.counts(),
        "images_decoded": check.decoded,
    }
    return stored_dataset(columns), report


def build_easy_vqa(cache_dir: str | Path, options: EasyVQAOptions | None = None) -> TrainingSplits:
    """Build (or load from `cache_dir`) easy-VQA's `train`, `validation` and `test` splits.

    `dropped` counts what the two package splits' builds left out (image files and their questions).
    """
    options = options or EasyVQAOptions()
    options.validate()
    cache_dir = Path(cache_dir)
    built, reports = {}, []
    for split in ("train", "test"):
        key = {
            "builder": "easy_vqa",
            "schema_version": SCHEMA_VERSION,
            "split": split,
            "package": str(Path(easy_vqa.__file__).parent.resolve()),
            "max_questions": options.max_questions,
            "missing_images": options.missing_images,
            "verify_images": options.verify_images,
        }
        dataset, report, _ = cached_build(
            cache_dir, f"easy_vqa-{split}", key, lambda s=split: _build_split(s, options, cache_dir)
        )
        built[split] = with_image_column(dataset)
        reports.append(report)
    train, validation = split_by_image(built["train"], options.validation_images, options.seed)
    splits = TrainingSplits(train=train, validation=validation, test=built["test"], dropped=sum_dropped(reports))
    logger.info("easy-VQA: %s", ", ".join(f"{name} {len(split)}" for name, split in splits.items()))
    return splits


__all__ = ["EasyVQAOptions", "build_easy_vqa", "question_type", "training_splits"]


def training_splits(
    cache_dir: str | Path,
    validation_images: float | int = 0.1,
    seed: int = 0,
    max_questions: int | None = None,
    missing_images: MissingImagePolicy = "error",
    verify_images: bool = True,
) -> TrainingSplits:
    """`build_easy_vqa` with flat arguments, for the Hydra `data` group: train, validation, test, and `dropped`."""
    options = EasyVQAOptions(
        validation_images=validation_images,
        seed=seed,
        max_questions=max_questions,
        missing_images=missing_images,
        verify_images=verify_images,
    )
    return build_easy_vqa(cache_dir, options)
