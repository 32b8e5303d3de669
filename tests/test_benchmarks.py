"""OK-VQA, A-OKVQA, VizWiz, TextVQA and GQA from their official formats: each builds into the shared schema, scores
its fixture's predictions with the values worked out by hand from its official code, refuses bad files in one line,
and trains end to end with `train.py data=<name>` (one multirun over all five)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import benchmark_fixtures as fixtures
from tests.helpers.train_command import FAST, run_train
from vqa.data.aokvqa import AOKVQA, build_aokvqa
from vqa.data.benchmark import Benchmark
from vqa.data.build import BuildReport
from vqa.data.gqa import GQA, build_gqa
from vqa.data.okvqa import OKVQA, build_okvqa
from vqa.data.schema import COLUMNS, DataError
from vqa.data.textvqa import TEXTVQA, build_textvqa
from vqa.data.vizwiz import VIZWIZ, build_vizwiz
from vqa.evaluation.metrics import vizwiz_accuracy
from vqa.evaluation.scoring import score_split


@dataclass(frozen=True)
class Case:
    """A benchmark, its fixture, and where each kind of fault goes in it."""

    benchmark: Benchmark
    write: Callable[[Path], Path]
    build: Callable[..., tuple[Any, BuildReport]]
    scored_split: str
    test_split: str
    predictions: list[str]
    expected: dict[str, float]
    scored_file: str  # the file of the scored split
    image: str  # an image of the scored split
    id_field: str  # the field that identifies a question (or, for VizWiz, its image)
    required_key: str  # a key every entry of the scored file must have

    def entries(self, root: Path) -> Any:
        """The scored file's content."""
        return json.loads((root / self.scored_file).read_text())


