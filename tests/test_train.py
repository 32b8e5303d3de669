"""train.py end to end, as a researcher runs it: the run folder, overfitting, sweeps, resume, DDP, loggers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.report_checks import sections_of_a_self_contained_page
from tests.helpers.train_command import FAST, run_train, start_train
from vqa import VQAModel, VQAProcessor
from vqa.inspection.report import main as report_main
from vqa.inspection.sweep_report import main as sweep_report


def train(arguments: list[str], env: dict[str, str], command: list[str] | None = None) -> subprocess.CompletedProcess:
    """A run that must succeed."""
    result = run_train(arguments, env, command)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory, environment: dict[str, str]) -> tuple[Path, str]:
    """(run folder, stdout) of `python train.py debug=fast`."""
    run_dir = tmp_path_factory.mktemp("fast") / "run"
    return run_dir, train([*FAST, "report=true", f"hydra.run.dir={run_dir}"], environment).stdout


def test_fast_run_writes_the_run_folder(fast_run: tuple[Path, str]) -> None:
    run_dir, stdout = fast_run
    assert "VQA accuracy" in stdout and "training samples/s" in stdout
    for name in ("config.yaml", "metrics.json", "predictions.json", "run_card.json"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_questions"] == 256
    assert 0 <= metrics["vqa_accuracy"] <= 100 and set(metrics["per_answer_type"]) == {"yes_no", "other"}
    predictions = json.loads((run_dir / "predictions.json").read_text())
    assert len(predictions) == 256 and set(predictions[0]) == {"question_id", "answer"}
    card = json.loads((run_dir / "run_card.json").read_text())
    assert card["packages"]["transformers"] and card["datasets"]["train"]["fingerprint"]
    assert card["train_samples_per_second"] > 0 and card["world_size"] == 1
    model = VQAModel.from_pretrained(run_dir / "checkpoint")
    processor = VQAProcessor.from_pretrained(run_dir / "checkpoint")
    assert model.config.decoder_config.vocab_size >= processor.answer_vocab_size


def test_a_run_ends_with_its_report_page(fast_run: tuple[Path, str]) -> None:
    run_dir, stdout = fast_run
    assert f"report            {run_dir / 'report.html'} (" in stdout
    page = (run_dir / "report.html").read_text()
    assert sections_of_a_self_contained_page(page) == ["summary", "curves", "per-type", "baselines", "gallery"]
    split = json.loads((run_dir / "predictions.json").read_text())
    assert len(split) == 256 and "on 256 test questions" in page
    # Four steps answer nothing right: the gallery holds six wrong answers, each with its attention overlay.
    assert page.count('class="card wrong"') == 6 and page.count('class="card right"') == 0
    assert page.count('alt="attention overlay"') == 6 and "No attention overlays" not in page
    # The same page again from the folder alone: the splits rebuilt from config.yaml, the model from checkpoint/.
    (run_dir / "report.html").unlink()
    assert report_main([str(run_dir)]) == 0
    again = (run_dir / "report.html").read_text()
    assert sections_of_a_self_contained_page(again) == ["summary", "curves", "per-type", "baselines", "gallery"]
    assert again.count('alt="attention overlay"') == 6
    for question_type in ("is there a", "what shape is present"):  # easy-VQA's question types, in the per-type table
        assert f"<td>{question_type}</td>" in page
    assert "most common training answer per question type" in page


def test_rl_fine_tunes_a_finished_run_and_logs_its_reward(
    tmp_path: Path, fast_run: tuple[Path, str], environment: dict[str, str]
) -> None:
    start, _ = fast_run
    run_dir = tmp_path / "rl"
    result = train(
        [*FAST, "objective=rl", "objective.samples=2", f"init_from={start}", f"hydra.run.dir={run_dir}"], environment
    )
    assert f"model and processor from {start}" in result.stdout + result.stderr
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    steps = [entry for entry in history if "loss" in entry]
    assert len(steps) == 4 and all(0 <= entry["reward"] <= 1 and entry["answer_tokens"] >= 1 for entry in steps)
    assert 0 <= json.loads((run_dir / "metrics.json").read_text())["vqa_accuracy"] <= 100
    config = (run_dir / "config.yaml").read_text()
    assert "vqa.training.policy_gradient.PolicyGradient" in config and f"init_from: {start}" in config


def test_load_best_model_at_end_restores_every_weight_of_the_best_checkpoint(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    # The *worst* eval loss counts as best, so that the best checkpoint is an early one, not the last.
    run_dir = tmp_path / "best"
    settings = {
        "max_steps": 6,
        "eval_steps": 2,
        "save_strategy": "steps",
        "save_steps": 2,
        "save_total_limit": "null",
    }
    best_by = ["+trainer.args.load_best_model_at_end=true", "+trainer.args.metric_for_best_model=eval_loss"]
    best_by.append("+trainer.args.greater_is_better=true")
    overrides = [f"trainer.args.{key}={value}" for key, value in settings.items()]
    train([*FAST, f"hydra.run.dir={run_dir}", *overrides, *best_by], environment)
    state = json.loads((run_dir / "checkpoint-6" / "trainer_state.json").read_text())
    # Each evaluation is logged with the wall time since training began (time-to-accuracy curves).
    elapsed = [entry["elapsed_seconds"] for entry in state["log_history"] if "eval_vqa_accuracy" in entry]
    assert len(elapsed) == 3 and elapsed == sorted(elapsed) and elapsed[0] > 0
    best = Path(state["best_model_checkpoint"])
    assert best.name != "checkpoint-6"
    expected = VQAModel.from_pretrained(best).state_dict()
    final = VQAModel.from_pretrained(run_dir / "checkpoint").state_dict()
    assert any(name.startswith("image_encoder.") for name in final)
    for name, tensor in expected.items():
        assert torch.equal(final[name], tensor), name
    # The run's validation accuracy is the best checkpoint's logged evaluation, the weights it ends with.
    logged = {
        entry["step"]: entry["eval_vqa_accuracy"] for entry in state["log_history"] if "eval_vqa_accuracy" in entry
    }
    validation = json.loads((run_dir / "metrics.json").read_text())["validation"]
    assert validation["vqa_accuracy"] == logged[state["best_global_step"]] and state["best_global_step"] != 6


def test_overfit_memorises_a_handful_of_questions(tmp_path: Path, environment: dict[str, str]) -> None:
    run_dir = tmp_path / "overfit"
    train(["debug=overfit", "trainer.args.disable_tqdm=true", f"hydra.run.dir={run_dir}"], environment)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["split"] == "train" and metrics["vqa_accuracy"] >= 95.0


def test_a_failed_job_does_not_stop_the_sweep(tmp_path: Path, environment: dict[str, str]) -> None:
    """The first job fails with a user error: the second still runs, the report marks the first with its error
    line, and the multirun ends with exit status 2 (every failure a user error)."""
    sweep_dir = tmp_path / "sweep"
    overrides = ["baseline=prior", "shuffled_image_check=false", "seed=abc,0", f"hydra.sweep.dir={sweep_dir}"]
    result = run_train(["-m", *overrides], environment)
    assert result.returncode == 2, result.stderr[-3000:]
    printed = result.stdout[result.stdout.index("sweep report") :]
    assert "| 0 | abc | failed |" in printed and "| 1 | 0 | finished |" in printed
    assert "run 0 failed: seed: got 'abc' (str), expected int" in printed
    assert json.loads((sweep_dir / "0" / "error.json").read_text())["user_error"] is True
    assert (sweep_dir / "1" / "metrics.json").is_file() and (sweep_dir / "report.csv").is_file()
    assert "1 of the sweep's jobs failed" in result.stderr and "Traceback" not in result.stderr
    # report.html for the finished job (a prior: no model, so its gallery shows the bare images) and for the sweep.
    run_page = (sweep_dir / "1" / "report.html").read_text()
    assert "gallery" in sections_of_a_self_contained_page(run_page) and "No attention overlays" in run_page
    assert 'class="card right"' in run_page and 'class="card wrong"' in run_page
    sweep_page = (sweep_dir / "report.html").read_text()
    assert sections_of_a_self_contained_page(sweep_page) == ["sweep"]
    assert '<a href="1/report.html">1</a>' in sweep_page and "run 0 failed: seed: got" in sweep_page


def test_baseline_ladder_sweep_and_its_report(
    tmp_path: Path, environment: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    sweep_dir = tmp_path / "ladder"
    result = train(["experiment=baseline_ladder", *FAST, f"hydra.sweep.dir={sweep_dir}"], environment)
    # The multirun prints its report when it ends.
    printed = result.stdout[result.stdout.index("sweep report") :].splitlines()
    header = "| run | seed | baseline | val_vqa_accuracy | vqa_accuracy | shuffled_images | acc_other | acc_yes_no |"
    assert header in printed
    table = printed[printed.index(header) + 2 :][:5]
    assert [row.split(" | ")[2] for row in table] == ["global_prior", "prior", "question_only", "image_only", "none"]
    # Each rung, the priors included, is also scored on the validation split: what a sweep chooses by.
    assert all(row.split(" | ")[3].strip() for row in table)
    metrics = [json.loads((sweep_dir / str(run) / "metrics.json").read_text()) for run in range(5)]
    for run in metrics:
        assert run["num_questions"] == 256 and 0 <= run["vqa_accuracy_shuffled_images"] <= 100
        assert run["seed"] == 0  # the config default: metrics.json says which seed a run used
    global_prior, prior, question_only = metrics[:3]
    # Nothing that ignores the image can change when the images are shuffled.
    for blind in (global_prior, prior, question_only):
        assert blind["vqa_accuracy_shuffled_images"] == blind["vqa_accuracy"]
    assert global_prior["baseline"]["by"] == "global" and prior["baseline"]["question_types"] > 1
    assert prior["vqa_accuracy"] > global_prior["vqa_accuracy"]
    predictions = json.loads((sweep_dir / "1" / "predictions.json").read_text())
    assert len(predictions) == 256 and not (sweep_dir / "1" / "checkpoint").exists()
    assert VQAModel.from_pretrained(sweep_dir / "2" / "checkpoint").config.inputs == "question_only"
    assert sweep_report([str(sweep_dir)]) == 0
    output = capsys.readouterr().out.splitlines()
    assert output[0].lower() == f"common overrides: experiment=baseline_ladder {' '.join(FAST)}"
    csv_lines = (sweep_dir / "report.csv").read_text().splitlines()
    assert (
        csv_lines[0] == "run,seed,baseline,val_vqa_accuracy,vqa_accuracy,shuffled_images,acc_other,acc_yes_no"
        and len(csv_lines) == 6
    )


def logged_training(run_dir: Path) -> list[tuple[int, float, float]]:
    """(step, loss, grad_norm) of every training log entry in the run folder's trainer_state.json."""
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    return [(entry["step"], entry["loss"], entry["grad_norm"]) for entry in history if "loss" in entry]


