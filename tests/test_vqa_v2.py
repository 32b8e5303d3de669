"""VQA v2 from official-format files: schema, caching, options, the CLI and every kind of bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Image as ImageFeature
from PIL.Image import Image

from tests.helpers.vqa_v2_fixture import TRAIN_IMAGES, write_vqa_v2
from vqa.data import BuildOptions, DataError, build_vqa_v2, has_answers, split_by_image
from vqa.data.vqa_v2 import main

COLUMNS = [
    "question_id",
    "image_id",
    "question",
    "answers",
    "multiple_choice_answer",
    "answer_type",
    "question_type",
    "image",
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_vqa_v2(tmp_path / "vqa")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def arrow_files(folder: str) -> dict[str, int]:
    return {name: os.stat(Path(folder) / name).st_mtime_ns for name in os.listdir(folder) if name.endswith(".arrow")}


def test_builds_the_shared_schema(root: Path, cache: Path) -> None:
    dataset, report = build_vqa_v2(root, "train2014", cache)
    assert dataset.column_names == COLUMNS
    assert isinstance(dataset.features["image"], ImageFeature)
    assert len(dataset) == 6 and report.questions == 6 and report.images == 3
    row = dataset[0]
    assert row["question_id"] == 90 and row["image_id"] == 9
    assert row["answers"] == ["thing 9"] * 10 and row["multiple_choice_answer"] == "thing 9"
    assert row["answer_type"] == "other" and row["question_type"] == "what is in"
    assert isinstance(row["image"], Image) and row["image"].size == (48, 32)
    assert has_answers(dataset) and report.has_answers


def test_images_are_stored_as_paths_not_bytes(root: Path, cache: Path) -> None:
    dataset, report = build_vqa_v2(root, "train2014", cache)
    stored = dataset.cast_column("image", ImageFeature(decode=False))[0]["image"]
    assert stored["bytes"] is None
    assert stored["path"] == str((root / "train2014" / "COCO_train2014_000000000009.jpg").resolve())
    arrow_bytes = b"".join(f.read_bytes() for f in Path(report.cache_folder).glob("*.arrow"))
    assert b"\xff\xd8\xff" not in arrow_bytes  # no JPEG was copied into the cache


def test_second_build_loads_the_cache(root: Path, cache: Path) -> None:
    _, first = build_vqa_v2(root, "train2014", cache)
    written = arrow_files(first.cache_folder)
    dataset, second = build_vqa_v2(root, "train2014", cache)
    assert second.cache_folder == first.cache_folder
    assert arrow_files(second.cache_folder) == written  # not rewritten
    assert len(dataset) == 6 and second == first


def test_changed_input_or_option_rebuilds(root: Path, cache: Path) -> None:
    _, first = build_vqa_v2(root, "train2014", cache)
    _, other_option = build_vqa_v2(root, "train2014", cache, BuildOptions(max_questions=2))
    assert other_option.cache_folder != first.cache_folder and other_option.questions == 2
    annotations = root / "v2_mscoco_train2014_annotations.json"
    content = json.loads(annotations.read_text())
    content["annotations"][0]["multiple_choice_answer"] = "changed"
    annotations.write_text(json.dumps(content))
    dataset, changed = build_vqa_v2(root, "train2014", cache)
    assert changed.cache_folder != first.cache_folder
    assert dataset[0]["multiple_choice_answer"] == "changed"


def test_failed_build_leaves_no_cache(root: Path, cache: Path) -> None:
    (root / "train2014" / "COCO_train2014_000000000042.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError):
        build_vqa_v2(root, "train2014", cache)
    # Only the record of the images verified ok (they stay verified); no dataset folder, no staging folder.
    assert [path.name for path in cache.iterdir()] == ["image_checks"]


def test_partial_folder_from_a_killed_build_is_never_loaded(root: Path, cache: Path) -> None:
    _, report = build_vqa_v2(root, "train2014", cache)
    folder = Path(report.cache_folder)
    # What a build killed while writing leaves behind: a staging folder, never the final name.
    partial = folder.parent / f".{folder.name}.partial-deadbeef"
    folder.rename(partial)
    dataset, rebuilt = build_vqa_v2(root, "train2014", cache)
    assert rebuilt.cache_folder == str(folder) and len(dataset) == 6


def test_max_questions_and_max_images(root: Path, cache: Path) -> None:
    dataset, _ = build_vqa_v2(root, "train2014", cache, BuildOptions(max_questions=3))
    assert dataset["question_id"] == [90, 91, 250]
    dataset, report = build_vqa_v2(root, "train2014", cache, BuildOptions(max_images=2))
    assert sorted(set(dataset["image_id"])) == [9, 25] and report.images == 2


def test_min_agreement_filter(root: Path, cache: Path) -> None:
    dataset, report = build_vqa_v2(root, "train2014", cache, BuildOptions(min_agreement=5))
    assert dataset["question_id"] == [90, 250, 420]  # the k=1 questions have 4 of 10 agreeing
    assert report.questions_removed_by_agreement == 3


def test_minival_is_image_disjoint_and_seeded(root: Path, cache: Path) -> None:
    dataset, _ = build_vqa_v2(root, "train2014", cache)
    train, minival = split_by_image(dataset, holdout=1, seed=0)
    assert set(train["image_id"]).isdisjoint(minival["image_id"])
    assert len(train) + len(minival) == len(dataset) and len(minival) == 2
    _, again_minival = split_by_image(dataset, holdout=1, seed=0)
    assert again_minival["question_id"] == minival["question_id"]
    with pytest.raises(DataError, match="holdout"):
        split_by_image(dataset, holdout=3)


def test_test_split_has_no_answers_and_says_so(root: Path, cache: Path) -> None:
    dataset, report = build_vqa_v2(root, "test-dev2015", cache)
    assert len(dataset) == 4 and not report.has_answers and not has_answers(dataset)
    row = dataset[0]
    assert row["answers"] == [] and row["multiple_choice_answer"] is None and row["answer_type"] is None
    assert isinstance(row["image"], Image)


def test_mismatched_ids_are_counted(root: Path, cache: Path) -> None:
    questions = root / "v2_OpenEnded_mscoco_train2014_questions.json"
    content = json.loads(questions.read_text())
    content["questions"] = content["questions"][1:]  # question 90 now has an annotation only
    content["questions"].append({"image_id": 9, "question": "orphan?", "question_id": 99})  # and 99 a question only
    questions.write_text(json.dumps(content))
    dataset, report = build_vqa_v2(root, "train2014", cache)
    assert report.annotations_without_question == 1 and report.questions_without_annotation == 1
    assert report.questions_in_file == 6 and len(dataset) == 5 and 99 not in dataset["question_id"]


def test_missing_image_under_error_policy(root: Path, cache: Path) -> None:
    missing = root / "train2014" / "COCO_train2014_000000000025.jpg"
    missing.unlink()
    with pytest.raises(DataError) as error:
        build_vqa_v2(root, "train2014", cache)
    assert str(error.value).startswith(f"{missing}: image file not found (1 of 3 images bad: 1 missing;")
    assert "\n" not in str(error.value)


def test_missing_image_under_skip_policy(root: Path, cache: Path) -> None:
    (root / "train2014" / "COCO_train2014_000000000025.jpg").unlink()
    dataset, report = build_vqa_v2(root, "train2014", cache, BuildOptions(missing_images="skip"))
    assert report.missing_image_files == 1 and report.questions_skipped_for_images == 2
    assert sorted(set(dataset["image_id"])) == [9, 42]


def test_corrupt_image_is_named_or_counted(root: Path, cache: Path) -> None:
    corrupt = root / "train2014" / "COCO_train2014_000000000042.jpg"
    corrupt.write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match=f"^{corrupt}: not a readable image"):
        build_vqa_v2(root, "train2014", cache)
    dataset, report = build_vqa_v2(root, "train2014", cache, BuildOptions(missing_images="skip"))
    assert report.unreadable_image_files == 1 and report.questions_skipped_for_images == 2 and len(dataset) == 4


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda root: root.rename(root.with_name("elsewhere")), "VQA v2 root folder not found"),
        (lambda root: (root / "v2_OpenEnded_mscoco_train2014_questions.json").unlink(), "file not found"),
        (lambda root: (root / "v2_mscoco_train2014_annotations.json").unlink(), "file not found"),
        (
            lambda root: (root / "v2_mscoco_train2014_annotations.json").write_text('{"annotations": [}'),
            "malformed JSON at line 1 column 18",
        ),
        (
            lambda root: (root / "v2_OpenEnded_mscoco_train2014_questions.json").write_text('{"questions": {}}'),
            "expected an object with a 'questions' list",
        ),
        (
            lambda root: (root / "v2_OpenEnded_mscoco_train2014_questions.json").write_text(
                '{"questions": [{"image_id": 9, "question": "q?"}]}'
            ),
            r"questions\[0\].question_id is None, expected int",
        ),
        (
            lambda root: (root / "v2_mscoco_train2014_annotations.json").write_text(
                '{"annotations": [{"question_id": 90, "image_id": 9, "answers": ["a"], "multiple_choice_answer": "a",'
                ' "answer_type": "other", "question_type": "what"}]}'
            ),
            r"annotations\[0\].answers has 1 entries",
        ),
        (
            lambda root: (root / "v2_OpenEnded_mscoco_val2014_questions.json").rename(
                root / "v2_OpenEnded_mscoco_train2014_questions.json"
            ),
            "data_subtype is 'val2014', expected 'train2014'",
        ),
    ],
)
def test_bad_input_is_one_clear_line(root: Path, cache: Path, breakage, message: str) -> None:
    breakage(root)
    with pytest.raises(DataError, match=message) as error:
        build_vqa_v2(root, "train2014", cache)
    assert "\n" not in str(error.value)
    assert not cache.exists()


def test_unknown_split(root: Path, cache: Path) -> None:
    with pytest.raises(DataError, match="split: got 'train2017', expected one of train2014, val2014"):
        build_vqa_v2(root, "train2017", cache)


def test_empty_result_after_filters(root: Path, cache: Path) -> None:
    annotations = root / "v2_mscoco_train2014_annotations.json"
    content = json.loads(annotations.read_text())
    for annotation in content["annotations"]:
        annotation["answers"][0]["answer"] = "dissent"
    annotations.write_text(json.dumps(content))
    with pytest.raises(DataError, match="no questions left after the min_agreement=10 filter"):
        build_vqa_v2(root, "train2014", cache, BuildOptions(min_agreement=10))


def test_cli_builds_and_prints_counts(root: Path, cache: Path) -> None:
    command = [sys.executable, "-m", "vqa.data.vqa_v2", "--root", str(root), "--split", "val2014", "--out", str(cache)]
    result = subprocess.run([*command, "--max-questions", "3"], capture_output=True, text=True, check=True)
    counts = dict(line.split(maxsplit=1) for line in result.stdout.splitlines() if line and not line.startswith("note"))
    assert counts["questions"] == "3" and counts["images"] == "2" and counts["questions_skipped_for_images"] == "0"
    assert counts["images_decoded"] == "2"
    # No progress bars of datasets' internals in the log (stderr is not a terminal here, as in a batch job).
    assert "Saving the dataset" not in result.stderr and "examples/s" not in result.stderr


def test_cli_bad_input_exits_2_with_one_line(root: Path, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (root / "train2014" / f"COCO_train2014_{TRAIN_IMAGES[0]:012d}.jpg").unlink()
    with pytest.raises(SystemExit) as exit_info:
        main(["--root", str(root), "--split", "train2014", "--out", str(cache)])
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and error.startswith("error: ") and "image file not found" in error
    assert len(error.splitlines()) == 1
