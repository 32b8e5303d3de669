"""From a composed Hydra config to a trained model: the Trainer subclass, generation-based evaluation, checks.

`train.py` stays short; this module holds what it calls.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import time
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from omegaconf import DictConfig, OmegaConf
from transformers import EvalPrediction, PreTrainedModel, Trainer, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from vqa.data.sampling import ImageGroupedSampler
from vqa.data.schema import column, has_answers
from vqa.errors import ConfigError
from vqa.evaluation.baselines import PRIOR_GROUPINGS
from vqa.evaluation.metrics import ScoredQuestion, vqa_accuracy
from vqa.model.configuration import INPUTS
from vqa.model.encoder_inputs import ENCODER_INPUT_NAMES
from vqa.model.freezing import resolve_freeze
from vqa.model.fusion import fusion_class
from vqa.model.gates import gate_values
from vqa.model.lora import lora_settings
from vqa.model.processing import UNDECODABLE_IMAGES, VQAProcessor
from vqa.model.resampler import resampler_settings
from vqa.training.checkpoints import mark_complete
from vqa.training.objectives import AnswerCrossEntropy, Objective

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "validation", "test")  # what every `data` target returns
GENERATION_INPUTS = ENCODER_INPUT_NAMES  # the batch keys that `generate` reads

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
# Set by this module, not by `trainer.args`: a value there would be silently replaced.
MANAGED_ARGUMENTS = ("output_dir", "seed", "report_to", "remove_unused_columns", "use_cpu", "label_names")


def validate_config(cfg: DictConfig) -> None:
    """Check the settings that would otherwise fail late (after data loading) or silently."""
    for key, kind in SETTING_TYPES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if not _value_fits(kind, value):
            raise ConfigError(f"{key}: got {value!r} ({type(value).__name__}), expected {_type_name(kind)}")
    if cfg.trainer.num_beams < 1:
        raise ConfigError(f"trainer.num_beams: got {cfg.trainer.num_beams}, expected 1 (greedy) or more")
    try:
        resolve_freeze(
            OmegaConf.to_object(cfg.model.freeze) if OmegaConf.is_config(cfg.model.freeze) else cfg.model.freeze
        )
    except ValueError as error:
        raise ConfigError(f"model.{error}") from None
    try:
        fusion_class(cfg.model.fusion)
        lora_settings(OmegaConf.to_container(cfg.model.lora) if cfg.model.get("lora") is not None else None)
        resampler_settings(OmegaConf.to_container(cfg.model.resampler) if cfg.model.get("resampler") else None)
    except ValueError as error:
        raise ConfigError(f"model.{error}") from None
    if cfg.model.get("inputs", "both") not in INPUTS:
        raise ConfigError(f"model.inputs: got {cfg.model.inputs!r}, expected one of {', '.join(INPUTS)}")
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
        if not _value_fits(hints[name], value):
            raise ConfigError(
                f"trainer.args.{name}: got {value!r} ({type(value).__name__}), expected {_type_name(hints[name])}"
            )


def _value_fits(hint: Any, value: Any) -> bool:
    """Whether `value` (from YAML or the command line) has the type `hint`; enums and containers are left to
    TrainingArguments' own checks."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_value_fits(option, value) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(option) for option in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def for_training(dataset: Dataset) -> Dataset:
    """Keep images as paths: the collator then decodes each distinct image of a batch once, in a worker."""
    return dataset.cast_column("image", ImageFeature(decode=False))


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


class VQAMetrics:
    """`compute_metrics`: decodes generated answers and scores them against the bound split (official rules).

    `predictions` keeps the decoded answers of the last evaluation, in the split's order.
    """

    def __init__(self, processor: VQAProcessor) -> None:
        self.processor = processor
        self.predictions: list[str] = []
        self.dataset: Dataset | None = None

    def bind(self, dataset: Dataset) -> None:
        """Score against this split's rows (in evaluation order) from now on."""
        self.dataset = dataset

    def decode(self, generated: np.ndarray) -> list[str]:
        """(N, T) generated ids, padded with -100 by the evaluation loop -> answer strings."""
        pad = self.processor.answer_tokenizer.pad_token_id
        return self.processor.decode_answers(torch.from_numpy(np.where(generated < 0, pad, generated)))

    def __call__(self, evaluation: EvalPrediction) -> dict[str, float]:
        self.predictions = self.decode(evaluation.predictions)
        return {} if self.dataset is None else score_split(self.dataset, self.predictions)


