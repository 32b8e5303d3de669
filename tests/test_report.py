"""python -m vqa.inspection.report on folders that are not what it expects: one line, exit status 2 (the pages
themselves are checked on real runs in test_train.py and in Chromium in test_browser.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import Dataset

from vqa.errors import UserError
from vqa.inspection.report import main, read_predictions


def error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_a_folder_that_is_neither_a_run_nor_a_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "not a run folder (no metrics.json) nor a multirun folder" in error_line([str(tmp_path)], capsys)
    assert not (tmp_path / "report.html").exists()


def test_a_damaged_metrics_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "metrics.json").write_text('{"vqa_accuracy": 9')
    assert f"{tmp_path / 'metrics.json'}: not valid JSON" in error_line([str(tmp_path)], capsys)


def test_predictions_that_miss_questions_of_the_split(tmp_path: Path) -> None:
    """A run folder whose predictions.json lacks answers: named, with the first missing question."""
    (tmp_path / "predictions.json").write_text('[{"question_id": 1, "answer": "yes"}]')
    split = Dataset.from_dict({"question_id": [1, 2, 3]})
    with pytest.raises(UserError, match=r"no answer for 2 of the split's 3 questions \(first: question_id 2\)"):
        read_predictions(tmp_path / "predictions.json", split)
