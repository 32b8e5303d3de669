"""easy-VQA from the installed package, in the shared schema, with an image-disjoint validation split."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import DatasetDict
from PIL.Image import Image

from tests.helpers.vqa_v2_fixture import write_vqa_v2
from vqa.data import EasyVQAOptions, build_easy_vqa, build_vqa_v2
from vqa.data.easy_vqa import question_type


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> DatasetDict:
    cache = tmp_path_factory.mktemp("easy_vqa_cache")
    return build_easy_vqa(cache, EasyVQAOptions(max_questions=600, validation_images=0.2, seed=0))


def test_same_schema_as_vqa_v2(splits: DatasetDict, tmp_path: Path) -> None:
    vqa_v2, _ = build_vqa_v2(write_vqa_v2(tmp_path / "vqa"), "val2014", tmp_path / "cache")
    for split in splits.values():
        assert split.features == vqa_v2.features


def test_splits_and_rows(splits: DatasetDict) -> None:
    assert list(splits) == ["train", "validation", "test"]
    assert len(splits["train"]) + len(splits["validation"]) == 600 and len(splits["test"]) == 600
    row = splits["train"][0]
    assert row["answers"] == [row["multiple_choice_answer"]] * 10
    assert isinstance(row["image"], Image) and row["image"].size == (64, 64)
    answer_types = dict(zip(splits["test"]["multiple_choice_answer"], splits["test"]["answer_type"], strict=True))
    assert answer_types["yes"] == "yes/no" and answer_types["no"] == "yes/no" and answer_types["circle"] == "other"


def test_validation_is_image_disjoint_from_train(splits: DatasetDict) -> None:
    assert set(splits["train"]["image_id"]).isdisjoint(splits["validation"]["image_id"])
    assert len(splits["validation"]) > 0


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("what is the blue shape?", "what is the"),
        ("is there not a teal shape in the image?", "is there not a"),
        ("does the image contain a circle?", "does the image contain a"),
        ("what shape is present?", "what shape is present"),
        ("What color is the shape?", "what color is the shape"),
    ],
)
def test_question_type(question: str, expected: str) -> None:
    assert question_type(question) == expected
