"""Continuing a run (`resume=<run folder>`): its own config with the overrides a continued run can take, the
record of what was changed, and whether training is already over.

A resumed run keeps everything that shaped the model so far (data, model, optimizer settings, seed): the overrides
below are the ones that only extend training or change evaluation, saving and logging. Any other override is
refused in one line rather than silently ignored.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from transformers import Trainer, TrainerState

from vqa.errors import ConfigError
from vqa.instantiate import current_import_path

logger = logging.getLogger(__name__)

# Dotted keys (or their parents) a resumed run may change: more training, evaluation, saving and logging.
RESUMABLE_KEYS = (
    "trainer.args.num_train_epochs",
    "trainer.args.max_steps",
    "trainer.args.eval_strategy",
    "trainer.args.eval_steps",
    "trainer.args.per_device_eval_batch_size",
    "trainer.args.logging_strategy",
    "trainer.args.logging_steps",
    "trainer.args.logging_first_step",
    "trainer.args.save_strategy",
    "trainer.args.save_steps",
    "trainer.args.save_total_limit",
    "trainer.args.disable_tqdm",
    "trainer.args.dataloader_num_workers",
    "trainer.args.dataloader_persistent_workers",
    "trainer.num_beams",
    "final_split",
    "final_evaluation",
    "shuffled_image_check",
    "report",
    "logger",
)
HYDRA_OVERRIDES = Path(".hydra") / "overrides.yaml"


def override_key(override: str) -> str:
    """'+trainer.args.max_steps=12' -> 'trainer.args.max_steps'."""
    return override.partition("=")[0].lstrip("+~")


def is_resumable(key: str) -> bool:
    return any(key == allowed or key.startswith(f"{allowed}.") for allowed in RESUMABLE_KEYS)


def resumed_config(cfg: DictConfig, overrides: list[str]) -> tuple[DictConfig, list[str]]:
    """The run folder's saved config with the command line's resumable overrides applied.

    Args:
        cfg: the config composed from the command line (defaults + overrides), `resume` set.
        overrides: the command line's overrides (Hydra's `overrides.task`), `resume=...` among them.

    Returns:
        The config to run and the overrides applied to it.

    Raises:
        ConfigError: `resume` is not a run folder, or an override cannot apply to a continued run.
    """
    run_dir = Path(cfg.resume)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"resume: {run_dir} is not a run folder (no config.yaml); expected outputs/<date>/<time>")
    try:
        previous = OmegaConf.load(saved)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise ConfigError(f"resume: {saved} is not a readable config ({error})") from None
    previous = with_current_import_paths(previous)
    changes = [override for override in overrides if override_key(override) != "resume"]
    refused = [override for override in changes if override.startswith("~") or not is_resumable(override_key(override))]
    if refused:
        raise ConfigError(
            f"resume: {', '.join(refused)} cannot change in a continued run (it would no longer be the same run); "
            "a resumed run takes more steps or epochs and evaluation, saving and logging settings "
            "(vqa/training/resume.py RESUMABLE_KEYS); start a new run for anything else"
        )
    for override in changes:
        key = override_key(override)
        OmegaConf.update(previous, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
        logger.info("resume: applied %s", override)
    previous.resume = cfg.resume
    return previous, changes


def with_current_import_paths(config: DictConfig) -> DictConfig:
    """`config` with every import path of a moved module (`vqa.instantiate.current_import_path`: `_target_`s, a
    fusion class) rewritten to where it is now, so that a run folder written before the move resumes."""

    def current(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: current(item) for key, item in value.items()}
        if isinstance(value, list):
            return [current(item) for item in value]
        return current_import_path(value) if isinstance(value, str) else value

    return OmegaConf.create(current(OmegaConf.to_container(config)))


def record_overrides(run_dir: Path, applied: list[str]) -> None:
    """Add the applied overrides to the run's `.hydra/overrides.yaml` (read by the sweep report), replacing earlier
    values of the same keys, so that the file keeps describing the run as it now is."""
    path = run_dir / HYDRA_OVERRIDES
    if not applied or not path.is_file():
        return
    keys = {override_key(override) for override in applied}
    original = yaml.safe_load(path.read_text()) or []
    kept = [override for override in original if override_key(override) not in keys]
    path.write_text(yaml.safe_dump(kept + applied))


def planned_steps(trainer: Trainer) -> int:
    """The optimizer steps this configuration trains for, computed as `Trainer.train` does."""
    args = trainer.args
    if args.max_steps > 0:
        return args.max_steps
    batches = len(trainer.get_train_dataloader())
    per_epoch = max(
        batches // args.gradient_accumulation_steps + int(batches % args.gradient_accumulation_steps > 0), 1
    )
    return math.ceil(args.num_train_epochs * per_epoch)


def training_finished(checkpoint: Path, trainer: Trainer) -> bool:
    """Whether `checkpoint` is at (or past) the last step the current settings plan: resuming would train past it."""
    state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    planned = planned_steps(trainer)
    if state.global_step >= planned:
        logger.info(
            "resume: %s is at step %d of %d planned: training is over, the final evaluation runs "
            "(raise trainer.args.max_steps or num_train_epochs to train further)",
            checkpoint.name,
            state.global_step,
            planned,
        )
        return True
    return False
