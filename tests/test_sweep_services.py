"""What a multirun relies on outside the run is checked before its first job: the Optuna search's settings and its
SQLite study file (the sweeper plugin), and SLURM's commands for hydra/launcher=slurm (a Hydra callback). Each
mistake is one line on stderr and exit status 2."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from hydra_plugins.vqa_optuna_search.checks import check_search_settings
from tests.test_configs import CONF
from vqa.errors import ConfigError
from vqa.training.cluster import SlurmCommandsCheck, check_slurm_commands


def with_hydra(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def sqlite_file(path: Path) -> Path:
    with sqlite3.connect(path) as connection:
        connection.execute("create table studies (id integer)")
    return path


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"n_trials": 0}, "hydra.sweeper.n_trials: got 0, expected a positive integer"),
        ({"n_jobs": 0}, "hydra.sweeper.n_jobs: got 0, expected a positive integer"),  # would loop forever
        ({"max_failure_rate": 1.5}, "hydra.sweeper.max_failure_rate: got 1.5, expected a number in [0, 1]"),
    ],
)
def test_search_settings_out_of_range_are_one_line(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        check_search_settings(storage=None, **settings)
    assert str(error.value) == message


def test_the_study_file_must_be_sqlite_and_writable(tmp_path: Path) -> None:
    check_search_settings(storage=f"sqlite:///{tmp_path}/new/optuna.db")  # created by the first trial
    study = sqlite_file(tmp_path / "optuna.db")
    check_search_settings(storage=f"sqlite:///{study}")
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"\x00garbage, not a database" * 10)
    with pytest.raises(ConfigError, match=rf"^hydra\.sweeper\.storage: {damaged} is not an SQLite database"):
        check_search_settings(storage=f"sqlite:///{damaged}")
    study.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    try:
        with pytest.raises(ConfigError, match=rf"^hydra\.sweeper\.storage: {study} is read-only; the study records"):
            check_search_settings(storage=f"sqlite:///{study}")
    finally:
        study.chmod(stat.S_IRUSR | stat.S_IWUSR)


@pytest.mark.parametrize("mistake", ["n_trials", "damaged file"])
def test_the_sweeper_plugin_exits_in_one_line_when_hydra_builds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture, mistake: str
) -> None:
    """The plugin's constructor runs the checks: Hydra builds it right after the multirun starts, before any job,
    from the composed `hydra.sweeper` node as here (train.py then exits with this line and status 2)."""
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    overrides = ["hparams_search=optuna", f"hydra.sweep.dir={sweep_dir}"]
    if mistake == "n_trials":
        overrides.append("hydra.sweeper.n_trials=0")
        expected = "error: hydra.sweeper.n_trials: got 0, expected a positive integer"
    else:
        (sweep_dir / "optuna.db").write_text("a text file where the study should be\n")
        expected = f"error: hydra.sweeper.storage: {sweep_dir / 'optuna.db'} is not an SQLite database (damaged"
    with pytest.raises(SystemExit) as exit_:
        instantiate(with_hydra(*overrides).hydra.sweeper)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), lines
    assert [path.name for path in sweep_dir.iterdir()] == (["optuna.db"] if mistake != "n_trials" else [])


def test_slurm_launcher_without_slurm_is_one_line_before_the_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without SLURM's commands
    cfg = with_hydra("hydra/launcher=slurm")
    with pytest.raises(ConfigError, match=r"^hydra/launcher=slurm: no sbatch or srun on PATH"):
        check_slurm_commands(cfg.hydra.launcher)
    with pytest.raises(SystemExit) as exit_:
        SlurmCommandsCheck().on_multirun_start(config=cfg)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: hydra/launcher=slurm: no sbatch or srun on PATH")
    SlurmCommandsCheck().on_multirun_start(config=with_hydra())  # the basic launcher needs nothing
    for command in ("sbatch", "srun"):  # where SLURM's commands are on PATH, the launcher may go on
        (tmp_path / command).write_text("#!/bin/sh\n")
        (tmp_path / command).chmod(0o755)
    check_slurm_commands(cfg.hydra.launcher)
