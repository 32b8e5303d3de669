"""Faults in the data and what the builders do with them: bad options, bad JSON content, bad image files,
stale staging folders; and what a build reports (the cache folder's own features, `dropped` counts, quiet logs)."""

from __future__ import annotations

import json
import logging
import os
import random
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import datasets
import pytest
from PIL import Image

from tests.helpers.vqa_v2_fixture import write_vqa_v2
from vqa.data import (
    BuildOptions,
    DataError,
    EasyVQAOptions,
    TrainingSplits,
    build_easy_vqa,
    build_vqa_v2,
    split_by_image,
)
from vqa.data.cache import publish_folder
from vqa.data.easy_vqa import training_splits as easy_training_splits
from vqa.data.images import check_images
from vqa.data.schema import DROPPED_KEYS, with_image_column
from vqa.data.vqa_v2 import image_path, main
from vqa.data.vqa_v2 import training_splits as vqa_v2_training_splits
from vqa.evaluation.score_files import evaluate_files

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = "v2_OpenEnded_mscoco_train2014_questions.json"
ANNOTATIONS = "v2_mscoco_train2014_annotations.json"
IMAGES = (9, 25, 42, 50, 60)  # image ids of the fault fixture: one good image and one per kind of bad file


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_vqa_v2(tmp_path / "vqa")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def train_image(root: Path, image_id: int) -> Path:
    return image_path(root, "train2014", image_id)


def edit_json(path: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))


# Bad image files, each made from real image data.


def noisy_jpeg_bytes(size: tuple[int, int] = (48, 32)) -> bytes:
    """A JPEG with enough entropy that its scan data is most of the file (a solid colour compresses to nothing)."""
    image = Image.frombytes("RGB", size, random.Random(0).randbytes(size[0] * size[1] * 3))
    buffer = BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def write_truncated_jpeg(path: Path) -> None:
    """A JPEG cut in half: PIL reads its header fine; only decoding the pixels fails."""
    data = noisy_jpeg_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(1).randbytes(2000))


def write_corrupt_png(path: Path) -> None:
    """A PNG (under a .jpg name: PIL goes by content) with a valid header and garbage in its compressed pixels."""
    buffer = BytesIO()
    Image.new("RGB", (48, 32), (10, 200, 30)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    start = data.find(b"IDAT") + 6
    data[start : start + 20] = random.Random(2).randbytes(20)
    path.write_bytes(bytes(data))


def write_large_png(path: Path) -> None:
    """100x100 = 10,000 pixels: over the limit the tests set, highly compressible (a few hundred bytes)."""
    Image.new("L", (100, 100), 90).save(path, format="PNG")


@pytest.fixture
def faulty_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """train2014 with images 9 (good), 25 (missing), 42 (random bytes), 50 (truncated), 60 (over PIL's limit)."""
    root = write_vqa_v2(tmp_path / "faulty", train_images=IMAGES)
    train_image(root, 25).unlink()
    write_random_bytes(train_image(root, 42))
    write_truncated_jpeg(train_image(root, 50))
    write_large_png(train_image(root, 60))
    # PIL's own decompression-bomb setting, lowered so that a small file is "too large" (48x32 images stay under).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)
    return root


# 1. Options


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (EasyVQAOptions(max_questions=-5), r"max_questions: got -5, expected a positive number or None"),
        (EasyVQAOptions(max_questions=0), r"max_questions: got 0"),
        (EasyVQAOptions(validation_images=0), r"validation_images: got 0"),
        (EasyVQAOptions(validation_images=-3), r"validation_images: got -3"),
        (EasyVQAOptions(validation_images=-0.1), r"validation_images: got -0.1"),
        (EasyVQAOptions(validation_images=1.0), r"validation_images: got 1.0"),
        (EasyVQAOptions(validation_images=1.5), r"validation_images: got 1.5"),
        (EasyVQAOptions(validation_images=True), r"validation_images: got True"),
        (EasyVQAOptions(missing_images="ignore"), r"missing_images: got 'ignore'"),
        (EasyVQAOptions(verify_images="yes"), r"verify_images: got 'yes'"),
    ],
)
def test_bad_easy_vqa_options_fail_before_any_work(options: EasyVQAOptions, message: str, cache: Path) -> None:
    with pytest.raises(DataError, match=message) as error:
        build_easy_vqa(cache, options)
    assert "\n" not in str(error.value)
    assert not cache.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (BuildOptions(max_images=0), r"max_images: got 0, expected a positive number or None"),
        (BuildOptions(min_agreement=0), r"min_agreement: got 0"),
        (BuildOptions(min_agreement=11), r"min_agreement: got 11, expected 1\.\.10 or None"),
        (BuildOptions(min_agreement="abc"), r"min_agreement: got 'abc'"),
    ],
)
def test_bad_vqa_v2_options_fail_before_any_work(options: BuildOptions, message: str, root: Path, cache: Path) -> None:
    with pytest.raises(DataError, match=message) as error:
        build_vqa_v2(root, "train2014", cache, options)
    assert "\n" not in str(error.value)
    assert not cache.exists()