def score_split(dataset: Dataset, predictions: Sequence[str]) -> dict[str, float]:
    """Official VQA accuracy of `predictions` (in the split's order) against the split's human answers:
    `vqa_accuracy` and one `vqa_accuracy_<answer type>` per answer type; {} for a split without answers (a test
    split: predictions only)."""
    if not has_answers(dataset):
        return {}
    accuracy = official_accuracy(dataset, predictions)
    metrics = {"vqa_accuracy": accuracy["overall"]}
    for answer_type, value in accuracy["perAnswerType"].items():
        metrics[f"vqa_accuracy_{metric_name(answer_type)}"] = value
    return metrics


def official_accuracy(dataset: Dataset, predictions: Sequence[str]) -> dict[str, Any]:
    """The official tool's accuracy dict (`overall`, `perQuestionType`, `perAnswerType`, percent) of `predictions`
    (in the split's order) against a split with human answers."""
    return vqa_accuracy(
        ScoredQuestion(qid, prediction, human, str(answer_type), str(question_type))
        for qid, prediction, human, answer_type, question_type in zip(
            column(dataset, "question_id"),
            predictions,
            column(dataset, "answers"),
            column(dataset, "answer_type"),
            column(dataset, "question_type"),
            strict=True,
        )
    )


def metric_name(text: str) -> str:
    """'yes/no' -> 'yes_no': metric keys without path separators (TensorBoard and wandb treat '/' as a group)."""
    return "".join(char if char.isalnum() else "_" for char in text)


def load_checkpoint_weights(model: PreTrainedModel, folder: Path) -> None:
    """Load a Trainer checkpoint's weights into `model` through `from_pretrained`, every key accounted for.

    `from_pretrained` maps the legacy key names that `save_pretrained` writes (ViT's `encoder.layer.N...`) to the
    module names of the installed transformers; a plain `load_state_dict` of the file does not.
    """
    loaded = type(model).from_pretrained(folder)
    model.load_state_dict(loaded.state_dict(), strict=True)


