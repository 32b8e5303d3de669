"""One run per run folder (vqa/run_folder.py): a folder in use or holding a run is refused in one line, before Hydra
writes into it, and a killed run never leaves its folder locked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.train_command import FAST, run_train
from vqa.errors import UserError
from vqa.run_folder import LOCK_FILE, lock_run_folder


def test_train_py_refuses_a_folder_that_another_run_is_writing_before_hydra_writes_into_it(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    run_dir = tmp_path / "shared"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("the running run's config\n")
    held = lock_run_folder(run_dir, resuming=False)  # this test process is "the other run"
    try:
        result = run_train([*FAST, f"hydra.run.dir={run_dir}"], environment)
    finally:
        held.close()
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(
        f"error: hydra.run.dir={run_dir}: the folder is in use by a running run (pid {os.getpid()}"
    )
    assert (run_dir / ".hydra" / "config.yaml").read_text() == "the running run's config\n"
    assert sorted(path.name for path in run_dir.iterdir()) == [".hydra", LOCK_FILE]  # no log, no config.yaml


def test_a_folder_that_holds_a_run_is_refused_unless_resumed(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(UserError, match=r"the folder already holds a run \(config.yaml\); .* resume="):
        lock_run_folder(tmp_path, resuming=False)
    lock_run_folder(tmp_path, resuming=True).close()


def test_a_second_lock_is_refused_and_the_lock_ends_with_its_holder(tmp_path: Path) -> None:
    first = lock_run_folder(tmp_path, resuming=False)
    with pytest.raises(UserError, match="in use by a running run"):
        lock_run_folder(tmp_path, resuming=False)
    first.close()
    lock_run_folder(tmp_path, resuming=False).close()


def test_a_killed_run_leaves_no_lock_behind(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from vqa.run_folder import lock_run_folder; "
            "lock = lock_run_folder(Path(sys.argv[1]), resuming=False); print('locked', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"pid {holder.pid} on "):
            lock_run_folder(tmp_path, resuming=False)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 5
    while True:  # the kernel releases the flock as the process is reaped
        try:
            lock_run_folder(tmp_path, resuming=False).close()
            break
        except UserError:
            assert time.monotonic() < deadline, "the killed holder's lock was not released"
            time.sleep(0.05)