def test_two_runs_with_one_seed_log_bit_identical_losses(tmp_path: Path, environment: dict[str, str]) -> None:
    # 60 steps: before the fix (docs/reproducibility.md), two such runs differed from step 10 on.
    steps, logged_every = 60, 10
    quick = [*FAST, f"trainer.args.max_steps={steps}", f"trainer.args.logging_steps={logged_every}"]
    quick += ["trainer.args.eval_strategy=no", "final_evaluation=false"]
    first, second = tmp_path / "first", tmp_path / "second"
    for run_dir in (first, second):
        train([*quick, f"hydra.run.dir={run_dir}"], environment)
    logged = logged_training(first)
    assert len(logged) == steps // logged_every + 1  # logging_first_step, then every 10 steps
    assert logged[-1][1] < logged[0][1] / 2, "the runs should have trained"
    # JSON keeps a float's shortest repr, which round-trips exactly: == compares every bit.
    assert logged_training(second) == logged


def train_as_slurm_tasks(arguments: list[str], env: dict[str, str], log_dir: Path, tasks: int = 2) -> None:
    """train.py started as `srun` starts the tasks of a one-node SLURM job from the SLURM launcher (submitit's
    sbatch script sets SUBMITIT_EXECUTOR): one process per task, told its place only by SLURM's variables."""
    job = {
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": str(tasks),
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_JOB_NODELIST": "localhost",
        "OMP_NUM_THREADS": "1",  # as torchrun sets it, so that both runs compute alike
    }
    torchrun_variables = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}
    base = {key: value for key, value in env.items() if key not in torchrun_variables} | job
    processes = []
    for rank in range(tasks):
        task_env = base | {"SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)}
        with (log_dir / f"task_{rank}.log").open("w") as log:  # the child keeps its own handle
            processes.append(start_train(arguments, task_env, stdout=log, stderr=log))
    for rank, process in enumerate(processes):
        assert process.wait(timeout=600) == 0, (log_dir / f"task_{rank}.log").read_text()[-3000:]


def test_two_process_ddp_under_torchrun_and_from_slurm_variables_train_alike(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    """Two ranks stay identical; the SLURM launcher's path (ranks from SLURM's variables, no torchrun) trains to the
    same losses as torchrun, bit for bit."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"]
    ddp = ["distributed=ddp", *FAST, "trainer.args.max_steps=20", "trainer.args.eval_strategy=no"]
    first, second = tmp_path / "ddp", tmp_path / "slurm"
    train([*ddp, f"hydra.run.dir={first}"], environment, command=torchrun)
    card = json.loads((first / "run_card.json").read_text())
    assert card["world_size"] == 2 and card["parameters_identical_across_ranks"] is True
    assert json.loads((first / "metrics.json").read_text())["num_questions"] == 256
    train_as_slurm_tasks([*ddp, f"hydra.run.dir={second}", "final_evaluation=false"], environment, tmp_path)
    assert "submitit task 1 of 2 (local rank 1) joins the job" in (tmp_path / "task_1.log").read_text()
    assert json.loads((second / "run_card.json").read_text())["world_size"] == 2
    assert len(logged_training(first)) == 20 and logged_training(second) == logged_training(first)


def test_wandb_offline_and_tensorboard_loggers_record_one_run(tmp_path: Path, environment: dict[str, str]) -> None:
    """Both trackers at once (`logger=wandb logger.report_to=[wandb,tensorboard]`): wandb writes its offline run
    without prompting for a login, and the Trainer writes TensorBoard event files."""
    run_dir = tmp_path / "logged_run"
    env = {key: value for key, value in environment.items() if not key.startswith("WANDB_")}
    train(["logger=wandb", "logger.report_to=[wandb,tensorboard]", *FAST, f"hydra.run.dir={run_dir}"], env)
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and any(offline_runs[0].rglob("*.wandb"))
    assert list(run_dir.rglob("events.out.tfevents.*"))
