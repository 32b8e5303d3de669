"""User mistakes end in one line and exit status 2, before any data or model is built; what a run could not use as
given (undecodable images, cut questions) is counted, not fatal and not silent."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import SUBPROCESS_WARNINGS
from tests.helpers.train_command import run_train
from tests.test_configs import composed
from vqa.config_checks import validate_config
from vqa.data import EasyVQAOptions, build_easy_vqa
from vqa.errors import CheckpointError, ConfigError
from vqa.inspection.predict import main as predict
from vqa.inspection.sweep_report import main as sweep_report
from vqa.instantiate import instantiate
from vqa.model.builders import tiny_model_and_processor
from vqa.model.processing import UNDECODABLE_IMAGES, VQACollator
from vqa.training.arguments import training_arguments
from vqa.training.fit import count_cut_questions
from vqa.training.init_from import load_init_from
from vqa.training.trainer import with_image_paths

ROOT = Path(__file__).resolve().parents[1]


def train(arguments: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VQA_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    env["PYTHONWARNINGS"] = SUBPROCESS_WARNINGS
    return run_train(arguments, env)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["model=nope"], "error: model=nope: no such option in config group 'model'; options: base, book, tiny"),
        (
            ["+trainer.args.learnin_rate=1"],
            "error: trainer.args.learnin_rate: not an option of transformers.TrainingArguments; "
            "did you mean learning_rate?",
        ),
        (["data.max_questions=-5"], "error: max_questions: got -5"),
        (["-m", "seed=0,1", "--cfg", "job"], "error: -m and --cfg together: --cfg prints one composed config"),
        (
            ["trainer=ddp"],
            "error: trainer=ddp: no such option in config group 'trainer'; options: cpu, default, gpu "
            "(distributed=ddp is an option of group 'distributed')",
        ),
    ],
)
def test_train_py_reports_a_user_error_in_one_line_and_leaves_no_run_folder(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    run_dir = tmp_path / "run"
    result = train([*arguments, f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr[-3000:]
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+trainer.args.output_dir=/tmp/x"], "trainer.args.output_dir: set by the run itself"),
        (["trainer.args.max_steps=1.5"], "trainer.args.max_steps: got 1.5 (float), expected int"),
        (["trainer.args.bf16=maybe"], "trainer.args.bf16: got 'maybe' (str), expected bool"),
        (["trainer.args.save_total_limit=two"], "trainer.args.save_total_limit: got 'two' (str), expected int or null"),
        (["seed=abc"], "seed: got 'abc' (str), expected int"),
        (["trainer.group_by_image=maybe"], "trainer.group_by_image: got 'maybe' (str), expected bool"),
        (["trainer.num_beams=0"], "trainer.num_beams: got 0, expected 1 (greedy) or more"),
        (
            ["+trainer.args.label_smoothing_factor=0.1"],
            "trainer.args.label_smoothing_factor: got 0.1, but the loss is the objective's",
        ),
        (["trainer.learning_rate_scales={image:2}"], "trainer.learning_rate_scales: unknown component 'image'"),
        (["trainer.stop_at.vqa_accuracy=99", "trainer.args.eval_strategy=no"], "no evaluation would ever reach it"),
    ],
)
def test_trainer_args_types_are_checked_before_anything_is_built(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate_config(composed(*overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_objective_and_init_from_mistakes_are_one_line_user_errors() -> None:
    # `build` turns a target's UserError out of Hydra's InstantiationException (train.py prints it, exits 2).
    with pytest.raises(ConfigError, match=r"^objective\.baseline: got 'mean', expected one of group, greedy$"):
        instantiate(composed("objective=rl", "objective.baseline=mean").objective)
    with pytest.raises(CheckpointError, match=r"^checkpoint /no/such/run: folder not found; expected the"):
        load_init_from("/no/such/run")
    with pytest.raises(ConfigError) as error:  # a typo in a `_target_` override
        instantiate(composed("objective=rl", "objective.reward._target_=vqa.training.rewards.nope").objective)
    message = str(error.value)
    assert message.startswith(
        "objective.reward._target_: cannot be imported (Error loading 'vqa.training.rewards.nope'"
    )
    assert "\n" not in message
    with pytest.raises(ConfigError, match=r"^objective\._target_: cannot be imported \(Error loading 'nope\.X'"):
        instantiate(composed("objective._target_=nope.X").objective)


def test_values_that_transformers_refuses_become_one_config_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^trainer\.args: sometimes is not a valid IntervalStrategy"):
        training_arguments(composed("trainer.args.eval_strategy=sometimes"), str(tmp_path))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a host without CUDA")
def test_gpu_preset_on_a_cpu_host_stops_at_config_time() -> None:
    with pytest.raises(ConfigError, match="trainer=default"):
        validate_config(composed("experiment=vqa_v2_base", "data.root=/data/vqa"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    splits = build_easy_vqa(tmp_path_factory.mktemp("cache"), EasyVQAOptions(max_questions=64))
    model, processor = tiny_model_and_processor(splits["train"], dropout=0.0)
    return splits, model, processor


def test_an_image_that_no_longer_decodes_is_counted_and_trained_without_a_loss(tmp_path: Path, tiny_run: tuple) -> None:
    splits, _, processor = tiny_run
    rows = [with_image_paths(splits["train"])[index] for index in range(4)]
    broken = tmp_path / "broken.png"
    good_bytes = Path(rows[0]["image"]["path"]).read_bytes()
    broken.write_bytes(good_bytes[: len(good_bytes) // 2])  # a header that opens, pixels that do not decode
    rows[1] = {**rows[1], "image": {"path": str(broken), "bytes": None}}
    batch = VQACollator(processor)(rows)
    assert batch[UNDECODABLE_IMAGES].tolist() == [1]
    assert (batch["labels"][1] == -100).all() and (batch["labels"][0] != -100).any()
    blank_row = batch["image_index"][1]
    assert batch["pixel_values"].shape[0] == len(set(batch["image_index"].tolist()))
    assert torch.allclose(batch["pixel_values"][blank_row], batch["pixel_values"][blank_row].flatten()[0])


def test_questions_longer_than_the_limit_are_counted(tiny_run: tuple) -> None:
    splits, _, processor = tiny_run
    assert count_cut_questions(processor, splits["train"]) == 0
    long_question = " ".join(["what"] * 100)
    split = splits["train"].select(range(3)).map(lambda row: {"question": long_question})
    assert count_cut_questions(processor, split) == 1  # one distinct text


@pytest.fixture
def checkpoint(tmp_path: Path, tiny_run: tuple) -> Path:
    _, model, processor = tiny_run
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "red.png")
    return folder


def predict_error(checkpoint: Path, capsys: pytest.CaptureFixture[str], question: str = "what color?") -> str:
    with pytest.raises(SystemExit) as exit_info:
        predict(
            ["--checkpoint", str(checkpoint), "--image", str(checkpoint.parent / "red.png"), "--question", question]
        )
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1, error
    return error


def test_predict_refuses_a_damaged_checkpoint_in_one_line(checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        predict(["--checkpoint", str(checkpoint), "--image", str(checkpoint.parent / "red.png"), "--question", "x?"])
        == 0
    )
    capsys.readouterr()
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    assert predict_error(checkpoint, capsys).startswith(f"error: checkpoint {checkpoint}: cannot be loaded (")
    weights.unlink()
    assert "no model.safetensors" in predict_error(checkpoint, capsys)


def test_predict_refuses_processor_settings_it_would_replace_by_defaults(
    checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    (checkpoint / "vqa_processor.json").write_text("{}")
    error = predict_error(checkpoint, capsys)
    assert "vqa_processor.json: max_question_length, max_answer_length missing or not an integer" in error
    (checkpoint / "vqa_processor.json").write_text('{"max_question_length": 32, "max_answer_length": 8, "lower": 1}')
    error = predict_error(checkpoint, capsys)
    assert "vqa_processor.json: unknown key 'lower'; expected only max_question_length" in error


def test_predict_refuses_a_checkpoint_without_its_tokenizer(checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    for path in (checkpoint / "answer_tokenizer").iterdir():
        path.unlink()
    (checkpoint / "answer_tokenizer").rmdir()
    assert "no answer_tokenizer" in predict_error(checkpoint, capsys)


def test_predict_refuses_an_empty_question_and_notes_a_cut_one(checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    assert "--question: empty" in predict_error(checkpoint, capsys, question="   ")
    long_question = " ".join(["what"] * 100)
    image = str(checkpoint.parent / "red.png")
    assert predict(["--checkpoint", str(checkpoint), "--image", image, "--question", long_question]) == 0
    assert "the question has 102 tokens; the model reads its first 32" in capsys.readouterr().err


def test_sweep_report_lists_a_run_with_a_damaged_metrics_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for run, metrics in (("0", '{"vqa_accuracy": 50.0, "per_answer_type": {}}'), ("1", "{not json")):
        (tmp_path / run / ".hydra").mkdir(parents=True)
        (tmp_path / run / ".hydra" / "overrides.yaml").write_text(f"- seed={run}\n")
        (tmp_path / run / ".hydra" / "config.yaml").write_text(f"seed: {run}\n")
        (tmp_path / run / "metrics.json").write_text(metrics)
    assert sweep_report([str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert f"warning: {tmp_path / '1' / 'metrics.json'}: unreadable" in captured.err
    assert "| 0 | 0 | finished | 50.0 |" in captured.out and "| 1 | 1 | unfinished |  |" in captured.out
    assert "1 of 2 runs have no metrics.json (unfinished" in captured.out