@pytest.mark.parametrize("holdout", [0, -1, 0.0, -0.2, 1.0, True])
def test_split_by_image_refuses_non_positive_or_whole_holdouts(root: Path, cache: Path, holdout: float) -> None:
    dataset, _ = build_vqa_v2(root, "train2014", cache)
    with pytest.raises(DataError, match="holdout: got"):
        split_by_image(dataset, holdout)


def test_bad_vqa_v2_verify_option(root: Path, cache: Path) -> None:
    with pytest.raises(DataError, match="verify_images: got 'no', expected true or false"):
        build_vqa_v2(root, "train2014", cache, BuildOptions(verify_images="no"))


# 2.-4. JSON content


def test_duplicate_question_id_names_the_file_and_the_id(root: Path, cache: Path) -> None:
    path = root / QUESTIONS
    edit_json(path, lambda content: content["questions"].append(dict(content["questions"][1])))
    with pytest.raises(DataError) as error:
        build_vqa_v2(root, "train2014", cache)
    assert str(error.value) == (
        f"{path}: questions[6] repeats question_id 91 (first at questions[1]), expected each question_id once"
    )


def test_two_annotations_for_one_question_name_the_file_and_the_id(root: Path, cache: Path) -> None:
    path = root / ANNOTATIONS
    edit_json(path, lambda content: content["annotations"].insert(3, dict(content["annotations"][0])))
    with pytest.raises(
        DataError,
        match=rf"^{re.escape(str(path))}: annotations\[3\] repeats question_id 90 \(first at annotations\[0\]\)",
    ):
        build_vqa_v2(root, "train2014", cache)


def test_evaluate_refuses_duplicate_annotations_too(root: Path, tmp_path: Path) -> None:
    path = root / ANNOTATIONS
    edit_json(path, lambda content: content["annotations"].append(dict(content["annotations"][2])))
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"question_id": qid, "answer": "x"} for qid in (90, 91, 250, 251, 420, 421)]))
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: annotations\[6\] repeats question_id 250"):
        evaluate_files(root / QUESTIONS, path, results)


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_empty_question_names_file_index_and_id(root: Path, cache: Path, text: str) -> None:
    path = root / QUESTIONS
    edit_json(path, lambda content: content["questions"][2].update(question=text))
    with pytest.raises(DataError) as error:
        build_vqa_v2(root, "train2014", cache)
    assert str(error.value) == (
        f"{path}: questions[2].question is {text!r} (question_id 250), expected the question's text"
    )


def test_question_that_cannot_be_utf8_names_file_and_id(root: Path, cache: Path) -> None:
    path = root / QUESTIONS
    # A lone surrogate as JSON writes it: valid JSON, a Python str, but not encodable (Arrow would fail later).
    path.write_text(path.read_text().replace("what is in image 25?", "what is in \\ud800 image?", 1))
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(path))}: questions\[2\]\.question \(question_id 250\) is .*surrogate"
    ):
        build_vqa_v2(root, "train2014", cache)
    assert not cache.exists()


def test_answer_that_cannot_be_utf8_names_the_answer(root: Path, cache: Path) -> None:
    path = root / ANNOTATIONS
    path.write_text(path.read_text().replace('"thing 42"', '"thing \\udfff"', 1))
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(path))}: annotations\[4\]\.multiple_choice_answer \(question_id 420\)"
    ):
        build_vqa_v2(root, "train2014", cache)


