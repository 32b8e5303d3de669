"""The checks a run makes before it builds anything: every setting whose mistake would otherwise show late (after
the data is built) or never. Each is one line (ConfigError) naming the setting, what was found and what was expected.
Model settings are checked by `vqa.model.settings` (which `VQAConfig` calls too), `trainer.args` by their
`TrainingArguments` annotations (`vqa.training.arguments`), the objective and any `_target_` node in it (its reward)
by the signature and annotations of the class or function it names (`vqa.target_checks`).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from vqa.errors import ConfigError, UserError
from vqa.evaluation.baselines import PRIOR_GROUPINGS
from vqa.model.configuration import VQAConfig
from vqa.model.freezing import COMPONENTS
from vqa.model.fusion import fusion_class
from vqa.model.pretrained import check_local_components
from vqa.model.settings import (
    annotations_of,
    check_setting_names,
    check_settings_in_use,
    check_values,
    model_settings,
    resampler_settings,
    type_name,
    value_fits,
)
from vqa.retrieval.attach import check_retrieval_options
from vqa.target_checks import (
    check_target_node,
    imported_target,
    is_hydra_key,
    plain,
    qualified_name,
    takes_any_keyword,
)
from vqa.training.arguments import check_training_argument_types
from vqa.training.init_from import FROM_CHECKPOINT

SPLIT_NAMES = ("train", "validation", "test")  # what every `data` target returns
MODEL_SETTINGS = tuple(inspect.signature(model_settings).parameters)  # the settings vqa.model.settings checks
IN_USE_SETTINGS = tuple(inspect.signature(check_settings_in_use).parameters)  # and whether they have an effect
COMPONENT_KEYS = tuple(inspect.signature(check_local_components).parameters)  # pretrained components by name or folder
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
        check_model(cfg.model, pretrained_components=not cfg.get("init_from"))
    if cfg.get("objective") is not None:
        check_target_node(cfg.objective, "objective")
        check_objective_head(cfg)
    check_retrieval(cfg)
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
    check_learning_rate_scales(cfg.trainer.get("learning_rate_scales"))
    check_stop_at(cfg.trainer.get("stop_at"), args.get("eval_strategy"))
    if cfg.trainer.questions_per_image is not None and cfg.trainer.questions_per_image < 1:
        raise ConfigError(f"trainer.questions_per_image: got {cfg.trainer.questions_per_image}, expected >= 1 or null")
    if cfg.get("prior") and cfg.prior.get("by") not in PRIOR_GROUPINGS:
        raise ConfigError(f"prior.by: got {cfg.prior.get('by')!r}, expected one of {', '.join(PRIOR_GROUPINGS)}")
    if cfg.feature_cache.dtype not in ("float16", "float32"):
        raise ConfigError(f"feature_cache.dtype: got {cfg.feature_cache.dtype!r}, expected float16 or float32")


def check_model(model: DictConfig, pretrained_components: bool = True) -> None:
    """The `model` node: every value's type and range (from the builder's and `VQAConfig`'s annotations), unknown
    keys, the settings `vqa.model.settings` checks, settings the model would ignore, and (with
    `pretrained_components`) each component named by a folder, read and checked now (`check_local_components`).

    Raises:
        ConfigError, CheckpointError: one line naming the first wrong `model.` setting.
    """
    builder = imported_target(model, "model")
    values = {key: plain(model[key]) for key in model if not is_hydra_key(key)}
    try:
        check_values(values, model_setting_hints(builder))  # first: the checks below assume the types
        check_setting_names(values, accepted_model_keys(model), values.get("fusion", "tokens"))
        model_settings(**{key: values[key] for key in MODEL_SETTINGS if values.get(key) is not None})
        check_settings_in_use(**{key: values[key] for key in IN_USE_SETTINGS if values.get(key) is not None})
    except UserError:
        raise
    except ValueError as error:
        raise ConfigError(f"model.{error}") from None
    components = {key: values[key] for key in COMPONENT_KEYS if values.get(key) is not None}
    decoder = check_local_components(**components) if pretrained_components and components else None
    # The resampler's heads must divide the decoder width: the tiny preset's hidden_size, a pretrained GPT-2's n_embd.
    width = decoder.n_embd if decoder is not None else values.get("hidden_size")
    if "resampler" in fusion_class(values.get("fusion", "tokens")).reads_settings and isinstance(width, int):
        try:
            resampler_settings(values.get("resampler"), width)
        except ValueError as error:
            raise ConfigError(f"model.{error}") from None


def model_setting_hints(builder: Any) -> dict[str, Any]:
    """The annotated types of the `model` node's keys: the builder's parameters and, when it passes the rest on
    (`**settings`), VQAConfig's."""
    hints = dict(annotations_of(builder))
    if takes_any_keyword(inspect.signature(builder).parameters):
        hints = {**annotations_of(VQAConfig), **hints}
    return hints


