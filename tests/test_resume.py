"""Resume after kill -9 at any moment: during a checkpoint write, with a damaged newest checkpoint, with overrides,
after the end of training, and without any checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from hydra.utils import get_object
from transformers import TrainerState

from tests.helpers.train_command import run_train as train
from vqa.errors import CheckpointError
from vqa.instantiate import current_import_path
from vqa.model.fusion import PooledFusion, fusion_class
from vqa.training.checkpoints import MANIFEST, checkpoint_problem, latest_complete_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# Four steps with a checkpoint every two: the kill lands in the second checkpoint's write.
RUN = [
    "debug=fast",
    "report=false",
    "trainer.args.disable_tqdm=true",
    "trainer.args.save_strategy=steps",
    "trainer.args.save_steps=2",
    "shuffled_image_check=false",
]

# Loaded by Python at start-up (sitecustomize on PYTHONPATH): torch.save writes half of the file named by
# KILL_WHILE_WRITING, then the process kills itself with SIGKILL, as a power cut or the OOM killer would.
KILL_DURING_SAVE = """
import io, os, signal
import torch

_save = torch.save

def _save_then_die(obj, f, *args, **kwargs):
    if isinstance(f, (str, os.PathLike)) and str(f).endswith(os.environ["KILL_WHILE_WRITING"]):
        buffer = io.BytesIO()
        _save(obj, buffer, *args, **kwargs)
        with open(f, "wb") as file:
            file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return _save(obj, f, *args, **kwargs)

torch.save = _save_then_die
"""


def succeeded(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The run failed as a user error: exit status 2, one line on stderr, no traceback."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, environment: dict[str, str]) -> Path:
    """An uninterrupted run of the same settings."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    succeeded(train([*RUN, f"hydra.run.dir={run_dir}"], environment))
    return run_dir


def outcome(run_dir: Path) -> tuple[dict, list]:
    return json.loads((run_dir / "metrics.json").read_text()), json.loads((run_dir / "predictions.json").read_text())


def global_step(checkpoint: Path) -> int:
    return TrainerState.load_from_json(str(checkpoint / "trainer_state.json")).global_step


def test_a_run_killed_while_writing_a_checkpoint_resumes_to_the_uninterrupted_result(
    tmp_path: Path, environment: dict[str, str], reference: Path
) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(KILL_DURING_SAVE)
    killed_env = {
        **environment,
        "PYTHONPATH": os.pathsep.join([str(hooks), environment.get("PYTHONPATH", "")]),
        "KILL_WHILE_WRITING": os.path.join("checkpoint-4", "optimizer.pt"),
    }
    run_dir = tmp_path / "run"
    killed = train([*RUN, f"hydra.run.dir={run_dir}"], killed_env)
    assert killed.returncode == -9, killed.stderr[-3000:]
    half_written = run_dir / "checkpoint-4"
    assert (half_written / "model.safetensors").is_file() and not (half_written / "trainer_state.json").exists()
    assert checkpoint_problem(half_written) is not None and checkpoint_problem(run_dir / "checkpoint-2") is None

    resumed = succeeded(train([f"resume={run_dir}"], environment))
    assert "skipped checkpoint-4" in resumed.stderr + resumed.stdout
    reference_metrics, reference_predictions = outcome(reference)
    metrics, predictions = outcome(run_dir)
    assert metrics["loss"] == pytest.approx(reference_metrics["loss"], rel=1e-6)
    assert predictions == reference_predictions
    assert checkpoint_problem(run_dir / "checkpoint-4") is None and global_step(run_dir / "checkpoint-4") == 4


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, environment: dict[str, str], reference: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    weights = run_dir / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    resumed = succeeded(train([f"resume={run_dir}"], environment))
    log = resumed.stderr + resumed.stdout
    assert "skipped checkpoint-4: model.safetensors has 1000 bytes" in log
    assert "'loss'" in log  # steps 3 and 4 were trained again
    assert outcome(run_dir)[1] == outcome(reference)[1]


