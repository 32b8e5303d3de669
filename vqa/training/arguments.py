"""`TrainingArguments` from the config's `trainer.args`, with each key and value checked against the dataclass's own
annotations first (a typo or a wrong type is one line, not a traceback deep in transformers)."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import TrainingArguments

from vqa.errors import ConfigError
from vqa.model.settings import type_name, value_fits

# Set by `training_arguments`, not by `trainer.args`: a value there would be silently replaced.
MANAGED_ARGUMENTS = ("output_dir", "seed", "report_to", "remove_unused_columns", "use_cpu", "label_names")
# Read only by the Trainer's own compute_loss, which VQATrainer replaces with the configured objective: any other
# value would be silently without effect.
UNUSED_ARGUMENTS = {"label_smoothing_factor": 0.0}


def training_arguments(cfg: DictConfig, output_dir: str) -> TrainingArguments:
    """TrainingArguments from `trainer.args` plus the settings this codebase needs to be right."""
    args: dict[str, Any] = OmegaConf.to_container(cfg.trainer.args, resolve=True)  # type: ignore[assignment]
    args.update(
        output_dir=output_dir,
        seed=cfg.seed,
        report_to=list(cfg.logger.report_to),
        # The collator reads raw columns (question text, image path); the Trainer must not drop them.
        remove_unused_columns=False,
        # Without a GPU, also for torchrun ranks: gloo DDP on CPU needs use_cpu, or each rank trains alone.
        use_cpu=not torch.cuda.is_available(),
        dataloader_pin_memory=torch.cuda.is_available(),
        label_names=["labels"],
    )
    if cfg.logger.get("run_name"):
        args["run_name"] = cfg.logger.run_name
    try:
        return TrainingArguments(**args)
    except (TypeError, ValueError) as error:  # a value TrainingArguments refuses (a strategy name, a combination)
        raise ConfigError(f"trainer.args: {error}") from None


def check_training_argument_types(args: dict[str, Any]) -> None:
    """Each `trainer.args` key must be a `TrainingArguments` option and its value of the option's type.

    Raises:
        ConfigError: naming the first unknown key (with the closest option names) or wrongly typed value.
    """
    # `fsdp` is annotated `str | None` so that its legacy strings still parse, but True is its documented value.
    hints = typing.get_type_hints(TrainingArguments) | {"fsdp": bool | str | None}
    options = [field.name for field in dataclasses.fields(TrainingArguments) if field.init]
    for name, value in args.items():
        if name not in options:
            close = difflib.get_close_matches(name, options, n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(f"trainer.args.{name}: not an option of transformers.TrainingArguments{hint}")
        if name in MANAGED_ARGUMENTS:
            raise ConfigError(f"trainer.args.{name}: set by the run itself, not from the config")
        if not value_fits(hints[name], value):
            raise ConfigError(
                f"trainer.args.{name}: got {value!r} ({type(value).__name__}), expected {type_name(hints[name])}"
            )
        if name in UNUSED_ARGUMENTS and value != UNUSED_ARGUMENTS[name]:
            raise ConfigError(
                f"trainer.args.{name}: got {value!r}, but the loss is the objective's (objective=..., "
                f"vqa/training/objectives.py), which does not read it; expected {UNUSED_ARGUMENTS[name]!r}"
            )
