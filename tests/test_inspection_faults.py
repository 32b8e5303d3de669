"""Odd inputs to the inspection tools, the scorer and the dataset cache: each a clear line and exit status 2, or a
message in the demo's page, or a marked row of a sweep report; never a traceback or a half-written cache."""

from __future__ import annotations

import json
import os
import socket
import struct
import zlib
from pathlib import Path

import pytest
from datasets import Dataset, load_from_disk

from vqa.data.cache import DATA_FILE, DiskFullError, cached_build, fingerprint, publish_folder, save_dataset
from vqa.errors import UserError
from vqa.evaluation.score_files import main as score_files
from vqa.inspection.demo import answer, image_input, launch
from vqa.inspection.demo import main as demo
from vqa.inspection.predict import main as predict
from vqa.inspection.report import main as report
from vqa.inspection.report import write_sweep_report
from vqa.inspection.sweep_report import DAMAGED
from vqa.inspection.sweep_report import main as sweep_report
from vqa.model.modeling import VQAModel
from vqa.model.processing import VQAProcessor


def error_line(main: object, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one `error:` line that `main(argv)` ends with, after checking exit status 2."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)  # type: ignore[operator]
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def png_header(width: int, height: int) -> bytes:
    """A 1-bit greyscale PNG that declares width x height pixels (no pixel data): PIL reads the size from the
    header, so opening it is what a decompression bomb does to a reader."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def truncated_png(path: Path) -> Path:
    """A PNG whose header is fine and whose pixel data stops half-way."""
    from PIL import Image

    Image.effect_noise((64, 64), 40).save(path)  # noise does not compress: cutting it cuts pixel rows
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


# predict ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", [10_000, 20_000], ids=["over-the-limit", "over-twice-the-limit"])
def test_predict_refuses_a_decompression_bomb(tmp_path: Path, capsys: pytest.CaptureFixture[str], side: int) -> None:
    """Over PIL's limit (89.5 M pixels) PIL only warns, over twice it raises: both are refused, as the build does."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(side, side))
    line = error_line(predict, ["--checkpoint", str(tmp_path), "--image", str(bomb), "--question", "what?"], capsys)
    assert line.startswith(f"error: --image: cannot read {bomb} (too large: {side * side} pixels, over PIL's limit")
    assert "expected an image within the pixel limit the dataset build applies" in line


def test_predict_refuses_a_question_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bytes that are not UTF-8 on the command line reach argv as lone surrogates (os.fsdecode does the same)."""
    question = os.fsdecode(b"what colour is the caf\xe9?")
    line = error_line(predict, ["--checkpoint", str(tmp_path), "--image", "x.png", "--question", question], capsys)
    assert line.startswith(
        "error: --question: not UTF-8 text (byte 0xe9 at character 22); expected a question in UTF-8"
    )


# demo -------------------------------------------------------------------------------------------------------------


def test_demo_names_a_port_in_use_and_how_to_choose_another(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import gradio as gr

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # Checked before the checkpoint is loaded (the folder here holds none).
        line = error_line(demo, ["--checkpoint", str(tmp_path), "--port", str(port)], capsys)
        # A port taken after that check: Gradio's own refusal becomes the same message.
        with gr.Blocks(analytics_enabled=False) as app:
            gr.Markdown("a page")
        with pytest.raises(UserError) as refused:
            launch(app, "127.0.0.1", port)
    expected = f"--port {port}: 127.0.0.1:{port} is already in use by another program; choose another port with --port"
    assert line.startswith(f"error: {expected}") and str(refused.value).startswith(expected)


def test_demo_shows_why_an_upload_cannot_be_read(tiny_model: VQAModel, tmp_path: Path) -> None:
    import gradio as gr
    from gradio.data_classes import ImageData

    processor = VQAProcessor.train_tiny(["what shape is it?"] * 3, ["circle"] * 3, image_size=64)
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    cut = truncated_png(tmp_path / "cut.png")
    # The app's answer function reads the file itself (uploads and examples arrive as paths).
    with pytest.raises(gr.Error) as unreadable:
        answer(tiny_model, processor, str(notes), "what shape is it?")
    assert unreadable.value.message.startswith("notes.png: not a readable image. Upload an image file")
    with pytest.raises(gr.Error) as truncated:
        answer(tiny_model, processor, str(cut), "what shape is it?")
    assert truncated.value.message.startswith("cut.png: truncated or corrupt image data (")
    # Gradio opens an upload's header before the app sees it: that failure is a message too, not a bare "Error".
    with pytest.raises(gr.Error) as opened_by_gradio:
        image_input().preprocess(ImageData(path=str(notes), orig_name="notes.png"))
    assert opened_by_gradio.value.message.startswith("notes.png: not a readable image.")


# report -----------------------------------------------------------------------------------------------------------


def final_split() -> dict[str, Dataset]:
    """The `data._target_` of the run folders below: splits built in-process instead of from a dataset cache."""
    return {"validation": Dataset.from_dict({"question_id": [1, 2], "question": ["a?", "b?"]})}


def run_folder(folder: Path, config: str, predictions: str) -> Path:
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"split": "validation", "vqa_accuracy": 50.0}))
    (folder / "config.yaml").write_text(config)
    (folder / "predictions.json").write_text(predictions)
    return folder


GOOD_CONFIG = f"data:\n  _target_: {__name__}.final_split\n"
GOOD_PREDICTIONS = '[{"question_id": 1, "answer": "yes"}, {"question_id": 2, "answer": "no"}]'


@pytest.mark.parametrize(
    "config, predictions, damaged, found",
    [
        ("data: [unclosed\n", GOOD_PREDICTIONS, "config.yaml", "unreadable (while parsing a flow sequence"),
        ("- data\n", GOOD_PREDICTIONS, "config.yaml", "a YAML list; expected the config.yaml a run writes"),
        (GOOD_CONFIG, '[{"question_id": 1, "answer": "ye', "predictions.json", "not valid JSON"),
        (GOOD_CONFIG, '[{"question_id": 1}]', "predictions.json", "entry [0] is {'question_id': 1}; expected"),
    ],
    ids=["config-not-yaml", "config-not-a-mapping", "predictions-cut", "predictions-without-answer"],
)
def test_report_names_a_damaged_run_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, predictions: str, damaged: str, found: str
) -> None:
    run = run_folder(tmp_path / "run", config, predictions)
    line = error_line(report, [str(run)], capsys)
    assert line.startswith(f"error: {run / damaged}: ") and found in line, line
    assert not (run / "report.html").exists()


def write_job(sweep: Path, job: str, overrides: str, config: str, metrics: str) -> None:
    (sweep / job / ".hydra").mkdir(parents=True)
    (sweep / job / ".hydra" / "overrides.yaml").write_text(overrides)
    (sweep / job / ".hydra" / "config.yaml").write_text(config)
    (sweep / job / "metrics.json").write_text(metrics)


def test_a_sweep_report_marks_each_job_with_damaged_files_and_reports_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = json.dumps({"vqa_accuracy": 60.0, "per_answer_type": {"other": 55.0}})
    write_job(tmp_path, "0", "- model.fusion=tokens\n", "seed: 0\n", good)
    write_job(tmp_path, "1", "- [model.fusion=pooled\n", "seed: 1\n", good)  # overrides.yaml: not YAML
    write_job(tmp_path, "2", "- model.fusion=pooled\n", "seed: [2\n", good)  # .hydra/config.yaml: not YAML
    write_job(tmp_path, "3", "- model.fusion=pooled\n", "seed: 3\n", '{"vqa_accuracy": "high"}')  # not a number
    assert sweep_report([str(tmp_path)]) == 0
    printed = capsys.readouterr()
    rows = {line.split(" | ")[0].strip("| "): line for line in printed.out.splitlines() if line.startswith("| ")}
    assert rows["run"].endswith(f"| {DAMAGED} |")
    assert rows["0"] == "| 0 | 0 | finished | tokens | 60.0 | 55.0 |  |"
    assert rows["1"].startswith("| 1 | 1 | finished |  | 60.0 | 55.0 | .hydra/overrides.yaml: unreadable (")
    assert rows["2"].startswith("| 2 |  | finished | pooled | 60.0 | 55.0 | .hydra/config.yaml: unreadable (")
    assert rows["3"] == (
        "| 3 | 3 | unfinished | pooled |  |  | metrics.json: vqa_accuracy is 'high', expected a number or null |"
    )
    for job in ("1", "2", "3"):  # and a warning naming each file, on stderr
        assert f"warning: {tmp_path / job}" in printed.err
    page = write_sweep_report(tmp_path).read_text()  # the sweep's report.html: the same marks, each job a row
    assert f"<th>{DAMAGED}</th>" in page and ".hydra/overrides.yaml: unreadable" in page
    assert ".hydra/config.yaml: unreadable" in page and "metrics.json: vqa_accuracy is" in page


# score_files ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--questions", "--annotations", "--results"])
def test_score_files_refuses_a_folder_for_any_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    paths = {name: str(tmp_path / f"{name[2:]}.json") for name in ("--questions", "--annotations", "--results")}
    paths[option] = str(tmp_path)
    line = error_line(score_files, [part for pair in paths.items() for part in pair], capsys)
    assert line == f"error: {option}: {tmp_path} is a folder; expected a JSON file"


# dataset cache ----------------------------------------------------------------------------------------------------


def test_a_full_disk_while_the_cache_is_written_is_one_line_and_leaves_no_cache(tmp_path: Path) -> None:
    """The dataset's Arrow file is written through a link to /dev/full, where every write fails with ENOSPC."""
    cache = tmp_path / "cache"
    dataset = Dataset.from_dict({"question": [f"question {index}?" for index in range(2000)]})
    key = {"source": "test"}
    final = cache / f"rows-{fingerprint(key)}"

    def write_to_a_full_disk(staging: Path) -> None:
        staging.mkdir()
        (staging / DATA_FILE).symlink_to("/dev/full")
        save_dataset(dataset, staging)

    with pytest.raises(DiskFullError) as full:
        publish_folder(final, write_to_a_full_disk, needed_bytes=dataset.data.nbytes)
    message = str(full.value)
    assert message.startswith(f"{cache}: no space left on its disk while writing {final.name} (about ")
    assert " needed, " in message and " free); free space there" in message and "\n" not in message
    assert list(cache.iterdir()) == []  # no cache folder, no staging folder left behind
    # The next build builds (nothing half-written is taken as complete) and publishes a complete cache.
    built = []
    loaded, _, folder = cached_build(cache, "rows", key, lambda: (built.append(1) or dataset, {}))
    assert built == [1] and folder == final and loaded["question"] == dataset["question"]
    assert load_from_disk(str(final))["question"][-1] == "question 1999?"