def test_annotations_of_other_questions_are_named_as_the_cause(root: Path, cache: Path) -> None:
    annotations = root / ANNOTATIONS
    # The val2014 annotations (other question ids) under the train2014 name, relabelled to pass the subtype check.
    content = json.loads((root / "v2_mscoco_val2014_annotations.json").read_text())
    content["data_subtype"] = "train2014"
    annotations.write_text(json.dumps(content))
    with pytest.raises(DataError) as error:
        build_vqa_v2(root, "train2014", cache)
    message = str(error.value)
    assert message.startswith(f"{annotations}: none of its 4 question ids match the 6 questions of {QUESTIONS}")
    assert "filters" not in message and "\n" not in message


def test_empty_result_names_the_image_checks(root: Path, cache: Path) -> None:
    for image_id in (9, 25, 42):
        train_image(root, image_id).unlink()
    with pytest.raises(DataError, match=r"no questions left after the image checks \(all 3 images bad: 3 missing\)"):
        build_vqa_v2(root, "train2014", cache, BuildOptions(missing_images="skip"))


# 5. Image files


@pytest.mark.parametrize(
    ("write", "reason", "field"),
    [
        (write_truncated_jpeg, r"truncated or corrupt image data \(image file is truncated", "undecodable_image_files"),
        (write_corrupt_png, r"truncated or corrupt image data \(", "undecodable_image_files"),
        (write_random_bytes, r"not a readable image", "unreadable_image_files"),
    ],
)
def test_bad_image_data_under_both_policies(
    root: Path, cache: Path, write: Callable[[Path], None], reason: str, field: str
) -> None:
    bad = train_image(root, 42)
    write(bad)
    with pytest.raises(DataError, match=rf"^{re.escape(str(bad))}: {reason}.*\(1 of 3 images bad: 1 ") as error:
        build_vqa_v2(root, "train2014", cache)
    assert "\n" not in str(error.value)
    dataset, report = build_vqa_v2(root, "train2014", cache, BuildOptions(missing_images="skip"))
    assert getattr(report, field) == 1 and report.questions_skipped_for_images == 2
    assert sorted(set(dataset["image_id"])) == [9, 25]


def test_random_bytes_are_unreadable(root: Path, cache: Path) -> None:
    bad = train_image(root, 9)
    write_random_bytes(bad)
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(bad))}: not a readable image \(1 of 3 images bad: 1 unreadable;"
    ):
        build_vqa_v2(root, "train2014", cache)


