"""Sweeps beyond one process, through Hydra's plugins: submitit's launcher and Optuna's sweeper, really run.

The SLURM launcher's code path on a node (ranks from SLURM's variables) is tested with DDP in test_train.py.
"""

from __future__ import annotations

import csv
from pathlib import Path

import optuna
import yaml
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import TrainingArguments

from tests.helpers.train_command import FAST, ROOT, run_train
from vqa import VQAConfig, VQAModel


def table(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "report.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_submitit_local_runs_each_job_as_its_own_process_and_ends_with_the_table(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_train(
        ["-m", "hydra/launcher=submitit_local", *FAST, "seed=0,1", f"hydra.sweep.dir={sweep_dir}"], environment
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Submitit 'local' sweep output dir" in result.stdout + result.stderr
    assert "sweep report" in result.stdout
    rows = table(sweep_dir)
    assert [row["seed"] for row in rows] == ["0", "1"] and all(row["vqa_accuracy"] for row in rows)
    # submitit ran each job in a process of its own and kept its log: one folder per job under .submitit/.
    job_logs = sorted((sweep_dir / ".submitit").glob("*/*_log.out"))
    assert len(job_logs) == 2
    assert all("VQA accuracy" in log.read_text() for log in job_logs)


def test_optuna_search_runs_trials_and_a_rerun_continues_the_study(tmp_path: Path, environment: dict[str, str]) -> None:
    sweep_dir = tmp_path / "search"
    search = ["hparams_search=optuna", *FAST, f"hydra.sweep.dir={sweep_dir}", "hydra.sweeper.study_name=test"]
    first = run_train([*search, "hydra.sweeper.n_trials=3"], environment)
    assert first.returncode == 0, first.stderr[-3000:]
    rows = table(sweep_dir)
    assert [row["run"] for row in rows] == ["0", "1", "2"]
    searched = ["trainer.args.learning_rate", "trainer.args.warmup_steps", "model.dropout", "model.fusion"]
    assert all(row[key] for row in rows for key in searched) and all(row["vqa_accuracy"] for row in rows)
    # The search maximised validation accuracy; the best trial's test accuracy is recorded beside it.
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and results["objective"].startswith("val_vqa_accuracy")
    assert results["best_value"] == max(float(row["val_vqa_accuracy"]) for row in rows)
    best = rows[results["best_trial"]]
    assert float(best["val_vqa_accuracy"]) == results["best_value"]
    assert results["best_trial_final_split"] == {"split": "test", "vqa_accuracy": float(best["vqa_accuracy"])}

    # The same command again continues the study stored in the sweep folder: the next trial is number 3, in folder 3,
    # with new values. This one fails (a bad seed): the study records it as failed, the table marks it and the
    # multirun exits with status 2, without a traceback.
    second = run_train([*search, "hydra.sweeper.n_trials=1", "seed=abc"], environment)
    assert second.returncode == 2, second.stderr[-3000:]
    assert "Traceback" not in second.stderr
    rows = table(sweep_dir)
    assert [row["run"] for row in rows] == ["0", "1", "2", "3"] and rows[3]["status"] == "failed"
    assert [rows[3][key] for key in searched] != [rows[0][key] for key in searched]
    assert "run 3 failed: seed: got 'abc' (str), expected int" in second.stdout
    study = optuna.load_study(study_name="test", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    states = [trial.state for trial in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 3 + [optuna.trial.TrialState.FAIL]


def test_fsdp_preset_shards_each_block_the_components_declare() -> None:
    """distributed=fsdp as the Trainer hands it to accelerate: FSDP2, whole-weight checkpoints, and a wrap policy that
    makes each GPT-2 and ViT block its own shard unit (the blocks in the components' `_no_split_modules`). The
    sharded run itself needs GPUs (docs/scaling-out.md)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(config_name="config", overrides=["distributed=fsdp"])
    fsdp = OmegaConf.to_container(cfg.trainer.args, resolve=True)
    arguments = TrainingArguments(output_dir="unused", fsdp=fsdp["fsdp"], fsdp_config=fsdp["fsdp_config"], use_cpu=True)
    assert arguments.fsdp_plugin_args["fsdp_version"] == 2
    assert arguments.fsdp_plugin_args["state_dict_type"] == "FULL_STATE_DICT"
    model = VQAModel(VQAConfig.tiny())
    policy = fsdp2_prepare_auto_wrap_policy(FullyShardedDataParallelPlugin(**arguments.fsdp_plugin_args), model)
    units = {name for name, module in model.named_modules() if policy(module)}
    decoder_blocks = {f"decoder.transformer.h.{index}" for index in range(model.config.decoder_config.n_layer)}
    assert decoder_blocks <= units
    assert {type(model.get_submodule(name)).__name__ for name in units} == {"GPT2Block", "ViTLayer", "ViTEmbeddings"}
