"""The build path every benchmark's loader shares: options, the report, the filters, the image check and the cache.

A benchmark module reads its official files into records (one dict per question: the shared schema's columns, the
image as a `Path`, and its own extra columns) and hands them to `build_split`, which applies the options (agreement,
first images, first questions), checks every image file once (`vqa.data.images.check_images`), and stores the
split in the build cache (`vqa.data.cache.cached_build`), keyed by the files' signatures and the options.
`official_training_splits` turns two official splits into the splits a run uses.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from vqa.data.benchmark import Benchmark
from vqa.data.cache import cached_build, file_signature
from vqa.data.images import ImageCheck, MissingImagePolicy, check_images, validate_policy
from vqa.data.json_checks import required_file
from vqa.data.schema import (
    ANSWERS_PER_QUESTION,
    COLUMNS,
    DROPPED_KEYS,
    DataError,
    TrainingSplits,
    require_bool,
    require_positive_or_none,
    stored_dataset,
    sum_dropped,
    with_image_column,
)
from vqa.data.splits import split_by_image

logger = logging.getLogger(__name__)

# Bump when what `build_split` stores, or its report, changes: old caches are then rebuilt.
BUILD_VERSION = 1


@dataclass(frozen=True)
class BuildOptions:
    """Filters applied in this order: agreement, images, questions; then the image files are checked."""

    max_questions: int | None = None
    max_images: int | None = None  # keep the questions of the first N images by id
    min_agreement: int | None = None  # textbook filter: >= K of 10 humans gave multiple_choice_answer
    missing_images: MissingImagePolicy = "error"  # for missing, unreadable, truncated or oversized image files
    verify_images: bool = True  # decode every image once (remembered); False: headers only

    def validate(self) -> None:
        """Raises DataError for a bad option, before anything is read."""
        require_positive_or_none("max_questions", self.max_questions)
        require_positive_or_none("max_images", self.max_images)
        require_positive_or_none("min_agreement", self.min_agreement)  # first: a string would fail the comparison
        if self.min_agreement is not None and self.min_agreement > ANSWERS_PER_QUESTION:
            raise DataError(f"min_agreement: got {self.min_agreement}, expected 1..{ANSWERS_PER_QUESTION} or None")
        validate_policy(self.missing_images)
        require_bool("verify_images", self.verify_images)


@dataclass
class BuildReport:
    """Counts of what a build kept and dropped, and why."""

    split: str
    questions: int = 0
    images: int = 0
    has_answers: bool = True
    questions_in_file: int = 0
    questions_without_annotation: int = 0
    annotations_without_question: int = 0
    questions_removed_by_agreement: int = 0
    questions_skipped_for_images: int = 0
    missing_image_files: int = 0
    unreadable_image_files: int = 0  # not an image: the header cannot be parsed
    undecodable_image_files: int = 0  # truncated or corrupt pixel data
    oversized_image_files: int = 0  # over PIL.Image.MAX_IMAGE_PIXELS
    images_decoded: int = 0  # by the build that wrote the cache; files verified by an earlier build are not
    cache_folder: str = ""

    @property
    def dropped(self) -> dict[str, int]:
        """What the build left out, by reason (the keys of `TrainingSplits.dropped`)."""
        return {key: getattr(self, key) for key in DROPPED_KEYS}

    def summary(self) -> str:
        lines = [f"{key:<32}{value}" for key, value in asdict(self).items()]
        return "\n".join(lines)


def first_images_and_questions(questions: list[dict[str, Any]], options: BuildOptions) -> list[dict[str, Any]]:
    """`max_images`, then `max_questions` (both >= 1, so a non-empty list stays non-empty)."""
    if options.max_images is not None:
        keep_images = set(sorted({entry["image_id"] for entry in questions})[: options.max_images])
        questions = [entry for entry in questions if entry["image_id"] in keep_images]
    if options.max_questions is not None:
        questions = questions[: options.max_questions]
    return questions


def drop_bad_images(
    questions: list[dict[str, Any]], check: ImageCheck, split: str, questions_path: Path, report: BuildReport
) -> list[dict[str, Any]]:
    """Record the image check in the report; under policy `skip`, drop the questions of bad images."""
    for key, count in check.counts().items():
        setattr(report, key, count)
    report.images_decoded = check.decoded
    if not check.bad:
        return questions
    kept = [entry for entry in questions if entry["image_id"] not in check.bad]
    report.questions_skipped_for_images = len(questions) - len(kept)
    logger.warning(
        "%s: skipped %d questions whose image file is bad (%s of %d images)",
        split,
        report.questions_skipped_for_images,
        check.summary(),
        check.checked,
    )
    if not kept:
        raise DataError(
            f"{questions_path}: no questions left after the image checks (all {check.checked} images bad: "
            f"{check.summary()}), expected at least one usable image"
        )
    return kept


def build_split(
    benchmark: str,
    split: str,
    files: Sequence[Path],
    image_folder: Path,
    read: Callable[[], list[dict[str, Any]]],
    cache_dir: str | Path,
    options: BuildOptions,
    extra_features: Mapping[str, Any] | None = None,
    version: int = 1,
) -> tuple[Dataset, BuildReport]:
    """Build (or load from `cache_dir`) one official split of `benchmark` in the shared schema.

    Args:
        files: the official files `read` reads; a changed file (size or modification time) rebuilds.
        image_folder: where the split's images are; a file added or removed there rebuilds.
        read: the records, checked (fields, ids, text), in the file's order: the schema's columns (`answers` empty
            and the types None where the split has no answers; `image` the image's `Path`) and `extra_features`.
        options: validated (`build_options`).
        version: the benchmark module's own version of what it reads: bump it when its records change.

    Raises:
        DataError: no records, an image id with two files, a bad image under policy `error`, or
            nothing left after a filter (naming it).
    """
    key = {
        "builder": benchmark,
        "build_version": BUILD_VERSION,
        "version": version,
        "split": split,
        "files": [file_signature(path) for path in files],
        # A new or removed image changes its folder's mtime: with policy `skip` the result may change.
        "image_folder": file_signature(image_folder) if image_folder.is_dir() else str(image_folder),
        "options": asdict(options),
    }

    def build() -> tuple[Dataset, dict[str, Any]]:
        records, report = _filtered_records(benchmark, split, files[0], read, options, Path(cache_dir))
        columns: dict[str, list[Any]] = {name: [] for name in (*COLUMNS, *(extra_features or {}))}
        for record in records:
            for name, values in columns.items():
                values.append(str(record[name]) if name == "image" else record[name])
        return stored_dataset(columns, extra_features), asdict(report)

    dataset, report, folder = cached_build(Path(cache_dir), f"{benchmark}-{split}", key, build)
    logger.info(
        "%s %s: %d questions over %d images (%s)", benchmark, split, report["questions"], report["images"], folder
    )
    return with_image_column(dataset), BuildReport(**{**report, "cache_folder": str(folder)})


def _filtered_records(
    benchmark: str,
    split: str,
    first_file: Path,
    read: Callable[[], list[dict[str, Any]]],
    options: BuildOptions,
    cache_dir: Path,
) -> tuple[list[dict[str, Any]], BuildReport]:
    records = read()
    report = BuildReport(split=split, has_answers=any(record["answers"] for record in records))
    report.questions_in_file = len(records)
    if not records:
        raise DataError(f"{first_file}: no questions in it, expected the questions of {benchmark} {split}")
    records = filter_by_agreement(records, options.min_agreement, first_file, report)
    records = first_images_and_questions(records, options)
    paths: dict[int, Path] = {}
    for record in records:
        known = paths.setdefault(record["image_id"], record["image"])
        if known != record["image"]:
            raise DataError(
                f"{first_file}: image_id {record['image_id']} names two files, {known.name} and "
                f"{record['image'].name}, expected one image per id"
            )
    check = check_images(paths, options.missing_images, verify=options.verify_images, record_dir=cache_dir)
    records = drop_bad_images(records, check, split, first_file, report)
    report.questions = len(records)
    report.images = len({record["image_id"] for record in records})
    return records, report


def filter_by_agreement(
    records: list[dict[str, Any]], min_agreement: int | None, path: Path, report: BuildReport
) -> list[dict[str, Any]]:
    """The records where at least `min_agreement` of the human answers are `multiple_choice_answer`."""
    if min_agreement is None or not report.has_answers:
        return records
    kept = [record for record in records if agreement(record) >= min_agreement]
    report.questions_removed_by_agreement = len(records) - len(kept)
    if not kept:
        raise DataError(
            f"{path}: no questions left after the min_agreement={min_agreement} filter (all {len(records)} "
            "annotated questions have fewer humans giving the answer), expected at least one"
        )
    return kept


def agreement(record: Mapping[str, Any]) -> int:
    """How many of the human answers are the record's `multiple_choice_answer`."""
    return sum(answer == record["multiple_choice_answer"] for answer in record["answers"])


def dense_ids(names: Iterable[str]) -> dict[str, int]:
    """An integer id for each distinct name, in sorted order: the shared schema's `image_id` for benchmarks whose
    image ids are strings (GQA, TextVQA, VizWiz). Within a split, equal names get equal ids."""
    return {name: index for index, name in enumerate(sorted(set(names)))}


def majority_answer(answers: Sequence[str]) -> str:
    """The most common of the human answers (the first given among ties): `multiple_choice_answer` for benchmarks
    that do not name one, as VQA v2 does."""
    return Counter(answers).most_common(1)[0][0]


def vqa_answer_type(answer: str) -> str:
    """VQA v2's answer types for benchmarks that have none: 'yes/no', 'number' (digits, as VQA v2 spells numbers in
    answers) or 'other'."""
    if answer in ("yes", "no"):
        return "yes/no"
    return "number" if answer.replace(".", "", 1).isdigit() else "other"


@dataclass(frozen=True)
class OfficialRelease:
    """What the shared build needs to know of a benchmark's official release (a benchmark module's `RELEASE`).

    Attributes:
        name: the cache folders' prefix and the Benchmark's name ("gqa").
        title: the benchmark in messages ("GQA").
        splits: the official split names.
        files: (split, **read_options) -> the files `read` reads, relative to the root.
        image_folder: split -> the folder of its images, relative to the root.
        read: (root, split, **read_options) -> the records (see `build_split`).
        benchmark: its evaluation.
        extra_features: its columns beyond the shared schema.
        version: of what `read` returns: bump it when the records change (the caches are then rebuilt).
    """

    name: str
    title: str
    splits: tuple[str, ...]
    files: Callable[..., list[str]]
    image_folder: Callable[[str], str]
    read: Callable[..., list[dict[str, Any]]]
    benchmark: Benchmark
    extra_features: Mapping[str, Any] | None = None
    version: int = 1


def build_release(
    release: OfficialRelease,
    root: str | Path,
    split: str,
    cache_dir: str | Path,
    read_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> tuple[Dataset, BuildReport]:
    """One official split of `release` in the shared schema, built once into `cache_dir` (`build_split`).

    Args:
        read_options: passed to the release's `files` and `read` (TextVQA's `ocr_tokens`).
        options: `BuildOptions` fields.

    Raises:
        DataError: a bad option or split name, a missing root folder or file, or what `build_split` raises.
    """
    checked = build_options(options)
    read_options = dict(read_options or {})
    root = Path(root).resolve()  # stored image paths are absolute, so the cache works from any directory
    if split not in release.splits:
        raise DataError(f"split: got {split!r}, expected one of {', '.join(release.splits)}")
    files = release.files(split, **read_options)
    if not root.is_dir():
        raise DataError(f"{root}: {release.title} root folder not found (expected {files[0]} there, and its images)")
    paths = [required_file(root / name, release.title) for name in files]
    return build_split(
        release.name,
        split,
        paths,
        root / release.image_folder(split),
        lambda: release.read(root, split, **read_options),
        cache_dir,
        checked,
        release.extra_features,
        release.version,
    )


def release_training_splits(
    release: OfficialRelease,
    root: str | Path,
    cache_dir: str | Path,
    train_split: str,
    final_split: str,
    minival_images: float | int,
    seed: int,
    read_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> TrainingSplits:
    """`official_training_splits` of a release's splits built with `build_release`."""
    return official_training_splits(
        lambda split: build_release(release, root, split, cache_dir, read_options, **options),
        train_split,
        final_split,
        minival_images,
        seed,
        release.benchmark,
    )


def build_options(options: Mapping[str, Any]) -> BuildOptions:
    """`BuildOptions` from a data config's option keys, validated; a key that is not an option, or a bad value, is one
    line (DataError)."""
    accepted = list(BuildOptions.__dataclass_fields__)
    unknown = [name for name in options if name not in accepted]
    if unknown:
        raise DataError(f"data.{unknown[0]}: not an option of the data source; accepted: {', '.join(accepted)}")
    checked = BuildOptions(**options)
    checked.validate()
    return checked


def official_training_splits(
    build: Callable[[str], tuple[Dataset, BuildReport]],
    train_split: str,
    final_split: str,
    minival_images: float | int,
    seed: int,
    benchmark: Benchmark,
) -> TrainingSplits:
    """The splits a run uses: `train` is `train_split` without an image-disjoint minival; `validation` is that minival
    (model selection); `test` is `final_split` (the reported number). `dropped` sums what the builds left out."""
    full_train, train_report = build(train_split)
    train, minival = split_by_image(full_train, minival_images, seed)
    final, final_report = build(final_split)
    dropped = sum_dropped([train_report.dropped, final_report.dropped])
    return TrainingSplits(train=train, validation=minival, test=final, dropped=dropped, benchmark=benchmark)