class VQATrainer(Trainer):
    """The HF Trainer with image-grouped training batches and evaluation that generates answers.

    Args:
        processor: decodes generated answers for the metric.
        objective: what training minimises (`vqa.training.objectives`; the answer cross-entropy by default).
        group_by_image: sample the questions of an image together (see `ImageGroupedSampler`).
        questions_per_image: the largest such group (None: all of an image's questions).
        num_beams: 1 for greedy decoding during evaluation.
    """

    def __init__(
        self,
        *args: Any,
        processor: VQAProcessor,
        objective: Objective | None = None,
        group_by_image: bool = True,
        questions_per_image: int | None = None,
        num_beams: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.processor = processor
        self.objective = objective or AnswerCrossEntropy()
        if hasattr(self.objective, "bind"):  # after super().__init__: the model is on its device
            self.objective.bind(self.model, processor)
        self.objective_averages_own_batch = getattr(self.objective, "averages_own_batch", False)
        if self.objective_averages_own_batch:
            self.loss_is_scaled_for_ga = False  # the Trainer divides the loss by the accumulation steps
        self.group_by_image = group_by_image
        self.questions_per_image = questions_per_image
        self.num_beams = num_beams
        # Set before evaluation starts: the Trainer only generates predictions when compute_metrics exists.
        self.compute_metrics = self.vqa_metrics = VQAMetrics(processor)
        self.train_start: float | None = None
        # Rows whose image file could not be decoded in the DataLoader (trained on without a loss, answered from a
        # blank image), counted on this process; reported in the run summary and metrics.json.
        self.undecodable_images = 0

    def _count_undecodable(self, inputs: dict[str, Any]) -> None:
        # The collator adds the key only to batches that had such a row: no device sync on ordinary steps.
        count = inputs.pop(UNDECODABLE_IMAGES, None)
        if count is not None:
            self.undecodable_images += int(count.sum())

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        """The configured objective's loss. Like the Trainer's own: a loss divided by the token count of all ranks
        is multiplied by the number of ranks, because DDP averages the ranks' gradients. A mean over the
        micro-batch (an objective with `averages_own_batch`) needs neither: the Trainer divides it by the
        accumulation steps."""
        self._count_undecodable(inputs)
        loss, outputs = self.objective(model, inputs, num_items_in_batch)
        divided_by_all_tokens = self.args.average_tokens_across_devices and num_items_in_batch is not None
        if divided_by_all_tokens and not self.objective_averages_own_batch:
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """The Trainer's checkpoint, then its manifest (`vqa.training.checkpoints.mark_complete`), then the rotation
        of old checkpoints: an older complete checkpoint is deleted only once the new one is known to be whole."""
        save_total_limit = self.args.save_total_limit
        self.args.save_total_limit = None  # rotation below, after the manifest
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = save_total_limit
        self.accelerator.wait_for_everyone()  # every rank's RNG state is written
        run_dir = Path(self._get_output_dir(trial=trial))
        if self.args.should_save:
            mark_complete(run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            rotate_checkpoints(
                output_dir=str(run_dir),
                save_total_limit=save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )

    def train(self, *args: Any, **kwargs: Any) -> Any:
        self.train_start = time.perf_counter()
        return super().train(*args, **kwargs)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Every log entry (training loss, evaluation) also gets `elapsed_seconds` since `train()` began, so that
        accuracy can be plotted against wall time (time to accuracy); a resumed run counts from its restart."""
        if self.train_start is not None:
            logs = {**logs, "elapsed_seconds": round(time.perf_counter() - self.train_start, 1)}
        if "loss" in logs:  # a training log entry: also where the cross-attention gates stand (if any)
            logs = {**logs, **gate_values(self.accelerator.unwrap_model(self.model).decoder)}
            if hasattr(self.objective, "log_values"):  # such as the RL objective's mean reward
                logs = {**logs, **self.objective.log_values()}
        super().log(logs, *args, **kwargs)

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> torch.utils.data.Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.group_by_image:
            return super()._get_train_sampler(dataset)
        return ImageGroupedSampler(column(dataset, "image_id"), self.questions_per_image, seed=self.args.seed)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        # transformers 5.23's Trainer loads the checkpoint file with a plain load_state_dict: the ViT weights, saved
        # under legacy names, match nothing, it only warns, and the run goes on from a random image encoder.
        load_checkpoint_weights(model if model is not None else self.model, Path(resume_from_checkpoint))

    def _load_best_model(self) -> None:
        # Same trap as resuming: the Trainer's own loader (load_state_dict, strict=False) would keep the last epoch's
        # ViT weights, because the checkpoint stores them under legacy names, and only warn.
        logger.info("loading the best checkpoint %s (%s)", self.state.best_model_checkpoint, self.state.best_metric)
        load_checkpoint_weights(self.model, Path(self.state.best_model_checkpoint))

    def evaluation_loop(self, dataloader: Any, *args: Any, **kwargs: Any) -> Any:
        # The metric needs the split's human answers: bind it to whichever split is being evaluated.
        self.vqa_metrics.bind(dataloader.dataset)
        return super().evaluation_loop(dataloader, *args, **kwargs)

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: Mapping[str, torch.Tensor],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Teacher-forced loss (when labels exist) and, unless only the loss is wanted, generated answers."""
        inputs = self._prepare_inputs(inputs)
        self._count_undecodable(inputs)
        # The model's own inputs only: a batch may carry more for the objective (soft targets, texts).
        inputs = {key: inputs[key] for key in (*GENERATION_INPUTS, "labels") if key in inputs}
        labels = inputs.get("labels")
        loss = None
        with torch.no_grad():
            if labels is not None:
                with self.compute_loss_context_manager():
                    loss = model(**inputs).loss.detach()
            if prediction_loss_only:
                return loss, None, None
            generation_inputs = {key: inputs[key] for key in GENERATION_INPUTS if key in inputs}
            with self.compute_loss_context_manager():
                generated = self.accelerator.unwrap_model(model).generate(**generation_inputs, num_beams=self.num_beams)
        return loss, generated, labels
