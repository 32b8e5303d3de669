"""The checks a run makes before it builds anything: every setting whose mistake would otherwise show late (after
the data is built) or never. Each is one line (ConfigError) naming the setting, what was found and what was expected.
Model settings are checked by `vqa.model.settings` (which `VQAConfig` calls too), `trainer.args` by their
`TrainingArguments` annotations (`vqa.training.arguments`).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from vqa.errors import ConfigError
from vqa.evaluation.baselines import PRIOR_GROUPINGS
from vqa.model.configuration import VQAConfig
from vqa.model.settings import check_setting_names, model_settings
from vqa.training.arguments import check_training_argument_types, type_name, value_fits
from vqa.training.init_from import FROM_CHECKPOINT

SPLIT_NAMES = ("train", "validation", "test")  # what every `data` target returns
MODEL_SETTINGS = tuple(inspect.signature(model_settings).parameters)  # the settings vqa.model.settings checks
# This codebase's own settings with a type that a wrong value would not reveal until late (trainer.args are checked
# against TrainingArguments' own annotations).
SETTING_TYPES: dict[str, Any] = {
    "seed": int,
    "final_evaluation": bool,
    "shuffled_image_check": bool,
    "feature_cache.enabled": bool,
    "trainer.group_by_image": bool,
    "trainer.num_beams": int,
    "trainer.questions_per_image": int | None,
}


def validate_config(cfg: DictConfig) -> None:
    """Check the settings that would otherwise fail late (after data loading) or silently."""
    for key, kind in SETTING_TYPES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if not value_fits(kind, value):
            raise ConfigError(f"{key}: got {value!r} ({type(value).__name__}), expected {type_name(kind)}")
    if cfg.trainer.num_beams < 1:
        raise ConfigError(f"trainer.num_beams: got {cfg.trainer.num_beams}, expected 1 (greedy) or more")
    # A resumed init_from run's model node records the checkpoint's settings (vqa.training.init_from): nothing to build.
    if FROM_CHECKPOINT not in cfg.model:
        try:
            model_settings(
                **{key: plain(cfg.model.get(key)) for key in MODEL_SETTINGS if cfg.model.get(key) is not None}
            )
            check_setting_names(
                [key for key in cfg.model if key != "_target_"], accepted_model_keys(cfg.model), cfg.model.get("fusion")
            )
        except ValueError as error:
            raise ConfigError(f"model.{error}") from None
    # keys(): `in` on a DictConfig is False for a missing (???) value.
    if "root" in cfg.data.keys() and (OmegaConf.is_missing(cfg.data, "root") or not cfg.data.root):  # noqa: SIM118
        raise ConfigError("data.root: not set; pass data.root=/path/to/vqa (the folder of the official files)")
    args = cfg.trainer.args
    check_training_argument_types(OmegaConf.to_container(args, resolve=True))  # type: ignore[arg-type]
    if args.get("fsdp") and not torch.cuda.is_available():
        # accelerate applies FSDP to multi-GPU runs only; on CPU ranks it would train plain DDP without a word.
        raise ConfigError(
            "trainer.args.fsdp: FSDP shards only across GPUs and this host has no CUDA device (on CPU the Trainer "
            "would silently train plain DDP); use distributed=ddp here, distributed=fsdp on GPUs"
        )
    if args.get("tf32") and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.args.tf32: true needs an NVIDIA GPU (Ampere or newer) and this host has no CUDA device; "
            "use trainer=default (CPU settings), or trainer.args.tf32=null"
        )
    # Their types were checked above (check_training_argument_types): here only the range.
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if name in args and args[name] < 1:
            raise ConfigError(f"trainer.args.{name}: got {args[name]!r}, expected a positive integer")
    if args.get("learning_rate", 1) <= 0:
        raise ConfigError(f"trainer.args.learning_rate: got {args.learning_rate}, expected a positive number")
    for name in ("eval_split", "final_split"):
        if cfg[name] not in SPLIT_NAMES:
            raise ConfigError(f"{name}: got {cfg[name]!r}, expected one of {', '.join(SPLIT_NAMES)}")
    if cfg.eval_split == "test":
        # Evaluations during training choose the best checkpoint, stop early and are what searches maximise.
        raise ConfigError(
            "eval_split: got 'test'; model selection reads the validation split only (evaluation during training, "
            "load_best_model_at_end, searches), and the test split is scored once at the end (final_split)"
        )
    if cfg.trainer.questions_per_image is not None and cfg.trainer.questions_per_image < 1:
        raise ConfigError(f"trainer.questions_per_image: got {cfg.trainer.questions_per_image}, expected >= 1 or null")
    if cfg.get("prior") and cfg.prior.get("by") not in PRIOR_GROUPINGS:
        raise ConfigError(f"prior.by: got {cfg.prior.get('by')!r}, expected one of {', '.join(PRIOR_GROUPINGS)}")
    if cfg.feature_cache.dtype not in ("float16", "float32"):
        raise ConfigError(f"feature_cache.dtype: got {cfg.feature_cache.dtype!r}, expected float16 or float32")


def plain(value: Any) -> Any:
    """A Hydra node as plain Python (lists and dicts); other values unchanged."""
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def accepted_model_keys(model: DictConfig) -> set[str]:
    """The keys the `model` node's builder takes: its own parameters and, when it passes the rest on (`**settings`),
    VQAConfig's settings."""
    builder = get_object(model._target_)
    parameters = inspect.signature(builder).parameters.values()
    accepted = {parameter.name for parameter in parameters if parameter.kind is not parameter.VAR_KEYWORD}
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        accepted |= set(inspect.signature(VQAConfig.__init__).parameters) - {"self", "kwargs"}
    return accepted