@pytest.mark.parametrize("limit", [6000, 4000])  # 10,000 pixels: PIL warns over the limit, raises over twice it
def test_decompression_bomb_is_too_large_not_a_crash(
    root: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    bad = train_image(root, 25)
    write_large_png(bad)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    expected = (
        rf"^{re.escape(str(bad))}: too large: 10000 pixels, over PIL's limit of {limit} \(PIL.Image.MAX_IMAGE_PIXELS\)"
    )
    with pytest.raises(DataError, match=expected):
        build_vqa_v2(root, "train2014", cache)
    dataset, report = build_vqa_v2(root, "train2014", cache, BuildOptions(missing_images="skip"))
    assert report.oversized_image_files == 1 and report.questions_skipped_for_images == 2 and len(dataset) == 4


def test_every_fault_counted_under_skip_and_named_under_error(
    faulty_root: Path, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(DataError) as error:
        build_vqa_v2(faulty_root, "train2014", cache)
    assert str(error.value) == (
        f"{train_image(faulty_root, 25)}: image file not found (4 of 5 images bad: 1 missing, 1 unreadable, "
        "1 truncated or corrupt, 1 too large; set missing_images='skip' to drop their questions)"
    )
    with caplog.at_level(logging.WARNING, logger="vqa.data"):
        dataset, report = build_vqa_v2(faulty_root, "train2014", cache, BuildOptions(missing_images="skip"))
    assert sorted(set(dataset["image_id"])) == [9] and report.questions_skipped_for_images == 8
    assert report.dropped == {
        "questions_without_annotation": 0,
        "annotations_without_question": 0,
        "questions_removed_by_agreement": 0,
        "questions_skipped_for_images": 8,
        "missing_image_files": 1,
        "unreadable_image_files": 1,
        "undecodable_image_files": 1,
        "oversized_image_files": 1,
    }
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [
        "train2014: skipped 8 questions whose image file is bad "
        "(1 missing, 1 unreadable, 1 truncated or corrupt, 1 too large of 5 images)"
    ]


def test_worker_processes_find_the_same_faults(faulty_root: Path) -> None:
    paths = {image_id: train_image(faulty_root, image_id) for image_id in IMAGES}
    serial = check_images(paths, "skip", workers=1)
    parallel = check_images(paths, "skip", workers=2)  # the lowered PIL limit must reach the workers too
    assert (serial.missing, serial.unreadable, serial.undecodable, serial.oversized) == ([25], [42], [50], [60])
    assert parallel == serial and parallel.decoded == 4  # the missing file is not decoded


def test_verification_is_remembered_across_splits_and_options(root: Path, cache: Path) -> None:
    _, first = build_vqa_v2(root, "train2014", cache)
    assert first.images_decoded == 3
    # Another option, so another dataset folder: the same images are not decoded again.
    _, second = build_vqa_v2(root, "train2014", cache, BuildOptions(max_images=2))
    assert second.cache_folder != first.cache_folder and second.images_decoded == 0
    _, val = build_vqa_v2(root, "val2014", cache)
    assert val.images_decoded == 2  # other files
    # A changed file (new mtime) is decoded again, and only it.
    changed = train_image(root, 42)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    _, third = build_vqa_v2(root, "train2014", cache, BuildOptions(max_questions=5))
    assert third.images_decoded == 1


def test_a_file_that_went_bad_since_it_was_verified_is_caught(root: Path, cache: Path) -> None:
    build_vqa_v2(root, "train2014", cache)
    bad = train_image(root, 9)
    write_truncated_jpeg(bad)  # new size and mtime: the remembered result does not apply
    with pytest.raises(DataError, match=rf"^{re.escape(str(bad))}: truncated or corrupt image data"):
        build_vqa_v2(root, "train2014", cache, BuildOptions(max_questions=4))


def test_header_only_check_lets_a_truncated_file_through(root: Path, cache: Path) -> None:
    write_truncated_jpeg(train_image(root, 42))
    dataset, report = build_vqa_v2(root, "train2014", cache, BuildOptions(verify_images=False))
    assert len(dataset) == 6 and report.images_decoded == 0 and report.undecodable_image_files == 0
    with pytest.raises(DataError, match="truncated"):
        build_vqa_v2(root, "train2014", cache)  # verify_images is part of the cache key: this one checks


def test_cli_no_verify_images(root: Path, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_truncated_jpeg(train_image(root, 42))
    arguments = ["--root", str(root), "--split", "train2014", "--out", str(cache)]
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2
    assert "truncated or corrupt image data" in capsys.readouterr().err
    assert main([*arguments, "--no-verify-images"]) == 0
    counts = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines())
    assert counts["questions"] == "6" and counts["images_decoded"] == "0"


# 6. Stale staging folders


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def staging(cache: Path, owner: str) -> Path:
    folder = cache / f".vqa_v2-train2014-0123456789abcdef.partial-{owner}"
    folder.mkdir(parents=True)
    (folder / "data-00000-of-00001.arrow").write_bytes(b"\0" * 3 * 2**20)
    return folder


def test_stale_staging_folders_of_dead_processes_are_removed(
    root: Path, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = socket.gethostname()
    dead = staging(cache, f"{host}-{dead_pid()}-deadbeef")
    live = staging(cache, f"{host}-{os.getpid()}-0a1b2c3d")  # e.g. another rank building right now
    other_host = staging(cache, f"{host}x-{dead_pid()}-0a1b2c3d")  # a shared cache: cannot be checked from here
    unnamed = staging(cache, "deadbeef")  # an older build's name without its owner
    with caplog.at_level(logging.INFO, logger="vqa.data.cache"):
        build_vqa_v2(root, "train2014", cache)
    assert not dead.exists() and live.exists() and other_host.exists() and unnamed.exists()
    removed = [record.getMessage() for record in caplog.records if "stale staging" in record.getMessage()]
    assert removed == [f"removed stale staging folder {dead} (3.0 MiB) of dead process {dead.name.split('-')[-2]}"]


def test_staging_folder_names_host_and_process(tmp_path: Path) -> None:
    seen: list[Path] = []

    def write(staging_folder: Path) -> None:
        seen.append(staging_folder)
        staging_folder.mkdir()

    publish_folder(tmp_path / "result", write)
    assert (tmp_path / "result").is_dir()
    assert seen[0].name.startswith(f".result.partial-{socket.gethostname()}-{os.getpid()}-")


# 7. The cache folder describes itself


def test_cache_folder_loads_with_the_image_feature(root: Path, cache: Path) -> None:
    big = train_image(root, 9)
    big.write_bytes(noisy_jpeg_bytes((160, 120)))  # tens of kB: a copy into the cache could not hide
    dataset, report = build_vqa_v2(root, "train2014", cache)
    loaded = datasets.load_from_disk(report.cache_folder)
    assert loaded.features["image"] == datasets.Image()
    assert loaded.features == dataset.features
    assert isinstance(loaded[0]["image"], Image.Image) and loaded[0]["image"].size == (160, 120)
    assert with_image_column(loaded) is loaded  # nothing left to convert
    stored = loaded.cast_column("image", datasets.Image(decode=False))[0]["image"]  # what training reads
    assert stored == {"bytes": None, "path": str(big.resolve())}
    arrow_size = sum(path.stat().st_size for path in Path(report.cache_folder).glob("*.arrow"))
    assert arrow_size < big.stat().st_size  # paths and text only: one embedded copy alone would be bigger


def test_older_path_string_form_still_becomes_images(root: Path) -> None:
    # A dataset whose image column is a plain path string (how caches before schema version 2 stored it).
    old = datasets.Dataset.from_dict({"image": [str(train_image(root, 9))]})
    converted = with_image_column(old)
    assert converted.features["image"] == datasets.Image() and isinstance(converted[0]["image"], Image.Image)


# 8. Quiet logs


def test_builds_print_no_progress_bars_of_datasets_internals(
    root: Path, cache: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    dataset, _ = build_vqa_v2(root, "train2014", cache)
    build_vqa_v2(root, "train2014", cache)  # from the cache
    split_by_image(dataset, holdout=1)
    with_image_column(datasets.Dataset.from_dict({"image": [str(train_image(root, 9))]}))
    build_easy_vqa(cache, EasyVQAOptions(max_questions=40))
    err = capfd.readouterr().err
    for internal in ("Saving the dataset", "Casting", "Flattening the indices", "Map", "Loading dataset"):
        assert internal not in err


# 9. No runpy warning


def test_module_cli_runs_without_runpy_warning() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "always", "-m", "vqa.data.vqa_v2", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--no-verify-images" in result.stdout
    assert "found in sys.modules" not in result.stderr and "runpy" not in result.stderr


# 10. What a build dropped, from a fresh and a cached build


def test_vqa_v2_training_splits_report_dropped(root: Path, cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    train_image(root, 25).unlink()
    arguments = {"minival_images": 1, "min_agreement": 5, "missing_images": "skip"}
    fresh = vqa_v2_training_splits(root, cache, **arguments)
    with caplog.at_level(logging.INFO, logger="vqa.data.cache"):
        cached = vqa_v2_training_splits(root, cache, **arguments)
    assert sum("from cache" in record.getMessage() for record in caplog.records) == 2
    for splits in (fresh, cached):
        assert isinstance(splits, TrainingSplits) and list(splits) == ["train", "validation", "test"]
        # train2014: 3 of 6 below agreement 5, then image 25 missing (1 question); val2014: 2 of 4 below.
        assert splits.dropped == {
            "questions_without_annotation": 0,
            "annotations_without_question": 0,
            "questions_removed_by_agreement": 5,
            "questions_skipped_for_images": 1,
            "missing_image_files": 1,
            "unreadable_image_files": 0,
            "undecodable_image_files": 0,
            "oversized_image_files": 0,
        }


def test_easy_vqa_training_splits_report_dropped(cache: Path) -> None:
    splits = easy_training_splits(cache, max_questions=60, verify_images=True)
    again = easy_training_splits(cache, max_questions=60)
    for result in (splits, again):
        assert isinstance(result, TrainingSplits) and list(result) == ["train", "validation", "test"]
        assert set(result.dropped) <= set(DROPPED_KEYS) and "missing_image_files" in result.dropped
        assert all(count == 0 for count in result.dropped.values())
