"""Jobs started by submitit (`hydra/launcher=slurm` or `submitit_local`): one process per GPU joins a DDP run.

torchrun hands each process RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Under SLURM, `srun` starts
the processes instead and describes them in its own variables (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID,
SLURM_JOB_NODELIST, ...); submitit's local executor does the same with SUBMITIT_LOCAL_* variables. This module
translates them, with submitit's own parser, into the variables that the Trainer (through accelerate) reads, so
the same `train.py` runs under torchrun, under SLURM and alone.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vqa.errors import ConfigError, exit_on_user_error

logger = logging.getLogger("vqa")

# Set by submitit in every task it starts ("slurm" or "local"); how submitit itself tells which cluster it is on.
SUBMITIT_EXECUTOR = "SUBMITIT_EXECUTOR"
# The launcher class of `hydra/launcher=slurm` (and of the plugin's own `submitit_slurm`).
SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
# What submitit runs on the submitting machine: sbatch submits the job array, and its SLURM executor refuses to start
# where srun is missing ('Could not detect "srun", are you indeed on a slurm cluster?', with a traceback).
SLURM_COMMANDS = ("sbatch", "srun")


def check_slurm_commands(launcher: DictConfig | None) -> None:
    """A SLURM launcher needs SLURM's commands on this machine's PATH; any other launcher needs nothing here.

    Raises:
        ConfigError: one line naming the launcher, the missing commands and the alternatives.
    """
    if launcher is None or launcher.get("_target_") != SLURM_LAUNCHER:
        return
    missing = [command for command in SLURM_COMMANDS if shutil.which(command) is None]
    if missing:
        raise ConfigError(
            f"hydra/launcher=slurm: no {' or '.join(missing)} on PATH, so this machine cannot submit SLURM jobs; "
            "run the command on a SLURM login node, or leave hydra/launcher out (jobs one after another here) or "
            "use hydra/launcher=submitit_local"
        )


class SlurmCommandsCheck(Callback):
    """Before a multirun starts (before its sweeper and launcher are built): `check_slurm_commands`, as one line on
    stderr and exit status 2 (an exception in a Hydra callback would only be turned into a warning)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with exit_on_user_error():
            check_slurm_commands(config.hydra.get("launcher"))


def process_rank() -> int:
    """This process's rank in its job, also before `join_submitit_job` has exported it: torchrun's RANK, a submitit
    task's rank from SLURM's (or submitit's local) variables, else 0."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if SUBMITIT_EXECUTOR in os.environ:
        from submitit.helpers import TorchDistributedEnvironment  # imported here: plain runs do not need submitit

        return TorchDistributedEnvironment().rank
    return 0


def join_submitit_job() -> None:
    """In a submitit task of a job with several tasks, export the torch.distributed variables of this task.

    Does nothing outside submitit, in a one-task job, or when RANK is already set (torchrun inside the job): the
    process then runs as it would have without this call.
    """
    if SUBMITIT_EXECUTOR not in os.environ or "RANK" in os.environ:
        return
    from submitit.helpers import TorchDistributedEnvironment  # imported here: plain runs do not need submitit

    environment = TorchDistributedEnvironment()
    if environment.world_size < 2:
        return
    # Every task sees all of its node's GPUs (gpus_per_node); the Trainer picks cuda:LOCAL_RANK among them, so
    # CUDA_VISIBLE_DEVICES must stay as SLURM set it. The port is MASTER_PORT when the site or a `setup` line set
    # it, else derived from the job id: the same in every task. overwrite: such a MASTER_PORT (or a MASTER_ADDR)
    # is already in the environment, and submitit would refuse to export over it.
    environment.export(set_cuda_visible_devices=False, overwrite=True)
    logger.info(
        "submitit task %d of %d (local rank %d) joins the job at %s:%d",
        environment.rank,
        environment.world_size,
        environment.local_rank,
        environment.master_addr,
        environment.master_port,
    )
