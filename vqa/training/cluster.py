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

logger = logging.getLogger("vqa")

# Set by submitit in every task it starts ("slurm" or "local"); how submitit itself tells which cluster it is on.
SUBMITIT_EXECUTOR = "SUBMITIT_EXECUTOR"


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
