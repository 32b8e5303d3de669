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


def start_from_trained(
    cfg: DictConfig, changes: dict[str, Any] | None, command_line: list[str] = ()
) -> tuple[tuple[VQAModel, VQAProcessor], DictConfig]:
    """Load `cfg.init_from`, apply the command line's applicable model settings, refuse the others, and return the
    model and processor with `cfg` whose `model` node records the checkpoint's settings.

    Args:
        changes: the `model` settings this command line changed (`model_changes`), whether directly
            (`model.freeze=encoders`) or through a group (`variant=lora_decoder`, `experiment=...`); None for a
            resumed run, whose recorded `model` node already holds what it trained with.
        command_line: Hydra's task overrides, named in a refusal.

    Raises:
        ConfigError: a model setting that cannot apply to the loaded model (one line naming it).
        CheckpointError: `init_from` is not a run's checkpoint.
    """
    model, processor = load_init_from(cfg.init_from)
    folder = checkpoint_folder(cfg.init_from)
    settings = model_card(model.config)
    if changes is None:  # a resumed run: the applicable settings it recorded when it started
        recorded = OmegaConf.to_object(cfg.model)
        wanted = {name: recorded[name] for name in APPLICABLE if name in recorded}
    else:
        wanted = {name: value for name, value in changes.items() if name in APPLICABLE}
        for name, value in changes.items():
            if name not in APPLICABLE and select(settings, name) != value:
                given = [override for override in command_line if override_key(override) != "init_from"]
                raise ConfigError(
                    f"model.{name}: {value!r} from the command line ({' '.join(given)}), but init_from="
                    f"{cfg.init_from} trains that checkpoint's model as it is ({describe(settings, name)}); only "
                    f"model.{', model.'.join(APPLICABLE)} can change with init_from. Drop the setting, or train a new "
                    "model without init_from"
                )
    if "freeze" in wanted:
        try:
            model.set_freeze(wanted["freeze"])
        except ValueError as error:
            raise ConfigError(f"model.{error}") from None
    logger.info("model and processor from %s (init_from; its own config: the model group builds nothing)", folder)
    with open_dict(cfg):
        cfg.model = OmegaConf.create({FROM_CHECKPOINT: str(folder), **model_card(model.config)})
    return (model, processor), cfg


def model_changes(model: DictConfig, default_model: DictConfig) -> dict[str, Any]:
    """The settings in which `model` (composed from the command line) differs from `default_model` (composed without
    it), leaf by leaf: dotted key -> value (None for a removed one). Lists are leaves."""
    given, default = leaves(OmegaConf.to_object(model)), leaves(OmegaConf.to_object(default_model))
    changed = {key: value for key, value in given.items() if key not in default or default[key] != value}
    return changed | {key: None for key in default if key not in given}


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """{'lora.r': 8, 'fusion': 'tokens'} from {'lora': {'r': 8}, 'fusion': 'tokens'}; an empty mapping is a leaf."""
    if not isinstance(node, dict) or (prefix and not node):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for name, child in node.items():
        flat |= leaves(child, f"{prefix}.{name}" if prefix else str(name))
    return flat


MISSING = object()  # what `select` gives for a setting the checkpoint does not have


def select(settings: dict[str, Any], dotted: str) -> Any:
    """`settings['lora']['alpha']` for 'lora.alpha'; MISSING when there is no such setting."""
    value: Any = settings
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def describe(settings: dict[str, Any], name: str) -> str:
    """What the checkpoint has for a changed setting (`fusion`, `lora.r`), for the refusal: its value, or that of the
    nearest enclosing setting it has (`model.lora` is None)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if (value := select(settings, name)) is not MISSING:
            return f"its model.{name} is {value!r}"
    return f"model.{name} is a setting for building a new model"
