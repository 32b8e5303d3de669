"""The divergence guard: a non-finite loss, gradient norm, reward or weight stops training with one line.

Without it a diverging run finishes as if nothing happened: the Trainer's `logging_nan_inf_filter` logs a NaN loss
as the running average, NaN gradients turn every weight into NaN, and the run writes a checkpoint of them.
`VQATrainer` calls these checks at each optimizer step (the loss and gradient norm it already computes, so nothing
is added to the step but one comparison), before every checkpoint and after training; a reward's own check is in
`vqa.training.policy_gradient`.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from vqa.errors import CheckpointError, DivergenceError
from vqa.training.checkpoints import latest_complete_checkpoint

# Parameters named in a message about non-finite weights (a diverged model usually has them all).
NAMED_PARAMETERS = 3


def non_finite(value: torch.Tensor | float | None) -> str | None:
    """'nan' or 'inf' (or '-inf') when a scalar is not finite; None when it is (or is missing)."""
    if value is None:
        return None
    number = float(value.detach().float().cpu()) if isinstance(value, torch.Tensor) else float(value)
    return None if math.isfinite(number) else str(number)


def non_finite_parameters(model: nn.Module) -> list[str]:
    """The names of the parameters holding a NaN or an infinity (of this rank's shard, for a sharded model)."""
    return [name for name, parameter in model.named_parameters() if not bool(torch.isfinite(local(parameter)).all())]


def local(parameter: torch.Tensor) -> torch.Tensor:
    """This rank's values of a parameter: a DTensor (FSDP2) is checked on its own shard by each rank."""
    return parameter.to_local() if hasattr(parameter, "to_local") else parameter


def weights_problem(model: nn.Module) -> str | None:
    """'the weights are not finite (names)' when a weight of `model` holds a NaN or an infinity, else None. Checked
    before a checkpoint is written, so that no checkpoint ever holds non-finite weights."""
    names = non_finite_parameters(model)
    if not names:
        return None
    more = f" and {len(names) - NAMED_PARAMETERS} more" if len(names) > NAMED_PARAMETERS else ""
    return f"the weights are not finite ({', '.join(names[:NAMED_PARAMETERS])}{more})"


def diverged_at(step: int, cause: str, run_dir: Path) -> DivergenceError:
    """The one-line error for a run that diverged at optimizer step `step`: the cause and the checkpoint to go back
    to (the newest complete one of `run_dir`; there is none when the run stopped before its first save)."""
    try:
        last_good = f"the last good checkpoint is {latest_complete_checkpoint(run_dir)}"
    except CheckpointError:
        last_good = "no checkpoint was saved before it"
    return DivergenceError(
        f"training diverged at step {step}: {cause}; {last_good} (start a new run with a lower "
        "trainer.args.learning_rate, or with trainer.args.max_grad_norm on)"
    )
