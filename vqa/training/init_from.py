"""`init_from`: train on from a finished run's model and processor, and record the model that actually trains.

The checkpoint holds its own model config, so the `model` group does not build anything. A model setting given on the
command line either applies to the loaded model (`model.freeze`: which components train) or is refused in one line
when it would change the checkpoint's model (a different fusion, gates, LoRA, encoders); a setting equal to the
checkpoint's own is accepted. The run's config.yaml then records the checkpoint's settings as its `model` node
(`from_checkpoint` names the folder), so what is recorded is what ran; a resumed run reads them back from there.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from vqa.errors import ConfigError
from vqa.model.freezing import resolve_freeze
from vqa.model.loading import load_checkpoint, model_card
from vqa.model.modeling import VQAModel
from vqa.model.processing import VQAProcessor
from vqa.training.resume import override_key

logger = logging.getLogger(__name__)
FROM_CHECKPOINT = "from_checkpoint"  # the key of a recorded `model` node: the checkpoint folder it was loaded from
APPLICABLE = ("freeze",)  # model settings that apply to a loaded model (the rest would need another model)


def checkpoint_folder(path: str | Path) -> Path:
    """A run folder's `checkpoint/`, or the folder itself when it is the checkpoint."""
    folder = Path(path)
    return folder / "checkpoint" if (folder / "checkpoint").is_dir() else folder


def load_init_from(path: str | Path) -> tuple[VQAModel, VQAProcessor]:
    """The model (in training mode, on the CPU: the Trainer moves it) and processor of a finished run.

    Raises:
        CheckpointError: not a run's checkpoint (one line, from `load_checkpoint`).
    """
    model, processor = load_checkpoint(checkpoint_folder(path), device="cpu")
    return model.train(), processor


def start_from_trained(cfg: DictConfig, command_line: list[str]) -> tuple[tuple[VQAModel, VQAProcessor], DictConfig]:
    """Load `cfg.init_from`, apply the command line's applicable model settings, refuse the others, and return the
    model and processor with `cfg` whose `model` node records the checkpoint's settings.

    Args:
        command_line: Hydra's task overrides (`model.freeze=encoders`, `model=base`, ...). A resumed run passes
            none: its recorded `model` node already holds what it trained with.

    Raises:
        ConfigError: a model setting that cannot apply to the loaded model (one line naming it).
        CheckpointError: `init_from` is not a run's checkpoint.
    """
    model, processor = load_init_from(cfg.init_from)
    folder = checkpoint_folder(cfg.init_from)
    recorded = FROM_CHECKPOINT in cfg.model
    settings = model_card(model.config)
    wanted: dict[str, Any] = {}
    if recorded:  # a resumed run: the settings it recorded when it started
        wanted = {name: OmegaConf.to_object(cfg.model)[name] for name in APPLICABLE if name in cfg.model}
    for override in [] if recorded else command_line:
        key = override_key(override)
        if key != "model" and not key.startswith("model."):
            continue
        name = key.removeprefix("model.")
        value = OmegaConf.select(cfg, key)
        value = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
        if name in APPLICABLE and not override.startswith("~"):
            wanted[name] = value
        elif key == "model" or select(settings, name) != value:
            raise ConfigError(
                f"{override}: init_from={cfg.init_from} trains that checkpoint's model as it is "
                f"({describe(settings, key)}); only model.{', model.'.join(APPLICABLE)} can change with init_from. "
                "Drop the setting, or train a new model without init_from"
            )
    if "freeze" in wanted:
        try:
            resolve_freeze(wanted["freeze"])
        except ValueError as error:
            raise ConfigError(f"model.{error}") from None
        model.config.freeze = wanted["freeze"]
        model.frozen_components = resolve_freeze(wanted["freeze"])
        model.apply_freeze()
    logger.info("model and processor from %s (init_from; its own config: the model group builds nothing)", folder)
    with open_dict(cfg):
        cfg.model = OmegaConf.create({FROM_CHECKPOINT: str(folder), **model_card(model.config)})
    return (model, processor), cfg


MISSING = object()  # what `select` gives for a setting the checkpoint does not have


def select(settings: dict[str, Any], dotted: str) -> Any:
    """`settings['lora']['alpha']` for 'lora.alpha'; MISSING when there is no such setting."""
    value: Any = settings
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def describe(settings: dict[str, Any], key: str) -> str:
    """What the checkpoint has for an overridden `key` (`model`, `model.fusion`, `model.lora.r`), for the refusal:
    its value, or that of the nearest enclosing setting it has (`model.lora` is None)."""
    if key == "model":
        return "the model group builds nothing"
    parts = key.removeprefix("model.").split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if (value := select(settings, name)) is not MISSING:
            return f"its model.{name} is {value!r}"
    return f"{key} is a setting for building a new model"
