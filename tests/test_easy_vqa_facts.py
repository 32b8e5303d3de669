"""The easy-VQA facts task: facts drawn as documented, questions whose answers only the corpus holds, split by
property, the corpora readable by the retrieval package, and BM25 finding every question's passage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vqa.data.easy_vqa_facts import (
    SHAPES,
    VALUES,
    FactOptions,
    build_easy_vqa_facts,
    draw_facts,
    image_shapes,
    passage_id,
)
from vqa.data.easy_vqa_facts import main as facts_main
from vqa.data.schema import COLUMNS, DataError
from vqa.retrieval import BM25Index, load_corpus
from vqa.retrieval.attach import attach_passages, recall_at_k


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory):
    """The task over the first 40 images (160 questions) of each package split."""
    cache = tmp_path_factory.mktemp("facts_cache")
    return build_easy_vqa_facts(cache, FactOptions(max_questions=160)), cache


def test_facts_are_seeded_split_by_property_and_swapped_everywhere() -> None:
    facts = draw_facts(FactOptions())
    assert facts == draw_facts(FactOptions()) and facts != draw_facts(FactOptions(seed=1))
    train, validation, test = (set(facts.properties[split]) for split in ("train", "validation", "test"))
    assert (len(train), len(validation), len(test)) == (3000, 20, 20)
    assert not train & validation and not train & test and not validation & test
    for name in train | validation | test:
        assert len({facts.values[name, shape] for shape in SHAPES}) == 3  # the image's shape decides the answer
        assert len({facts.swapped[name, shape] for shape in SHAPES}) == 3
        assert all(facts.swapped[name, shape] != facts.values[name, shape] for shape in SHAPES)
    assert {facts.values[name, shape] for name in train for shape in SHAPES} == set(VALUES)


def test_the_image_shape_is_read_off_its_questions() -> None:
    questions = [
        "what shape is in the image?", "what color is the triangle?", "is there a circle?",
        "is there not a rectangle?", "is there a circle?", "is there not a triangle?", "what color is the shape?",
    ]  # fmt: skip
    answers = ["circle", "red", "yes", "no", "no", "yes", "blue"]
    image_ids = [1, 2, 3, 4, 5, 5, 6]
    # 5: not a circle, not a triangle -> a rectangle; 6: nothing said about its shape -> left out.
    assert image_shapes(questions, answers, image_ids) == {1: "circle", 2: "triangle", 3: "circle", 4: "rectangle",
                                                           5: "rectangle"}  # fmt: skip


def test_each_question_asks_its_splits_properties_and_the_gold_passage_holds_its_answer(task) -> None:
    import easy_vqa

    splits, _ = task
    facts = draw_facts(FactOptions(max_questions=160))
    passages = {record["id"]: record for record in facts.passages()}
    shapes = image_shapes(*easy_vqa.get_train_questions())
    for split in ("train", "validation", "test"):
        rows = splits[split].remove_columns("image").to_list()
        assert rows and set(COLUMNS) - {"image"} <= set(rows[0])
        # easy-VQA's own shape questions (shape_questions, on by default) are in the train split only.
        shape_rows = [row for row in rows if row["property"] is None]
        assert bool(shape_rows) == (split == "train")
        for row in shape_rows:
            assert row["multiple_choice_answer"] == row["swapped_answer"] == shapes[row["image_id"]]
            assert row["gold_passage_id"] is None and "shape" in row["question"]
        rows = [row for row in rows if row["property"] is not None]
        assert {row["property"] for row in rows} <= set(facts.properties[split])
        for row in rows:
            gold = passages[row["gold_passage_id"]]
            assert gold["text"] == f"The {row['property']} of the {gold['title']} is {row['multiple_choice_answer']}."
            assert row["question"] == f"what is the {row['property']} of the shape?"
            assert row["answers"] == [row["multiple_choice_answer"]] * 10
            name, shape = row["property"], gold["title"]
            assert row["swapped_answer"] == facts.swapped[name, shape] != row["multiple_choice_answer"]
    train_images = set(splits["train"]["image_id"])
    assert train_images and not train_images & set(splits["validation"]["image_id"])
    # Four properties per image, each asked once.
    per_image = [row for row in splits["test"].remove_columns("image").to_list() if row["image_id"] == 0]
    assert len(per_image) == 4 and len({row["property"] for row in per_image}) == 4


def test_the_gold_passage_is_of_the_shape_the_package_says_the_image_has(task) -> None:
    import easy_vqa

    splits, _ = task
    shapes = image_shapes(*easy_vqa.get_test_questions())
    for row in splits["test"].remove_columns("image").to_list():
        assert row["gold_passage_id"] == passage_id(row["property"], shapes[row["image_id"]])


def test_the_corpora_load_for_retrieval_and_bm25_finds_every_gold_passage_in_its_top_three(task) -> None:
    splits, cache = task
    facts = load_corpus(splits.corpus_files["facts"], cache)
    swapped = load_corpus(splits.corpus_files["swapped"], cache)
    assert len(facts) == len(swapped) == 3040 * 3
    assert facts.passages["id"] == swapped.passages["id"]
    assert all(a != b for a, b in zip(facts.passages["text"], swapped.passages["text"], strict=True))
    test = splits["test"].remove_columns("image")
    results = BM25Index(facts, cache).search(test["question"], k=3)
    assert all(
        gold in {hit.passage_id for hit in hits} for gold, hits in zip(test["gold_passage_id"], results, strict=True)
    )


def test_without_shape_questions_every_train_question_is_a_fact(tmp_path: Path) -> None:
    splits = build_easy_vqa_facts(tmp_path, FactOptions(max_questions=40, shape_questions=False))
    assert None not in splits["train"]["gold_passage_id"][:] and len(splits["train"]) + len(splits["validation"]) == 40


def test_recall_skips_questions_without_a_gold_passage_and_gold_mode_refuses_them(task) -> None:
    splits, cache = task
    assert recall_at_k(["a", None, "b"], [["a"], ["x"], ["c"]]) == 50.0
    corpus = load_corpus(splits.corpus_files["facts"], cache)
    with pytest.raises(DataError, match=r"passages=gold: \d+ of the train split's questions have no gold passage"):
        attach_passages(splits, corpus, None, 1, "gold", cache)


def test_options_are_checked_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="questions_per_image: got 30, expected at most each split's number"):
        build_easy_vqa_facts(tmp_path, FactOptions(questions_per_image=30))
    with pytest.raises(DataError, match="test_properties: got 0, expected a positive number"):
        build_easy_vqa_facts(tmp_path, FactOptions(test_properties=0))


def test_the_command_writes_both_corpora(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert facts_main(["--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    files = dict(line.split(": ", 1) for line in printed.splitlines())
    assert set(files) == {"facts", "swapped"}
    records = [json.loads(line) for line in Path(files["facts"]).read_text().splitlines()]
    assert len(records) == 3040 * 3 and set(records[0]) == {"id", "title", "text"}
