"""easy-VQA facts: a knowledge task on easy-VQA's images that only a model reading a fact corpus can answer.

A made-up corpus gives each of the three shapes a value for each of many made-up properties, one passage per fact:
`The zorvek of the circle is amber.` A question asks a property of the shape in an image: `what is the zorvek of the
shape?`; its answer is the value the corpus gives the image's shape. The properties are split three ways: the train
questions ask only train properties, validation and test questions their own. No fact that a test question needs is
seen in training, so memorising facts cannot answer test questions: the model must read them. Retrieval by the
question finds the asked property's passages (one per shape); the model must read the one whose shape is in the image.

Values are ordinary words from one shared list (`VALUES`), each the answer to some training question, so the
answer vocabulary is learned; the three shapes of a property have three different values. The **swapped** corpus
gives every fact another value (per property, each shape's value differs from the original one): a model that
reads its passages follows the swap without retraining.

The image's shape is read off easy-VQA's own questions about it (a shape answer, a colour question naming the
shape, a yes/no question about a shape). Images none of whose questions decides the shape are left out, counted in
the build report as `images_without_known_shape`.

Splits: `train` and `validation` (an image-disjoint part of the package's train images, as for easy-VQA) and
`test` (the package's test images). Rows carry the shared schema plus `property`, `gold_passage_id` (the id of the
passage holding the answer) and `swapped_answer` (the answer the swapped corpus gives).

`shape_questions` adds to the train split easy-VQA's own questions whose answer is the image's shape (`what shape is
in the image?`; no property, no gold passage). The fact questions teach the image's shape only through which passage
held the answer, a weak signal a random-init image encoder is slow to pick up (docs/retrieval.md); these teach it
directly, as a pretrained image encoder would know it. Validation and test keep fact questions only.
`python -m vqa.data.easy_vqa_facts --out DIR` writes the two corpora.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import easy_vqa
from datasets import Value

from vqa.data.cache import cached_build, fingerprint, publish_folder
from vqa.data.images import check_images
from vqa.data.schema import (
    ANSWERS_PER_QUESTION,
    DataError,
    TrainingSplits,
    empty_columns,
    require_positive_or_none,
    stored_dataset,
    sum_dropped,
    with_image_column,
)
from vqa.data.splits import held_out_images, validate_holdout
from vqa.errors import ArgumentParser, exit_on_user_error

SCHEMA_VERSION = 1  # bump when the questions, the corpus or the columns change: caches are then rebuilt
SHAPES = ("circle", "rectangle", "triangle")
VALUES = (
    "amber", "anchor", "apple", "arrow", "bell", "candle", "cedar", "copper", "drum", "ember",
    "feather", "harbor", "honey", "lantern", "maple", "marble", "meadow", "pepper", "river", "thunder",
)  # fmt: skip
SPLITS = ("train", "validation", "test")
EXTRA_FEATURES = {
    "property": Value("string"),
    "gold_passage_id": Value("string"),
    "swapped_answer": Value("string"),  # what the swapped corpus answers (vqa.inspection.passages --corpus swapped)
}
CORPUS_FILES = {"facts": "facts.jsonl", "swapped": "facts_swapped.jsonl"}


@dataclass(frozen=True)
class FactOptions:
    """How the task is drawn; every choice is seeded, so the same options give the same questions and corpus."""

    train_properties: int = 3000
    validation_properties: int = 20
    test_properties: int = 20
    questions_per_image: int = 4  # each image is asked this many of its split's properties
    validation_images: float | int = 0.1  # of the package's train images, as for easy-VQA
    seed: int = 0  # the facts, the questions and the validation images
    max_questions: int | None = None  # per package split, about the first N questions (whole images; quick runs)
    shape_questions: bool = True  # add the train images' own easy-VQA shape questions to the train split

    def validate(self) -> None:
        """Raises DataError for a bad option, before anything is read."""
        for name in ("train_properties", "validation_properties", "test_properties", "questions_per_image"):
            require_positive_or_none(name, getattr(self, name))
        require_positive_or_none("max_questions", self.max_questions)
        validate_holdout("validation_images", self.validation_images)
        if self.questions_per_image > min(self.train_properties, self.validation_properties, self.test_properties):
            raise DataError(
                f"questions_per_image: got {self.questions_per_image}, expected at most each split's number of "
                "properties (each question of an image asks another property)"
            )


@dataclass(frozen=True)
class Facts:
    """The drawn facts: each split's properties and each (property, shape)'s value, in both corpora."""

    properties: dict[str, list[str]]  # split -> its property names
    values: dict[tuple[str, str], str]  # (property, shape) -> value
    swapped: dict[tuple[str, str], str]  # the same keys, every value another one

    def passages(self, swapped: bool = False) -> list[dict[str, str]]:
        """The corpus as records of `id`, `title`, `text`, in property then shape order."""
        values = self.swapped if swapped else self.values
        return [
            {
                "id": passage_id(name, shape),
                "title": shape,
                "text": f"The {name} of the {shape} is {values[name, shape]}.",
            }
            for split in SPLITS
            for name in self.properties[split]
            for shape in SHAPES
        ]


def passage_id(property_name: str, shape: str) -> str:
    return f"{property_name}-{shape}"


def question_text(property_name: str) -> str:
    return f"what is the {property_name} of the shape?"


def draw_facts(options: FactOptions) -> Facts:
    """Made-up property names (two syllables and a consonant: `zorvek`) and their values, seeded."""
    generator = random.Random(options.seed)
    syllables = [consonant + vowel for consonant in "bdfgklmnprstvz" for vowel in "aeiou"]
    counts = {"train": options.train_properties, "validation": options.validation_properties}
    counts["test"] = options.test_properties
    names = generator.sample(
        [first + second + last for first, second, last in itertools.product(syllables, syllables, "knrst")],
        sum(counts.values()),
    )
    properties, start = {}, 0
    for split in SPLITS:
        properties[split] = sorted(names[start : start + counts[split]])
        start += counts[split]
    values, swapped = {}, {}
    deck = dealt_values(generator)
    for name in (name for split in SPLITS for name in properties[split]):
        chosen: list[str] = []
        while len(chosen) < len(SHAPES):
            value = next(deck)
            if value not in chosen:  # a repeat across two shuffled passes is skipped
                chosen.append(value)
        values.update({(name, shape): value for shape, value in zip(SHAPES, chosen, strict=True)})
        # Another value for every shape (three distinct ones, none the shape's original value).
        while True:
            other = generator.sample(VALUES, len(SHAPES))
            if all(value != original for value, original in zip(other, chosen, strict=True)):
                break
        swapped.update({(name, shape): value for shape, value in zip(SHAPES, other, strict=True)})
    return Facts(properties, values, swapped)


def dealt_values(generator: random.Random) -> Iterator[str]:
    """VALUES in shuffled passes, reshuffled each pass: the train facts, drawn first, use every value (each is then a
    training answer) and no pattern repeats from one property to another."""
    while True:
        yield from generator.sample(VALUES, len(VALUES))


def image_shapes(questions: Sequence[str], answers: Sequence[str], image_ids: Sequence[int]) -> dict[int, str]:
    """Each image's shape, as easy-VQA's questions about it tell it; images they do not decide are left out.

    A shape answer names it; a colour question naming a shape (`what color is the triangle?`) names it; a yes/no
    question about a shape says it is (`is there a circle?` yes, `is there not a circle?` no) or is not that shape.
    """
    present, absent = defaultdict(set), defaultdict(set)
    for question, answer, image_id in zip(questions, answers, image_ids, strict=True):
        words = question.rstrip("?").split()
        named = [shape for shape in SHAPES if shape in words]
        if answer in SHAPES:
            present[image_id].add(answer)
        elif answer in ("yes", "no"):
            negated = "not" in words or "no" in words
            for shape in named:
                (present if (answer == "yes") != negated else absent)[image_id].add(shape)
        else:
            present[image_id].update(named)
    shapes = {}
    for image_id in set(image_ids):
        candidates = present[image_id] or (set(SHAPES) - absent[image_id])
        if len(candidates) == 1 and not candidates & absent[image_id]:
            shapes[image_id] = next(iter(candidates))
    return shapes


@dataclass(frozen=True)
class PackageImages:
    """A package split's images: each one's shape (where its questions decide it), file, and shape questions."""

    shapes: dict[int, str]
    paths: dict[int, str]
    shape_questions: dict[int, list[str]]  # image id -> its questions answered by its shape, in package order


def _package_images(split: str) -> PackageImages:
    if split == "train":
        questions, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    else:
        questions, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    shape_questions = defaultdict(list)
    for question, answer, image_id in zip(questions, answers, image_ids, strict=True):
        if answer in SHAPES:
            shape_questions[image_id].append(question)
    return PackageImages(image_shapes(questions, answers, image_ids), paths, dict(shape_questions))


def _build_package_split(package_split: str, options: FactOptions, facts: Facts, cache_dir: Path) -> tuple[Any, dict]:
    """The questions of one package split: `train` gives the train and validation splits (a `split` column tells
    them apart, dropped after the build), `test` the test split."""
    package = _package_images(package_split)
    shapes, paths = package.shapes, package.paths
    total_images = len(paths)
    image_ids = sorted(shapes)
    if options.max_questions is not None:  # whole images, at least N questions
        image_ids = image_ids[: -(-options.max_questions // options.questions_per_image)]
    checked = check_images({image_id: Path(paths[image_id]).resolve() for image_id in image_ids}, "error",
                           record_dir=cache_dir)  # fmt: skip
    held = held_out_images(image_ids, options.validation_images, options.seed) if package_split == "train" else set()
    generator = random.Random(f"{options.seed}-{package_split}")
    columns = empty_columns() | {name: [] for name in EXTRA_FEATURES} | {"split": []}

    def add(image_id: int, split: str, question: str, answer: str, facts_row: dict[str, str | None]) -> None:
        columns["question_id"].append(len(columns["question_id"]))
        columns["image_id"].append(image_id)
        columns["question"].append(question)
        columns["answers"].append([answer] * ANSWERS_PER_QUESTION)
        columns["multiple_choice_answer"].append(answer)
        columns["answer_type"].append("other")
        columns["question_type"].append("what is the" if facts_row["property"] else "what shape")
        columns["image"].append(str(Path(paths[image_id]).resolve()))
        for name, value in facts_row.items():
            columns[name].append(value)
        columns["split"].append(split)

    shape_question_count = 0
    for image_id in image_ids:
        split = "test" if package_split == "test" else ("validation" if image_id in held else "train")
        shape = shapes[image_id]
        for name in generator.sample(facts.properties[split], options.questions_per_image):
            answer = facts.values[name, shape]
            add(image_id, split, question_text(name), answer, {"property": name,
                "gold_passage_id": passage_id(name, shape), "swapped_answer": facts.swapped[name, shape]})  # fmt: skip
        if options.shape_questions and split == "train":
            for question in package.shape_questions.get(image_id, []):
                # No fact answers it: no property, no gold passage; every corpus gives the same answer.
                add(image_id, split, question, shape,
                    {"property": None, "gold_passage_id": None, "swapped_answer": shape})  # fmt: skip
                shape_question_count += 1
    report = {
        "package_split": package_split,
        "questions": len(columns["question_id"]),
        "shape_questions": shape_question_count,
        "images": len(image_ids),
        "images_without_known_shape": total_images - len(shapes),
        "images_decoded": checked.decoded,
    }
    return stored_dataset(columns, EXTRA_FEATURES | {"split": Value("string")}), report


def build_easy_vqa_facts(cache_dir: str | Path, options: FactOptions | None = None) -> TrainingSplits:
    """Build (or load from `cache_dir`) the task's `train`, `validation` and `test` splits, and write its two corpora
    (`corpus_files`). The splits' `dropped` is empty: images without a known shape are counted in the build report
    (`images_without_known_shape`) and logged, as they are not questions that were dropped."""
    options = options or FactOptions()
    options.validate()
    cache_dir = Path(cache_dir)
    facts = draw_facts(options)
    parts, reports = {}, []
    for package_split in ("train", "test"):
        key = {"builder": "easy_vqa_facts", "schema_version": SCHEMA_VERSION, "package_split": package_split,
               "package": str(Path(easy_vqa.__file__).parent.resolve()), **asdict(options)}  # fmt: skip
        dataset, report, _ = cached_build(
            cache_dir, f"easy_vqa_facts-{package_split}", key,
            lambda split=package_split: _build_package_split(split, options, facts, cache_dir),
        )  # fmt: skip
        parts[package_split] = with_image_column(dataset)
        reports.append(report)
    train_part = parts["train"]
    split_column = train_part["split"][:]
    rows = {split: [row for row, name in enumerate(split_column) if name == split] for split in ("train", "validation")}
    return TrainingSplits(
        train=train_part.select(rows["train"]).remove_columns("split"),
        validation=train_part.select(rows["validation"]).remove_columns("split"),
        test=parts["test"].remove_columns("split"),
        dropped=sum_dropped(reports),
        corpus_files=write_corpora(cache_dir, options, facts),
    )


def write_corpora(folder: Path, options: FactOptions, facts: Facts) -> dict[str, Path]:
    """The corpus and its swap as JSONL files in `folder/easy_vqa_facts_corpus-<fingerprint>/` (written once)."""
    final = folder / f"easy_vqa_facts_corpus-{fingerprint({'version': SCHEMA_VERSION, **asdict(options)})}"
    files = {name: final / file_name for name, file_name in CORPUS_FILES.items()}
    if not final.is_dir():

        def write(staging: Path) -> None:
            staging.mkdir(parents=True, exist_ok=True)
            for name, file_name in CORPUS_FILES.items():
                records = facts.passages(swapped=name == "swapped")
                (staging / file_name).write_text("".join(json.dumps(record) + "\n" for record in records))

        publish_folder(final, write)
    return files


def training_splits(
    cache_dir: str | Path,
    train_properties: int = 3000,
    validation_properties: int = 20,
    test_properties: int = 20,
    questions_per_image: int = 4,
    validation_images: float | int = 0.1,
    seed: int = 0,
    max_questions: int | None = None,
    shape_questions: bool = True,
) -> TrainingSplits:
    """`build_easy_vqa_facts` with flat arguments, for the Hydra `data` group."""
    options = FactOptions(
        train_properties, validation_properties, test_properties, questions_per_image, validation_images, seed,
        max_questions, shape_questions,
    )  # fmt: skip
    return build_easy_vqa_facts(cache_dir, options)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m vqa.data.easy_vqa_facts",
        description="Write the easy-VQA facts corpus (facts.jsonl) and its swap (facts_swapped.jsonl) for the default "
        "options and a seed, and print where they are.",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write the corpora into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with exit_on_user_error():
        options = FactOptions(seed=args.seed)
        options.validate()
        files = write_corpora(args.out, options, draw_facts(options))
    for name, path in files.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
