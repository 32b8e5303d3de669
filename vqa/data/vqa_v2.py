"""VQA v2 from the official JSON files and COCO image folders, as a `datasets.Dataset` in the shared schema.

Expected layout under `root` (the names of the official downloads, unzipped):

    v2_OpenEnded_mscoco_{train2014,val2014,test2015,test-dev2015}_questions.json
    v2_mscoco_{train2014,val2014}_annotations.json
    {train2014,val2014,test2015}/COCO_{train2014|val2014|test2015}_{image_id:012d}.jpg

Run as a script to build a split and print its counts:

    python -m vqa.data.vqa_v2 --root DIR --split val2014 --out DIR [--max-questions N] [--no-verify-images]
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from vqa.data.benchmark import VQA
from vqa.data.build import (
    BuildOptions,
    BuildReport,
    drop_bad_images,
    first_images_and_questions,
    official_training_splits,
)
from vqa.data.cache import cached_build, file_signature
from vqa.data.images import POLICIES, MissingImagePolicy, check_images
from vqa.data.json_checks import required_file
from vqa.data.schema import DataError, TrainingSplits, empty_columns, stored_dataset, with_image_column
from vqa.data.vqa_v2_files import load_annotations, load_questions
from vqa.errors import ArgumentParser, exit_on_user_error

logger = logging.getLogger(__name__)

# Bump when the stored columns, their meaning or the report change: old caches are then rebuilt.
# 2: the image column is stored as the datasets.Image feature (paths only); images are fully decoded once.
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class SplitFiles:
    questions: str
    annotations: str | None  # None: a test split, released without answers
    image_folder: str


SPLITS: dict[str, SplitFiles] = {
    "train2014": SplitFiles(
        "v2_OpenEnded_mscoco_train2014_questions.json", "v2_mscoco_train2014_annotations.json", "train2014"
    ),
    "val2014": SplitFiles(
        "v2_OpenEnded_mscoco_val2014_questions.json", "v2_mscoco_val2014_annotations.json", "val2014"
    ),
    "test2015": SplitFiles("v2_OpenEnded_mscoco_test2015_questions.json", None, "test2015"),
    "test-dev2015": SplitFiles("v2_OpenEnded_mscoco_test-dev2015_questions.json", None, "test2015"),
}


def image_path(root: Path, split: str, image_id: int) -> Path:
    """Where the official COCO download puts an image of this split."""
    folder = SPLITS[split].image_folder
    return root / folder / f"COCO_{folder}_{image_id:012d}.jpg"


def build_vqa_v2(
    root: str | Path,
    split: str,
    cache_dir: str | Path,
    options: BuildOptions | None = None,
) -> tuple[Dataset, BuildReport]:
    """Build (or load from `cache_dir`) one official split in the shared schema.

    A second call with the same files and options loads the cached Arrow files; a changed file (size or
    modification time), image folder or option rebuilds.

    Raises:
        DataError: a missing root or file, malformed JSON, a wrong split name, duplicate ids, an empty or
            un-encodable question, a bad image file (missing, unreadable, truncated, oversized) under policy
            `error`, or an empty result (naming the filter or check that emptied it).
    """
    options = options or BuildOptions()
    options.validate()
    root = Path(root).resolve()  # stored image paths are absolute, so the cache works from any directory
    if split not in SPLITS:
        raise DataError(f"split: got {split!r}, expected one of {', '.join(SPLITS)}")
    if not root.is_dir():
        raise DataError(f"{root}: VQA v2 root folder not found (expected the official JSON files and COCO folders)")
    files = SPLITS[split]
    questions_path = required_file(root / files.questions, "VQA v2")
    annotations_path = required_file(root / files.annotations, "VQA v2") if files.annotations else None
    image_folder = root / files.image_folder
    key = {
        "builder": "vqa_v2",
        "schema_version": SCHEMA_VERSION,
        "split": split,
        "questions": file_signature(questions_path),
        "annotations": file_signature(annotations_path) if annotations_path else None,
        # A new or removed image changes its folder's mtime: with policy `skip` the result may change.
        "image_folder": file_signature(image_folder) if image_folder.is_dir() else str(image_folder),
        "options": asdict(options),
    }

    def build() -> tuple[Dataset, dict[str, Any]]:
        columns, report = _read_split(root, split, questions_path, annotations_path, options, Path(cache_dir))
        return stored_dataset(columns), asdict(report)

    dataset, report, folder = cached_build(Path(cache_dir), f"vqa_v2-{split}", key, build)
    logger.info("VQA v2 %s: %d questions over %d images (%s)", split, report["questions"], report["images"], folder)
    return with_image_column(dataset), BuildReport(**{**report, "cache_folder": str(folder)})


def training_splits(
    root: str | Path,
    cache_dir: str | Path,
    train_split: str = "train2014",
    final_split: str = "val2014",
    minival_images: float | int = 2000,
    seed: int = 0,
    max_questions: int | None = None,
    max_images: int | None = None,
    min_agreement: int | None = None,
    missing_images: MissingImagePolicy = "error",
    verify_images: bool = True,
) -> TrainingSplits:
    """The splits a training run uses, for the Hydra `data` group.

    `train` is `train_split` without an image-disjoint minival; `validation` is that minival (model selection);
    `test` is `final_split` (the reported number), built with the same options. `dropped` sums what the two
    builds left out.
    """
    options = BuildOptions(
        max_questions=max_questions,
        max_images=max_images,
        min_agreement=min_agreement,
        missing_images=missing_images,
        verify_images=verify_images,
    )
    return official_training_splits(
        lambda split: build_vqa_v2(root, split, cache_dir, options), train_split, final_split, minival_images, seed, VQA
    )


def _read_split(
    root: Path,
    split: str,
    questions_path: Path,
    annotations_path: Path | None,
    options: BuildOptions,
    cache_dir: Path,
) -> tuple[dict[str, list[Any]], BuildReport]:
    """Parse, join and filter the JSON files; check the image files of what remains.

    Each step that can leave no questions says so itself, so an empty result names its cause.
    """
    report = BuildReport(split=split, has_answers=annotations_path is not None)
    questions = load_questions(questions_path, split)
    report.questions_in_file = len(questions)
    if not questions:
        raise DataError(f"{questions_path}: the 'questions' list is empty, expected the questions of {split}")
    annotations = load_annotations(annotations_path, split) if annotations_path else None
    if annotations is not None:
        questions = _join_annotations(questions, annotations, questions_path, annotations_path, report)
        questions = _filter_by_agreement(questions, annotations, options.min_agreement, questions_path, report)
    questions = first_images_and_questions(questions, options)

    paths = {image_id: image_path(root, split, image_id) for image_id in {entry["image_id"] for entry in questions}}
    check = check_images(paths, options.missing_images, verify=options.verify_images, record_dir=cache_dir)
    questions = drop_bad_images(questions, check, split, questions_path, report)

    path_strings = {image_id: str(path) for image_id, path in paths.items()}
    columns = empty_columns()
    for entry in questions:
        annotation = annotations[entry["question_id"]] if annotations is not None else None
        columns["question_id"].append(entry["question_id"])
        columns["image_id"].append(entry["image_id"])
        columns["question"].append(entry["question"])
        columns["answers"].append(annotation["answers"] if annotation else [])
        columns["multiple_choice_answer"].append(annotation["multiple_choice_answer"] if annotation else None)
        columns["answer_type"].append(annotation["answer_type"] if annotation else None)
        columns["question_type"].append(annotation["question_type"] if annotation else None)
        columns["image"].append(path_strings[entry["image_id"]])
    report.questions = len(questions)
    report.images = len({entry["image_id"] for entry in questions})
    return columns, report


def _join_annotations(
    questions: list[dict[str, Any]],
    annotations: dict[int, dict[str, Any]],
    questions_path: Path,
    annotations_path: Path,
    report: BuildReport,
) -> list[dict[str, Any]]:
    """The questions that have an annotation (whose image_id must agree); counts the unmatched of both files."""
    if not annotations:
        raise DataError(
            f"{annotations_path}: the 'annotations' list is empty, "
            f"expected the answers of the questions in {questions_path.name}"
        )
    question_ids = {entry["question_id"] for entry in questions}
    report.annotations_without_question = sum(qid not in question_ids for qid in annotations)
    joined = [entry for entry in questions if entry["question_id"] in annotations]
    report.questions_without_annotation = len(questions) - len(joined)
    if not joined:
        # Not a filter's doing: the two files do not belong together (another split, a subset of another file).
        raise DataError(
            f"{annotations_path}: none of its {len(annotations)} question ids match the {len(questions)} questions "
            f"of {questions_path.name} (e.g. annotation {next(iter(annotations), None)}, question "
            f"{questions[0]['question_id']}), expected the annotations of these questions"
        )
    for entry in joined:
        annotation = annotations[entry["question_id"]]
        if annotation["image_id"] != entry["image_id"]:
            raise DataError(
                f"{annotations_path}: question {entry['question_id']} has image_id {annotation['image_id']}, "
                f"but {entry['image_id']} in {questions_path.name}"
            )
    return joined


def _filter_by_agreement(
    questions: list[dict[str, Any]],
    annotations: dict[int, dict[str, Any]],
    min_agreement: int | None,
    questions_path: Path,
    report: BuildReport,
) -> list[dict[str, Any]]:
    """The questions where at least `min_agreement` of the ten humans gave `multiple_choice_answer`."""
    if min_agreement is None:
        return questions
    kept = [entry for entry in questions if _agreement(annotations[entry["question_id"]]) >= min_agreement]
    report.questions_removed_by_agreement = len(questions) - len(kept)
    if not kept:
        raise DataError(
            f"{questions_path}: no questions left after the min_agreement={min_agreement} filter (all "
            f"{len(questions)} annotated questions have fewer humans giving the answer), expected at least one"
        )
    return kept


def _agreement(annotation: dict[str, Any]) -> int:
    return sum(answer == annotation["multiple_choice_answer"] for answer in annotation["answers"])


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m vqa.data.vqa_v2",
        description="Build one VQA v2 split from the official JSON files and COCO images into a cached Dataset.",
    )
    parser.add_argument(
        "--root", required=True, type=Path, help="folder holding the official JSON files and COCO folders"
    )
    parser.add_argument("--split", required=True, choices=sorted(SPLITS), help="official split name")
    parser.add_argument("--out", required=True, type=Path, help="cache folder for the built Arrow dataset")
    parser.add_argument("--max-questions", type=int, help="keep the first N questions (after other filters)")
    parser.add_argument("--max-images", type=int, help="keep the questions of the first N images by id")
    parser.add_argument("--min-agreement", type=int, help="keep questions where >= K of 10 humans gave the answer")
    parser.add_argument(
        "--missing-images",
        choices=POLICIES,
        default="error",
        help="what to do with missing, unreadable, truncated or oversized image files",
    )
    parser.add_argument(
        "--no-verify-images",
        dest="verify_images",
        action="store_false",
        help="read image headers only; by default every image is decoded once (remembered in --out)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = BuildOptions(
        max_questions=args.max_questions,
        max_images=args.max_images,
        min_agreement=args.min_agreement,
        missing_images=args.missing_images,
        verify_images=args.verify_images,
    )
    with exit_on_user_error():
        _, report = build_vqa_v2(args.root, args.split, args.out, options)
    print(report.summary())
    if not report.has_answers:
        print(f"note: {args.split} is a test split: no annotations, answers are empty")
    return 0


if __name__ == "__main__":
    sys.exit(main())
