"""One run per run folder. A run locks its folder before Hydra writes anything into it (a Hydra callback of
conf/config.yaml, `on_run_start`) and holds the lock until the process ends; a second run aimed at a folder in use,
or at one that already holds a run, is refused in one line (`resume=` is the way back into a folder).

The lock is an advisory `flock` on `<run folder>/.lock`: the kernel releases it when the process ends, however it
ends (a SIGKILL, the OOM killer, a SLURM timeout), so a killed run never leaves its folder locked. The file itself
stays and says who held it last.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vqa.errors import UserError, exit_on_user_error
from vqa.training.cluster import process_rank

logger = logging.getLogger("vqa")
LOCK_FILE = ".lock"
RUN_CONFIG = "config.yaml"  # what a run writes first into its folder (vqa.run.prepare)


def lock_run_folder(run_dir: Path, resuming: bool, setting: str = "hydra.run.dir") -> IO[str]:
    """Lock `run_dir` (created if needed) for this process and return the open lock file (the lock lasts as long as
    it stays open, or the process lives).

    Args:
        resuming: the run continues the run already in the folder (`resume=`); otherwise the folder must not hold one.
        setting: how the user named the folder, for the message.

    Raises:
        UserError: another process holds the folder, or it holds a run and this one does not resume it.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = open(run_dir / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 (held open for the whole run)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise UserError(
            f"{setting}={run_dir}: the folder is in use by a running run ({holder}); a folder holds one run: wait "
            "for it to end, or choose another folder"
        ) from None
    except OSError as error:  # a file system without locks (some network mounts): run unprotected, and say so
        logger.warning("run folder %s: cannot be locked (%s); make sure no other run writes it", run_dir, error)
    if not resuming and (run_dir / RUN_CONFIG).is_file():
        lock.close()
        raise UserError(
            f"{setting}={run_dir}: the folder already holds a run ({RUN_CONFIG}); a folder holds one run: resume="
            f"{run_dir} continues it, or choose another folder"
        )
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    lock.flush()
    return lock


class RunFolderLock(Callback):
    """The Hydra callback that locks a single run's folder before Hydra writes `.hydra/` and the log into it. Only
    the first process of a distributed run (rank 0 under torchrun or of a SLURM job, or a process alone) locks: the
    others share its folder.

    A multirun's jobs each get a fresh numbered folder of the sweep and are not locked here."""

    def __init__(self) -> None:
        self.lock: IO[str] | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if process_rank() != 0:
            return
        resume = config.get("resume")
        setting = "resume" if resume else "hydra.run.dir"
        # Hydra turns a callback's exception into a warning and runs on: the refusal exits here (one line, status 2).
        with exit_on_user_error():
            self.lock = lock_run_folder(Path(config.hydra.run.dir), resuming=bool(resume), setting=setting)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.lock is not None:
            self.lock.close()  # releases the flock
            self.lock = None