CASES = {
    "okvqa": Case(
        OKVQA, fixtures.write_okvqa, build_okvqa, "val2014", "", fixtures.OKVQA_PREDICTIONS, fixtures.OKVQA_EXPECTED,
        "mscoco_val2014_annotations.json", "val2014/COCO_val2014_000000000008.jpg", "question_id", "answers",
    ),
    "aokvqa": Case(
        AOKVQA, fixtures.write_aokvqa, build_aokvqa, "val", "test", fixtures.AOKVQA_PREDICTIONS,
        fixtures.AOKVQA_EXPECTED, "aokvqa_v1p0_val.json", "val2017/000000000008.jpg", "question_id", "direct_answers",
    ),
    "vizwiz": Case(
        VIZWIZ, fixtures.write_vizwiz, build_vizwiz, "val", "test", fixtures.VIZWIZ_PREDICTIONS,
        fixtures.VIZWIZ_EXPECTED, "Annotations/val.json", "val/VizWiz_val_00000002.jpg", "image", "answers",
    ),
    "textvqa": Case(
        TEXTVQA, fixtures.write_textvqa, build_textvqa, "val", "test", fixtures.TEXTVQA_PREDICTIONS,
        fixtures.TEXTVQA_EXPECTED, "TextVQA_0.5.1_val.json", "train_images/00aa0000000000a8.jpg", "question_id",
        "answers",
    ),
    "gqa": Case(
        GQA, fixtures.write_gqa, build_gqa, "testdev", "test", fixtures.GQA_PREDICTIONS, fixtures.GQA_EXPECTED,
        "testdev_balanced_questions.json", "images/8.jpg", "", "imageId",
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All five fixtures under one root (their official file and folder names do not collide)."""
    root = tmp_path_factory.mktemp("benchmarks") / "root"
    for case in CASES.values():
        case.write(root)
    return root


@pytest.fixture
def root(pristine: Path, tmp_path: Path) -> Path:
    """A copy of the fixtures that a test may damage."""
    return Path(shutil.copytree(pristine, tmp_path / "root"))


def questions_of(content: Any) -> list[dict[str, Any]]:
    """The question entries of a benchmark file, whatever holds them."""
    if isinstance(content, list):
        return content
    if "data" in content:
        return content["data"]
    if "annotations" in content:
        return content["annotations"]
    return list(content.values())


@pytest.mark.parametrize("name", CASES)
def test_official_metric_on_the_fixture_is_the_hand_computed_value(name: str, pristine: Path, tmp_path: Path) -> None:
    case = CASES[name]
    split, report = case.build(pristine, case.scored_split, tmp_path / "cache")
    assert list(split.column_names[: len(COLUMNS)]) == list(COLUMNS) and report.has_answers
    scores = score_split(split, case.predictions, case.benchmark)
    for key, value in case.expected.items():
        assert scores[key] == pytest.approx(value, abs=1e-9), key
    official = {key for key in scores if not key.startswith("vqa_accuracy")}
    assert official <= set(case.expected) | {"gqa_accuracy_binary"}, official - set(case.expected)


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case.test_split])
def test_a_test_split_has_questions_and_no_answers(name: str, pristine: Path, tmp_path: Path) -> None:
    case = CASES[name]
    split, report = case.build(pristine, case.test_split, tmp_path / "cache")
    assert len(split) == 2 and not report.has_answers
    assert split["answers"][:] == [[], []] and split["multiple_choice_answer"][:] == [None, None]
    assert all(
        Path(image["path"]).is_file()
        for image in split.cast_column("image", split.features["image"].__class__(decode=False))["image"]
    )
    assert score_split(split, ["a", "b"], case.benchmark) == {}


@pytest.mark.parametrize("name", CASES)
def test_a_missing_file_is_one_line_naming_it(name: str, root: Path, tmp_path: Path) -> None:
    case = CASES[name]
    (root / case.scored_file).unlink()
    with pytest.raises(DataError, match=rf"{(root / case.scored_file).name}: file not found") as raised:
        case.build(root, case.scored_split, tmp_path / "cache")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("name", CASES)
def test_a_missing_key_is_one_line_naming_the_entry_and_the_key(name: str, root: Path, tmp_path: Path) -> None:
    case = CASES[name]
    content = case.entries(root)
    entry = questions_of(content)[1]
    field = case.required_key
    del entry[field]
    (root / case.scored_file).write_text(json.dumps(content))
    where = r"\['02'\]" if name == "gqa" else r"[a-z]*\[1\]"  # GQA's entries are keyed by question id
    with pytest.raises(DataError, match=rf"{Path(case.scored_file).name}: {where}\.{field} is None, expected"):
        case.build(root, case.scored_split, tmp_path / "cache")


@pytest.mark.parametrize("name", CASES)
def test_a_missing_image_is_one_line_naming_the_file(name: str, root: Path, tmp_path: Path) -> None:
    case = CASES[name]
    (root / case.image).unlink()
    with pytest.raises(
        DataError, match=r"image file not found \(1 of \d images bad: 1 missing; set missing_images='skip'"
    ):
        case.build(root, case.scored_split, tmp_path / "cache")
    split, report = case.build(root, case.scored_split, tmp_path / "cache", missing_images="skip")
    assert report.missing_image_files == 1 and report.questions_skipped_for_images == len(case.predictions) - len(split)
    assert 0 < len(split) < len(case.predictions)


@pytest.mark.parametrize("name", CASES)
def test_a_repeated_id_is_one_line_naming_both_places(name: str, root: Path, tmp_path: Path) -> None:
    case = CASES[name]
    path = root / case.scored_file
    if name == "gqa":  # one object keyed by question id: the repeat is a second key "01"
        text = path.read_text()
        path.write_text(text[:-1] + ', "01": ' + json.dumps(fixtures.GQA_TESTDEV["01"]) + "}")
        expected = r"key '01' appears twice in one object, expected each question id once"
    else:
        content = case.entries(root)
        entries = questions_of(content)
        entries[1][case.id_field] = entries[0][case.id_field]
        path.write_text(json.dumps(content))
        expected = rf"\[1\] repeats {case.id_field} .* \(first at .*\[0\]\), expected each {case.id_field} once"
    with pytest.raises(DataError, match=expected):
        case.build(root, case.scored_split, tmp_path / "cache")


def test_an_unknown_option_and_an_unknown_split_are_one_line(pristine: Path, tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"data.max_question: not an option of the data source; accepted: max_questions"
    ):
        build_gqa(pristine, "testdev", tmp_path, max_question=3)
    with pytest.raises(DataError, match=r"split: got 'dev', expected one of train, val, testdev, test, challenge"):
        build_gqa(pristine, "dev", tmp_path)


def test_gqa_keeps_the_official_ids_and_numbers_the_images(pristine: Path, tmp_path: Path) -> None:
    """Question ids are digit strings that may start with 0, image ids strings such as "n7": both kept as given for
    the upload file; the schema's integer ids number them."""
    split, _ = build_gqa(pristine, "testdev", tmp_path)
    assert split["official_question_id"][:] == ["01", "02", "03", "04"] and split["question_id"][:] == [0, 1, 2, 3]
    assert split["image_id"][:] == [1, 1, 0, 0]  # sorted: "8" < "n7"
    assert split["answer_type"][:] == ["binary", "binary", "open", "open"] and split["steps"][0] == 1
    assert GQA.upload(split, fixtures.GQA_PREDICTIONS)[0] == {"questionId": "01", "prediction": "yes"}


def test_okvqa_refuses_annotations_of_other_questions(root: Path, tmp_path: Path) -> None:
    path = root / "mscoco_val2014_annotations.json"
    content = json.loads(path.read_text())
    content["annotations"][0]["question_id"] = 12345
    path.write_text(json.dumps(content))
    with pytest.raises(
        DataError, match=r"1 questions of .* have no annotation and 1 annotations no question \(first: 70\)"
    ):
        build_okvqa(root, "val2014", tmp_path)


def test_textvqa_reads_ocr_tokens_only_when_asked(root: Path, tmp_path: Path) -> None:
    without, _ = build_textvqa(root, "val", tmp_path)
    assert without["ocr_tokens"][:] == [[], [], []]
    with_ocr, _ = build_textvqa(root, "val", tmp_path, ocr_tokens=True)
    assert with_ocr["ocr_tokens"][:] == [["STOP", "coca", "cola"], ["STOP", "coca", "cola"], ["NIKE"]]
    (root / "TextVQA_Rosetta_OCR_v0.2_val.json").unlink()
    with pytest.raises(DataError, match=r"TextVQA_Rosetta_OCR_v0.2_val.json: file not found"):
        build_textvqa(root, "val", tmp_path, ocr_tokens=True)


def test_aokvqa_and_vizwiz_upload_formats(pristine: Path, tmp_path: Path) -> None:
    aokvqa, _ = build_aokvqa(pristine, "val", tmp_path)
    assert AOKVQA.upload(aokvqa, fixtures.AOKVQA_PREDICTIONS) == {
        "22jbM6": {"multiple_choice": "cigarette", "direct_answer": "cigarette"},
        "3kQx9Z": {"multiple_choice": "red", "direct_answer": "Red"},
        "9pLm2W": {"multiple_choice": "surfing", "direct_answer": "surf"},
    }
    vizwiz, _ = build_vizwiz(pristine, "val", tmp_path)
    assert VIZWIZ.upload(vizwiz, fixtures.VIZWIZ_PREDICTIONS) == [
        {"image": "VizWiz_val_00000000.jpg", "answer": "Unanswerable.", "answerable": 0.0},
        {"image": "VizWiz_val_00000001.jpg", "answer": "the red", "answerable": 1.0},
        {"image": "VizWiz_val_00000002.jpg", "answer": "unanswerable", "answerable": 0.0},
    ]


def test_train_py_runs_every_benchmark_end_to_end(pristine: Path, tmp_path: Path, environment: dict[str, str]) -> None:
    """`train.py -m data=okvqa,aokvqa,vizwiz,textvqa,gqa`: each job leaves a run folder whose metrics.json holds its
    benchmark's official metrics of the predictions in its upload file, on the benchmark's default final split."""
    sweep = tmp_path / "sweep"
    # `++`: the primary config that Hydra composes before the sweep has the default data, which has no root.
    arguments = ["-m", "data=okvqa,aokvqa,vizwiz,textvqa,gqa", f"++data.root={pristine}", "++data.minival_images=1"]
    result = run_train([*arguments, *FAST, f"hydra.sweep.dir={sweep}"], environment)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = set()
    for job in sorted(path for path in sweep.iterdir() if (path / "metrics.json").is_file()):
        metrics = json.loads((job / "metrics.json").read_text())
        name = metrics["benchmark"]["name"]
        case = CASES[name]
        seen.add(name)
        split, _ = case.build(pristine, case.scored_split, tmp_path / "cache")
        answers = [entry["answer"] for entry in json.loads((job / "predictions.json").read_text())]
        assert metrics["num_questions"] == len(split) == len(answers)
        upload_file = metrics["benchmark"]["upload_file"]
        if upload_file is not None:
            assert case.benchmark.upload(split, answers) == json.loads((job / upload_file).read_text())
        expected = score_split(split, answers, case.benchmark)
        assert metrics["benchmark"]["scores"] == {
            key: value for key, value in expected.items() if not key.startswith("vqa_acc")
        }
        assert metrics["vqa_accuracy"] == expected["vqa_accuracy"] and metrics["validation"]["num_questions"] >= 1
    assert seen == set(CASES)


def test_upload_files_of_splits_without_answers(pristine: Path, tmp_path: Path) -> None:
    """A test split's upload file names each question by its official id (A-OKVQA's choice still mapped)."""
    gqa, _ = build_gqa(pristine, "test", tmp_path)
    assert GQA.upload(gqa, ["x", "y"]) == [
        {"questionId": "91", "prediction": "x"},
        {"questionId": "92", "prediction": "y"},
    ]
    aokvqa, _ = build_aokvqa(pristine, "test", tmp_path)
    assert AOKVQA.upload(aokvqa, ["b", "zzz"]) == {
        "x1": {"multiple_choice": "b", "direct_answer": "b"},
        "x2": {"multiple_choice": "a", "direct_answer": "zzz"},
    }
    vizwiz, _ = build_vizwiz(pristine, "test", tmp_path)
    assert [entry["image"] for entry in VIZWIZ.upload(vizwiz, ["x", "y"])] == [
        "VizWiz_test_00000000.jpg",
        "VizWiz_test_00000001.jpg",
    ]


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        (
            "gqa",
            lambda entries: entries["01"].update(entailed=["\ud800"]),
            r"\.entailed\[0\] .* expected text encodable",
        ),
        ("gqa", lambda entries: entries["01"].update(imageId="../n7"), r"\.imageId is '\.\./n7', expected a file name"),
        ("vizwiz", lambda entries: entries[0].update(image="VizWiz\u0000.jpg"), r"\.image is .*, expected a file name"),
        ("vizwiz", lambda entries: entries[0].update(answers=["yes"] * 10), r"answers holds a non-object"),
        ("textvqa", lambda entries: entries["data"][0].update(question_id=2**64), r"expected an integer that fits in"),
        (
            "aokvqa",
            lambda entries: entries[0].update(question_id="\ud800"),
            r"\.question_id .* expected text encodable",
        ),
    ],
)
def test_malformed_fields_beyond_the_question_are_one_line(
    name: str, change: Callable[[Any], None], message: str, root: Path, tmp_path: Path
) -> None:
    """Ids, file names and every stored text are checked too: a value Arrow cannot store, a file name that leaves the
    image folder, or an id past int64 is one line, not a traceback."""
    case = CASES[name]
    content = case.entries(root)
    change(content)
    (root / case.scored_file).write_text(json.dumps(content))
    with pytest.raises(DataError, match=message) as raised:
        case.build(root, case.scored_split, tmp_path / "cache")
    assert "\n" not in str(raised.value)


def test_vizwiz_uses_its_own_contraction_table() -> None:
    """The VizWiz API restores "dont" as "don\u2019t" (a typographic apostrophe); VQA v2's code as "don't"."""
    assert vizwiz_accuracy("dont", ["don\u2019t"] * 10) == 1.0 and vizwiz_accuracy("dont", ["don't"] * 10) == 0.0


def test_textvqa_ocr_records_of_one_image_must_agree(root: Path, tmp_path: Path) -> None:
    path = root / "TextVQA_Rosetta_OCR_v0.2_val.json"
    content = json.loads(path.read_text())
    content["data"].append(dict(content["data"][0]))  # the same tokens again: accepted
    path.write_text(json.dumps(content))
    assert build_textvqa(root, "val", tmp_path, ocr_tokens=True)[0]["ocr_tokens"][0] == ["STOP", "coca", "cola"]
    content["data"].append({**content["data"][0], "ocr_tokens": ["OTHER"]})
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=r"data\[3\] gives image '00aa0000000000a7' other tokens than data\[0\]"):
        build_textvqa(root, "val", tmp_path / "second", ocr_tokens=True)