def accepted_model_keys(model: DictConfig) -> set[str]:
    """The keys the `model` node's builder takes: its own parameters and, when it passes the rest on (`**settings`),
    VQAConfig's settings."""
    builder = get_object(model._target_)
    parameters = inspect.signature(builder).parameters.values()
    accepted = {parameter.name for parameter in parameters if parameter.kind is not parameter.VAR_KEYWORD}
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters):
        accepted |= set(inspect.signature(VQAConfig.__init__).parameters) - {"self", "kwargs"}
    return accepted


def check_learning_rate_scales(scales: Any) -> None:
    """`trainer.learning_rate_scales`: a mapping from component names to positive multipliers (or nothing)."""
    if scales is None:
        return
    if not isinstance(scales, DictConfig | dict):
        raise ConfigError(
            f"trainer.learning_rate_scales: got {scales!r}, expected a mapping such as {{image_encoder: 3.0}}"
        )
    for component, scale in scales.items():
        if component not in COMPONENTS:
            raise ConfigError(
                f"trainer.learning_rate_scales: unknown component {component!r}; "
                f"expected some of {', '.join(COMPONENTS)}"
            )
        if isinstance(scale, bool) or not isinstance(scale, int | float) or scale <= 0:
            raise ConfigError(f"trainer.learning_rate_scales.{component}: got {scale!r}, expected a positive number")


def check_stop_at(stop_at: Any, eval_strategy: str | None) -> None:
    """`trainer.stop_at`: a target in (0, 100] read from evaluations that happen, and a positive count."""
    if stop_at is None or stop_at.get("vqa_accuracy") is None:
        return
    target, evaluations = stop_at.vqa_accuracy, stop_at.get("evaluations", 1)
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target <= 100:
        raise ConfigError(f"trainer.stop_at.vqa_accuracy: got {target!r}, expected a VQA accuracy in (0, 100] or null")
    if isinstance(evaluations, bool) or not isinstance(evaluations, int) or evaluations < 1:
        raise ConfigError(f"trainer.stop_at.evaluations: got {evaluations!r}, expected a positive integer")
    if eval_strategy in (None, "no"):
        raise ConfigError(
            "trainer.stop_at.vqa_accuracy: set, but trainer.args.eval_strategy is 'no', so no evaluation would ever "
            "reach it; use eval_strategy=epoch or steps, or stop_at.vqa_accuracy=null"
        )


def check_retrieval(cfg: DictConfig) -> None:
    """`retrieval` and `model.passages` go together: passages retrieved for a model that cannot read them, or a model
    that reads passages with no retrieval to give them, would silently train something else than was asked."""
    passages = OmegaConf.select(cfg, "model.passages", default="none")
    retrieval = cfg.get("retrieval")
    if FROM_CHECKPOINT in cfg.model or cfg.get("prior"):
        return  # a checkpoint's model says what it reads; a prior reads no passages
    if retrieval and passages == "none":
        raise ConfigError(
            "model.passages: none, but retrieval is on; expected trained or frozen (retrieval=bm25|dense set trained)"
        )
    if not retrieval and passages not in (None, "none"):
        raise ConfigError(
            f"model.passages: {passages!r} reads retrieved passages, but retrieval is off; add retrieval=bm25 or "
            "retrieval=dense (or set model.passages=none)"
        )
    if retrieval:  # the fusion's part is checked with the model's settings (vqa.model.settings.model_settings)
        check_retrieval_options(retrieval.get("passages"), retrieval.get("k"))


def check_objective_head(cfg: DictConfig) -> None:
    """The objective trains the model's head: the classifier takes `objective=classifier`, the generator the others.
    An objective class names the heads it trains in `heads` (the generator when it does not)."""
    head = OmegaConf.select(cfg, "model.head", default="generator")
    objective = imported_target(cfg.objective, "objective")
    heads = getattr(objective, "heads", ("generator",))
    if head not in heads:
        choice = "objective=classifier" if head == "classifier" else "an objective for it (answer, soft, rl)"
        raise ConfigError(
            f"objective: {qualified_name(objective)} trains the {' or '.join(heads)} head, but model.head is {head!r}; "
            f"use {choice}, or head=classifier for the classifier with its objective"
        )