def test_resuming_a_finished_run_trains_no_further(
    tmp_path: Path, environment: dict[str, str], reference: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    resumed = succeeded(train([f"resume={run_dir}"], environment))
    assert "training is over" in resumed.stderr + resumed.stdout
    assert "'loss'" not in resumed.stdout
    assert sorted(path.name for path in run_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert global_step(run_dir / "checkpoint-4") == 4
    assert outcome(run_dir) == outcome(reference)


def test_resume_applies_and_records_safe_overrides_and_refuses_others(
    tmp_path: Path, environment: dict[str, str], reference: Path
) -> None:
    """Also for a run folder written before `vqa` became packages by stage: its config.yaml names its targets by
    the old import paths (`vqa.builders...`, `vqa.objectives...`), and it still resumes. (`init_from` reads only the
    checkpoint, whose format did not change.)"""
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    config = (run_dir / "config.yaml").read_text()
    legacy = config.replace("vqa.model.builders.", "vqa.builders.").replace(
        "vqa.training.objectives.", "vqa.objectives."
    )
    assert "_target_: vqa.builders.tiny_model_and_processor" in legacy and "vqa.objectives.AnswerCrossEntropy" in legacy
    (run_dir / "config.yaml").write_text(legacy)
    refused = one_line_error(train([f"resume={run_dir}", "model.fusion=pooled", "seed=3"], environment))
    assert "model.fusion=pooled, seed=3 cannot change in a continued run" in refused
    assert run_dir.is_dir() and (run_dir / "metrics.json").is_file()  # a refused resume leaves the run as it was

    succeeded(train([f"resume={run_dir}", "trainer.args.max_steps=6"], environment))
    assert global_step(run_dir / "checkpoint-6") == 6
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["args"]["max_steps"] == 6
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    assert overrides[-1] == "trainer.args.max_steps=6" and "debug=fast" in overrides
    assert not any(override.startswith("resume=") for override in overrides)


def test_resume_without_a_complete_checkpoint_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "checkpoint-2").mkdir()
    with pytest.raises(CheckpointError) as error:
        latest_complete_checkpoint(tmp_path)
    expected = f"resume: {tmp_path} has no complete checkpoint (checkpoint-2: no {MANIFEST} (the run was stopped"
    assert str(error.value).startswith(expected)
    (tmp_path / "checkpoint-2").rmdir()
    with pytest.raises(CheckpointError, match="has no checkpoint-N folder; the run stopped before its first save"):
        latest_complete_checkpoint(tmp_path)


def test_resume_of_a_folder_that_is_not_a_run_is_one_line_and_leaves_nothing(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    misspelt = tmp_path / "no-such-run"
    message = one_line_error(train([f"resume={misspelt}"], environment))
    assert message == f"error: resume: {misspelt} is not a run folder (no config.yaml); expected outputs/<date>/<time>"
    assert not misspelt.exists()  # Hydra made the folder for the log; the failed start removes it


@pytest.mark.parametrize(
    ("saved", "now"),
    [  # every import path a run folder's config.yaml or a checkpoint could name before the package move
        ("vqa.builders.tiny_model_and_processor", "vqa.model.builders.tiny_model_and_processor"),
        ("vqa.builders.pretrained_model_and_processor", "vqa.model.builders.pretrained_model_and_processor"),
        ("vqa.objectives.AnswerCrossEntropy", "vqa.training.objectives.AnswerCrossEntropy"),
        ("vqa.objectives.SoftAnswerCrossEntropy", "vqa.training.objectives.SoftAnswerCrossEntropy"),
        ("vqa.policy_gradient.PolicyGradient", "vqa.training.policy_gradient.PolicyGradient"),
        ("vqa.rewards.PipelineReward", "vqa.training.rewards.PipelineReward"),
        ("vqa.rewards.vqa_accuracy", "vqa.training.rewards.vqa_accuracy_reward"),
        ("vqa.fusion.PooledFusion", "vqa.model.fusion.PooledFusion"),
        ("vqa.resampler.PerceiverResampler", "vqa.model.resampler.PerceiverResampler"),
        ("vqa.data.easy_vqa.training_splits", "vqa.data.easy_vqa.training_splits"),
    ],
)
def test_import_paths_saved_before_the_package_move_point_where_they_are_now(saved: str, now: str) -> None:
    assert current_import_path(saved) == now
    get_object(now)  # it imports


def test_a_checkpoint_naming_an_old_fusion_path_still_builds() -> None:
    assert fusion_class("vqa.fusion.PooledFusion") is PooledFusion
