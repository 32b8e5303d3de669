"""A tiny VQA v2 download in the official format: JSON files with the official names and COCO-named JPEGs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

TRAIN_IMAGES = (9, 25, 42)  # image ids; image 25 is greyscale, as some COCO images are
VAL_IMAGES = (7, 8)
TEST_IMAGES = (1, 2)


def human_answers(consensus: str, agreeing: int, other: str = "maybe") -> list[dict[str, Any]]:
    texts = [consensus] * agreeing + [other] * (10 - agreeing)
    return [{"answer": text, "answer_confidence": "yes", "answer_id": index + 1} for index, text in enumerate(texts)]


def write_image(path: Path, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (48, 32), color=120 if mode == "L" else (200, 30, 30)).save(path, format="JPEG")


def write_split(root: Path, split: str, image_ids: tuple[int, ...], with_annotations: bool) -> None:
    """Two questions per image; question ids image_id * 10 + k. Agreement on the answer: 10 for k=0, 4 for k=1."""
    questions, annotations = [], []
    for image_id in image_ids:
        for k in range(2):
            question_id = image_id * 10 + k
            questions.append(
                {"image_id": image_id, "question": f"what is in image {image_id}?", "question_id": question_id}
            )
            annotations.append(
                {
                    "question_id": question_id,
                    "image_id": image_id,
                    "question_type": "what is in",
                    "answer_type": "other",
                    "multiple_choice_answer": f"thing {image_id}",
                    "answers": human_answers(f"thing {image_id}", agreeing=10 if k == 0 else 4),
                }
            )
    (root / f"v2_OpenEnded_mscoco_{split}_questions.json").write_text(
        json.dumps(
            {
                "info": {},
                "task_type": "Open-Ended",
                "data_type": "mscoco",
                "data_subtype": split,
                "questions": questions,
            }
        )
    )
    if with_annotations:
        (root / f"v2_mscoco_{split}_annotations.json").write_text(
            json.dumps({"info": {}, "data_type": "mscoco", "data_subtype": split, "annotations": annotations})
        )


def write_vqa_v2(root: Path, train_images: tuple[int, ...] = TRAIN_IMAGES) -> Path:
    """train2014 and val2014 with annotations, test-dev2015 without; images for all of them."""
    root.mkdir(parents=True, exist_ok=True)
    write_split(root, "train2014", train_images, with_annotations=True)
    write_split(root, "val2014", VAL_IMAGES, with_annotations=True)
    write_split(root, "test-dev2015", TEST_IMAGES, with_annotations=False)
    for folder, image_ids in (("train2014", train_images), ("val2014", VAL_IMAGES), ("test2015", TEST_IMAGES)):
        for image_id in image_ids:
            write_image(root / folder / f"COCO_{folder}_{image_id:012d}.jpg", mode="L" if image_id == 25 else "RGB")
    return root
