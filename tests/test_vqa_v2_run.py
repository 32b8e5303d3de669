"""`python train.py data=vqa_v2 ...` as a researcher runs it, on a VQA v2 tree in the official format: the run folder,
the official metric on its predictions, and a test-dev run that writes the file to upload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.train_command import FAST, run_train
from tests.helpers.vqa_v2_fixture import TEST_IMAGES, write_vqa_v2
from vqa.evaluation.score_files import evaluate_files

# The fixture's train2014 has three images: one becomes minival (the validation split), two are trained on.
VQA_V2 = ["data=vqa_v2", "data.minival_images=1", *FAST]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_vqa_v2(tmp_path_factory.mktemp("vqa_v2") / "root")


def test_vqa_v2_run_scores_its_final_split_with_the_official_metric(
    root: Path, tmp_path: Path, environment: dict[str, str]
) -> None:
    """Trained until it answers its training questions, then scored on train2014 as the final split (the fixture's
    val2014 answers never occur in train2014, so only this split gives a score other than 0): metrics.json is what
    the official tool computes from predictions.json and the official files, and the validation split (minival)
    is reported beside it."""
    run_dir = tmp_path / "run"
    overrides = ["data.final_split=train2014", "trainer.args.max_steps=16", "trainer.args.learning_rate=5e-3"]
    arguments = [*VQA_V2, f"data.root={root}", *overrides, "trainer.args.eval_strategy=no", "report=true"]
    result = run_train([*arguments, f"hydra.run.dir={run_dir}"], environment)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    official = evaluate_files(
        root / "v2_OpenEnded_mscoco_train2014_questions.json",
        root / "v2_mscoco_train2014_annotations.json",
        run_dir / "predictions.json",
    )
    assert 0 < metrics["vqa_accuracy"] == official["overall"]
    assert metrics["per_answer_type"] == official["perAnswerType"]
    assert metrics["num_questions"] == 6 and len(json.loads((run_dir / "predictions.json").read_text())) == 6
    assert metrics["validation"]["split"] == "validation" and metrics["validation"]["num_questions"] == 2
    assert metrics["validation"]["vqa_accuracy"] is not None
    assert (run_dir / "report.html").is_file() and (run_dir / "checkpoint" / "config.json").is_file()
    assert "validation        " in result.stdout and "VQA accuracy      " in result.stdout


def test_a_test_dev_run_writes_the_upload_file_and_no_accuracy(
    root: Path, tmp_path: Path, environment: dict[str, str]
) -> None:
    """test-dev2015 has no public answers: predictions.json holds one answer for each of its questions, in the
    upload format, and no accuracy is claimed for it."""
    run_dir = tmp_path / "test_dev"
    arguments = [*VQA_V2, f"data.root={root}", "data.final_split=test-dev2015", f"hydra.run.dir={run_dir}"]
    result = run_train(arguments, environment)
    assert result.returncode == 0, result.stderr[-3000:]
    questions = json.loads((root / "v2_OpenEnded_mscoco_test-dev2015_questions.json").read_text())["questions"]
    upload = json.loads((run_dir / "predictions.json").read_text())
    assert [entry["question_id"] for entry in upload] == [question["question_id"] for question in questions]
    assert all(set(entry) == {"question_id", "answer"} and isinstance(entry["answer"], str) for entry in upload)
    assert len(upload) == 2 * len(TEST_IMAGES)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["vqa_accuracy"] is None and metrics["vqa_accuracy_shuffled_images"] is None
    assert metrics["num_questions"] == len(upload) and metrics["validation"]["vqa_accuracy"] is not None
    assert "have no human answers here" in result.stdout
