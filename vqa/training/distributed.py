"""Helpers for a run of several processes (DDP or FSDP): what is sharded, whether the ranks agree, and leaving the
process group together."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor


def sharded_parameters(model: torch.nn.Module) -> int:
    """How many of the model's parameter tensors are split across ranks (distributed=fsdp: FSDP2 makes each a DTensor
    sharded along its first dimension); 0 without FSDP."""
    return sum(isinstance(parameter, DTensor) for parameter in model.parameters())


def ranks_agree_on_parameters(model: torch.nn.Module) -> bool | None:
    """Under DDP, whether every rank ended with the same weights (per-tensor float64 sums); None on one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    device = next(model.parameters()).device  # nccl gathers GPU tensors, gloo CPU ones
    checksum = torch.stack([parameter.detach().double().sum() for parameter in model.parameters()]).to(device)
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    return all(torch.equal(gathered[0], other) for other in gathered[1:])


def leave_process_group() -> None:
    """Under DDP, once every rank is done: close the process group. A rank that exits with it open can abort in
    gloo's threads at exit ("terminate called without an active exception", exit -6; seen in two of five runs of
    the SLURM-variables test, where rank 1 finishes while rank 0 still writes the run folder)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
