"""Tiny releases of OK-VQA, A-OKVQA, VizWiz, TextVQA and GQA in their official formats: the official file names and
keys, and small JPEGs where each benchmark keeps its images.

Every `write_<benchmark>(root)` writes a training split (three images, two questions each: question k=0 with one
answer all humans give, k=1 with a split vote), a scored split and a split without answers, and returns `root`.
`SCORED` holds, per benchmark, the questions of the scored split with predictions and the official metric values
computed by hand from the official code's rules (see tests/test_benchmarks.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers.vqa_v2_fixture import write_image

TRAIN_IMAGES = (9, 25, 42)
SCORED_IMAGES = (7, 8)
TEST_IMAGES = (1, 2)


def write_json(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def ten(consensus: str, agreeing: int, other: str = "maybe") -> list[str]:
    return [consensus] * agreeing + [other] * (10 - agreeing)


# GQA ------------------------------------------------------------------------------------------------------------------


def gqa_question(image: str, question: str, answer: str, structural: str, semantic: str, **rest: Any) -> dict:
    return {
        "imageId": image,
        "question": question,
        "answer": answer,
        "fullAnswer": f"The answer is {answer}.",
        "isBalanced": True,
        "types": {"structural": structural, "semantic": semantic, "detailed": f"{semantic}Detailed"},
        "entailed": rest.get("entailed", []),
        "equivalent": [],
        "groups": {"global": rest.get("group"), "local": "10q-local"},
        "semantic": rest.get(
            "program",
            [
                {"operation": "select", "argument": "thing (1)", "dependencies": []},
                {"operation": "query", "argument": "name", "dependencies": [0]},
            ],
        ),
        "semanticStr": "select: thing (1)->query: name [0]",
        "annotations": {"answer": {}, "question": {}, "fullAnswer": {}},
    }


# The testdev split: four questions over two images, with predictions and eval.py's values worked out by hand.
GQA_TESTDEV = {
    "01": gqa_question("n7", "is it yellow?", "yes", "verify", "attr", group="g1", entailed=["02"]),
    "02": gqa_question("n7", "is it blue?", "no", "verify", "attr", group="g1", entailed=["01"]),
    "03": gqa_question("8", "what color is it?", "red", "query", "attr", group="color", entailed=["01"]),
    "04": gqa_question("8", "what animal is it?", "cat", "query", "obj", entailed=["03", "99"]),
}
GQA_PREDICTIONS = ["yes", "yes", "red", "Cat"]  # right, wrong, right, wrong (eval.py compares case-sensitively)
GQA_EXPECTED = {
    "gqa_accuracy": 50.0,
    "gqa_accuracy_binary": 50.0,
    "gqa_accuracy_open": 50.0,
    "gqa_accuracy_structural_query": 50.0,
    "gqa_accuracy_structural_verify": 50.0,
    "gqa_accuracy_semantic_attr": 200 / 3,
    "gqa_accuracy_semantic_obj": 0.0,
    # "01" is right and entails "02" (wrong): 0; "03" is right and entails "01" (right): 1; "99" is not in the split.
    "gqa_consistency": 50.0,
    # g1: gold yes 1, no 1; predicted yes 2: (2-1)^2/1 + (0-1)^2/1 = 2 over 2 questions; color: 0 over 1 question;
    # "04" has no global group. (2 * 2 + 0 * 1) / 3 / 100.
    "gqa_distribution": 4 / 3 / 100,
}


def write_gqa(root: Path) -> Path:
    train = {}
    for image in TRAIN_IMAGES:
        train[f"0{image}0"] = gqa_question(str(image), f"what is in image {image}?", f"thing {image}", "query", "obj")
        train[f"0{image}1"] = gqa_question(str(image), f"is image {image} red?", "yes", "verify", "attr", group="g")
    write_json(root / "train_balanced_questions.json", train)
    write_json(root / "testdev_balanced_questions.json", GQA_TESTDEV)
    test = {
        f"9{image}": {"imageId": f"t{image}", "question": "what is it?", "isBalanced": True} for image in TEST_IMAGES
    }
    write_json(root / "test_balanced_questions.json", test)
    for name in [*(str(image) for image in TRAIN_IMAGES), "n7", "8", *(f"t{image}" for image in TEST_IMAGES)]:
        write_image(root / "images" / f"{name}.jpg")
    return root


# OK-VQA --------------------------------------------------------------------------------------------------------------


def okvqa_answers(texts: list[str]) -> list[dict[str, Any]]:
    return [
        {"answer_id": index + 1, "raw_answer": f"{text}ing", "answer_confidence": "yes", "answer": text}
        for index, text in enumerate(texts)
    ]


# val2014: (question_id, image_id, category code, ten answers, prediction).
OKVQA_VAL = [
    (70, 7, "one", ten("race", 6, "racing"), "race"),  # answers differ: normalised; 6 match -> 1
    (71, 7, "eight", ten("dog", 2, "cat"), "Dog."),  # normalised to "dog": 2 match -> (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    (80, 8, "eight", ten("tree", 10), "Tree"),  # all ten identical: not normalised, case differs -> 0
    (81, 8, "other", ten("navy", 7, "blue"), "navy"),  # 7 match -> 1
]
OKVQA_PREDICTIONS = [row[-1] for row in OKVQA_VAL]
OKVQA_EXPECTED = {
    "vqa_accuracy": 65.0,
    "okvqa_category_other": 100.0,
    "okvqa_category_plants_and_animals": 30.0,
    "okvqa_category_vehicles_and_transportation": 100.0,
}


def write_okvqa_split(root: Path, split: str, rows: list[tuple[int, int, str, list[str]]]) -> None:
    questions = [
        {"image_id": image, "question": f"what about image {image}?", "question_id": qid} for qid, image, *_ in rows
    ]
    info = {"info": {}, "license": {}, "data_type": "mscoco", "data_subtype": split}
    write_json(
        root / f"OpenEnded_mscoco_{split}_questions.json", {**info, "task_type": "Open-Ended", "questions": questions}
    )
    annotations = [
        {
            "question_id": qid,
            "image_id": image,
            "question_type": category,
            "answer_type": "other",
            "confidence": 3,
            "answers": okvqa_answers(answers),
        }
        for qid, image, category, answers in rows
    ]
    write_json(root / f"mscoco_{split}_annotations.json", {**info, "annotations": annotations})


def write_okvqa(root: Path) -> Path:
    train = [
        (image * 10 + k, image, "one", ten(f"thing {image}", 10 if k == 0 else 4))
        for image in TRAIN_IMAGES
        for k in range(2)
    ]
    write_okvqa_split(root, "train2014", train)
    write_okvqa_split(root, "val2014", [row[:4] for row in OKVQA_VAL])
    for folder, images in (("train2014", TRAIN_IMAGES), ("val2014", SCORED_IMAGES)):
        for image in images:
            write_image(root / folder / f"COCO_{folder}_{image:012d}.jpg")
    return root


# A-OKVQA -------------------------------------------------------------------------------------------------------------


def aokvqa_question(qid: str, image: int, answers: list[str], choices: list[str], correct: int, **rest: Any) -> dict:
    return {
        "split": rest.get("split", "val"),
        "image_id": image,
        "question_id": qid,
        "question": f"what is happening in image {image}?",
        "choices": choices,
        "correct_choice_idx": correct,
        "direct_answers": answers,
        "difficult_direct_answer": rest.get("difficult", False),
        "rationales": ["one reason.", "another reason.", "a third reason."],
    }


AOKVQA_VAL = [
    aokvqa_question("22jbM6", 7, ten("cigarette", 2, "smoke"), ["toothpick", "food", "popsicle stick", "cigarette"], 3),
    aokvqa_question("3kQx9Z", 7, ten("red", 10), ["red", "blue", "green", "yellow"], 0),
    aokvqa_question(
        "9pLm2W", 8, ten("skiing", 5, "ski"), ["skiing", "surfing", "running", "hiking"], 0, difficult=True
    ),
]
# "cigarette": 2 direct matches -> 2/3, and the correct choice. "Red": no exact direct match -> 0 (no processing);
# nearest choice "red", correct. "surf": difficult, so not in the direct-answer score; nearest choice "surfing"
# (difflib ratio 0.73 against 0.2 for "skiing"), wrong.
AOKVQA_PREDICTIONS = ["cigarette", "Red", "surf"]
AOKVQA_EXPECTED = {"aokvqa_direct_answer": 100 / 3, "aokvqa_multiple_choice": 200 / 3}


def write_aokvqa(root: Path) -> Path:
    train = [
        aokvqa_question(
            f"t{image}{k}",
            image,
            ten(f"thing {image}", 10 if k == 0 else 4),
            ["a", "b", "c", f"thing {image}"],
            3,
            split="train",
        )
        for image in TRAIN_IMAGES
        for k in range(2)
    ]
    write_json(root / "aokvqa_v1p0_train.json", train)
    write_json(root / "aokvqa_v1p0_val.json", AOKVQA_VAL)
    test = [
        {"split": "test", "image_id": image, "question_id": f"x{image}", "question": "what is it?",
         "choices": ["a", "b", "c", "d"], "difficult_direct_answer": False}
        for image in TEST_IMAGES
    ]  # fmt: skip
    write_json(root / "aokvqa_v1p0_test.json", test)
    for folder, images in (("train2017", TRAIN_IMAGES), ("val2017", SCORED_IMAGES), ("test2017", TEST_IMAGES)):
        for image in images:
            write_image(root / folder / f"{image:012d}.jpg")
    return root


# VizWiz --------------------------------------------------------------------------------------------------------------


def vizwiz_question(split: str, index: int, answers: list[str], answer_type: str, answerable: int) -> dict:
    return {
        "image": f"VizWiz_{split}_{index:08d}.jpg",
        "question": "What is this?",
        "answers": [{"answer": text, "answer_confidence": "yes"} for text in answers],
        "answer_type": answer_type,
        "answerable": answerable,
    }


VIZWIZ_VAL = [
    vizwiz_question("val", 0, ten("unanswerable", 10), "unanswerable", 0),
    vizwiz_question("val", 1, ten("red", 4, "dark red"), "other", 1),
    vizwiz_question("val", 2, ten("yes", 3, "no"), "yes/no", 1),
]
# "Unanswerable." is normalised (always, unlike VQA v2's code) to "unanswerable": 10 match -> 1. "the red" -> "red":
# 4 match -> 1. "unanswerable" against yes/no -> 0. Unanswerable is the positive class: labels 1, 0, 0; predicted 1, 0,
# 1. F1 = 2 * 1 / (1 + 2); average precision: at score 1, recall 1 with precision 1/2. The API rounds to 2 decimals.
VIZWIZ_PREDICTIONS = ["Unanswerable.", "the red", "unanswerable"]
VIZWIZ_EXPECTED = {
    "vizwiz_accuracy": 66.67,
    "vizwiz_accuracy_other": 100.0,
    "vizwiz_accuracy_unanswerable": 100.0,
    "vizwiz_accuracy_yes_no": 0.0,
    "vizwiz_unanswerable_average_precision": 50.0,
    "vizwiz_unanswerable_f1": 66.67,
}


def write_vizwiz(root: Path) -> Path:
    train = [
        vizwiz_question("train", index, ten(f"thing {index}", 10 if index % 2 else 4), "other", 1) for index in range(6)
    ]
    write_json(root / "Annotations" / "train.json", train)
    write_json(root / "Annotations" / "val.json", VIZWIZ_VAL)
    write_json(
        root / "Annotations" / "test.json",
        [{"image": f"VizWiz_test_{i:08d}.jpg", "question": "What is it?"} for i in range(2)],
    )
    for split, count in (("train", 6), ("val", 3), ("test", 2)):
        for index in range(count):
            write_image(root / split / f"VizWiz_{split}_{index:08d}.jpg")
    return root


# TextVQA -------------------------------------------------------------------------------------------------------------


def textvqa_question(qid: int, image: str, answers: list[str] | None, split: str = "val") -> dict:
    entry = {
        "question": f"what does sign {image} say?",
        "image_id": image,
        "image_classes": ["Sign"],
        "flickr_original_url": "https://example.org/o.jpg",
        "flickr_300k_url": "https://example.org/z.jpg",
        "image_width": 48,
        "image_height": 32,
        "question_tokens": ["what", "does", "sign", "say"],
        "question_id": qid,
        "set_name": split,
    }
    return entry | ({"answers": answers} if answers is not None else {})


TEXTVQA_VAL = [
    textvqa_question(70, "00aa0000000000a7", [*["coca-cola"] * 3, *["Coca Cola"] * 3, *["coke"] * 4]),
    textvqa_question(71, "00aa0000000000a7", ten("stop", 10)),
    textvqa_question(80, "00aa0000000000a8", ten("nike", 2, "adidas")),
]
# EvalAI processing, always: "Coca-Cola" -> "coca cola" as six answers -> 1; "STOP" -> "stop" -> 1 (VQA v2's code
# leaves identical answers unprocessed: 0 there); "Nike's" -> "nike 's" -> 0.
TEXTVQA_PREDICTIONS = ["Coca-Cola", "STOP", "Nike's"]
TEXTVQA_EXPECTED = {"textvqa_accuracy": 200 / 3, "vqa_accuracy": 33.33}
TEXTVQA_OCR = {"00aa0000000000a7": ["STOP", "coca", "cola"], "00aa0000000000a8": ["NIKE"]}


def write_textvqa(root: Path) -> Path:
    train_images = [f"00bb00000000000{image}" for image in range(3)]
    train = [
        textvqa_question(image * 10 + k, name, ten(f"word {image}", 10 if k == 0 else 4), "train")
        for image, name in enumerate(train_images)
        for k in range(2)
    ]
    test = [textvqa_question(90 + index, f"00cc00000000000{index}", None, "test") for index in range(2)]
    for split, entries in (("train", train), ("val", TEXTVQA_VAL), ("test", test)):
        header = {"dataset_type": split, "dataset_name": "textvqa", "dataset_version": "0.5.1"}
        write_json(root / f"TextVQA_0.5.1_{split}.json", {**header, "data": entries})
        images = sorted({entry["image_id"] for entry in entries})
        ocr = [{"image_id": image, "ocr_tokens": TEXTVQA_OCR.get(image, ["SIGN"]), "ocr_info": []} for image in images]
        write_json(root / f"TextVQA_Rosetta_OCR_v0.2_{split}.json", {**header, "data": ocr})
        for image in images:
            write_image(root / ("test_images" if split == "test" else "train_images") / f"{image}.jpg")
    return root
