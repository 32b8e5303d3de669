"""`VQATrainer`: the Hugging Face Trainer with image-grouped training batches, the configured objective, complete
checkpoints, and evaluation that generates answers and scores them with the official VQA accuracy."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from transformers import EvalPrediction, PreTrainedModel, Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from vqa.data.benchmark import VQA, Benchmark
from vqa.data.sampling import ImageGroupedSampler
from vqa.data.schema import column
from vqa.errors import DivergenceError
from vqa.evaluation.answering import AnsweredSplit
from vqa.evaluation.scoring import score_split
from vqa.model.encoder_inputs import ENCODER_INPUT_NAMES
from vqa.model.freezing import component_of
from vqa.model.gates import gate_values
from vqa.model.processing import UNDECODABLE_IMAGES, VQAProcessor
from vqa.training.checkpoints import mark_complete
from vqa.training.divergence import diverged_at, non_finite, weights_problem
from vqa.training.objectives import AnswerCrossEntropy, Objective

logger = logging.getLogger(__name__)

GENERATION_INPUTS = ENCODER_INPUT_NAMES  # the batch keys that `generate` reads


def with_image_paths(dataset: Dataset) -> Dataset:
    """Keep images as paths: the collator then decodes each distinct image of a batch once, in a worker."""
    return dataset.cast_column("image", ImageFeature(decode=False))


class VQAMetrics:
    """`compute_metrics`: decodes generated answers and scores them against the bound split (official rules: the VQA
    accuracy, and the benchmark's own metrics beside it)."""

    def __init__(self, processor: VQAProcessor, benchmark: Benchmark = VQA) -> None:
        self.processor = processor
        self.benchmark = benchmark
        self.dataset: Dataset | None = None

    def bind(self, dataset: Dataset) -> None:
        """Score against this split's rows (in evaluation order) from now on."""
        self.dataset = dataset

    def decode(self, generated: np.ndarray) -> list[str]:
        """(N, T) generated ids, padded with -100 by the evaluation loop -> answer strings."""
        pad = self.processor.answer_tokenizer.pad_token_id
        return self.processor.decode_answers(torch.from_numpy(np.where(generated < 0, pad, generated)))

    def __call__(self, evaluation: EvalPrediction) -> dict[str, float]:
        if self.dataset is None:
            return {}
        return score_split(self.dataset, self.decode(evaluation.predictions), self.benchmark)


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
        learning_rate_scales: a multiplier of `args.learning_rate` per component (`vqa.model.freezing.COMPONENTS`);
            a component not named keeps the base rate. The schedule scales every rate alike.
        benchmark: whose official metrics each evaluation logs beside the VQA accuracy (`vqa.data.benchmark`).
    """

    def __init__(
        self,
        *args: Any,
        processor: VQAProcessor,
        objective: Objective | None = None,
        group_by_image: bool = True,
        questions_per_image: int | None = None,
        num_beams: int = 1,
        learning_rate_scales: Mapping[str, float] | None = None,
        benchmark: Benchmark = VQA,
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
        self.learning_rate_scales = dict(learning_rate_scales or {})
        # Set before evaluation starts: the Trainer only generates predictions when compute_metrics exists.
        self.compute_metrics = self.vqa_metrics = VQAMetrics(processor, benchmark)
        self.train_start: float | None = None
        # Rows whose image file could not be decoded in the DataLoader (trained on without a loss, answered from a
        # blank image), counted on this process; reported in the run summary and metrics.json.
        self.undecodable_images = 0
        # The first non-finite training loss since the last optimizer step ('nan', 'inf'), if any: the run stops at
        # that step's gradient check (vqa.training.divergence), on every rank alike.
        self.non_finite_loss: str | None = None

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

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """The Trainer's step (forward and backward), noting a non-finite loss; a reward's `DivergenceError` gets the
        step and the last good checkpoint."""
        try:
            loss = super().training_step(model, inputs, num_items_in_batch)
        except DivergenceError as error:
            raise self.diverged(str(error)) from None
        if self.non_finite_loss is None:
            # One more host sync per micro-batch; the Trainer's own logging_nan_inf_filter already makes one.
            self.non_finite_loss = non_finite(loss)
        return loss

    def _get_grad_norm(self, model: torch.nn.Module, grad_norm: torch.Tensor | float | None = None) -> Any:
        """The Trainer's gradient norm (of every optimizer step, before `optimizer.step()`), checked: a non-finite
        loss or gradient norm stops the run here, so the weights never take a non-finite update. Under fp16 the
        GradScaler skips overflowing steps by design, so there only the loss is checked."""
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        # Every rank takes part in the collective before any raises.
        on_some_rank = self.args.world_size > 1 and self.loss_not_finite_on_some_rank()
        if self.non_finite_loss is not None:
            raise self.diverged(f"the loss is {self.non_finite_loss}")
        if on_some_rank:
            raise self.diverged("the loss is not finite on another rank")
        if self.accelerator.scaler is None and (value := non_finite(grad_norm)) is not None:
            raise self.diverged(f"the gradient norm is {value}")
        return grad_norm

    def loss_not_finite_on_some_rank(self) -> bool:
        """Whether any rank saw a non-finite loss since the last step: a collective, so that every rank stops at the
        same step (a rank that raised alone would leave the others waiting in the next all-reduce).
        One scalar per optimizer step, beside the gradients' own all-reduce."""
        flag = torch.tensor([float(self.non_finite_loss is not None)], device=self.args.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def diverged(self, cause: str, step: int | None = None) -> DivergenceError:
        """The one-line error for divergence at `step` (default: the optimizer step in progress)."""
        step = self.state.global_step + 1 if step is None else step
        return diverged_at(step, cause, Path(self.args.output_dir))

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """The Trainer's checkpoint, then its manifest (`vqa.training.checkpoints.mark_complete`), then the rotation
        of old checkpoints: an older complete checkpoint is deleted only once the new one is known to be whole.
        Weights that are not finite are never saved: the run stops instead."""
        if (problem := weights_problem(model)) is not None:
            raise self.diverged(f"{problem} after it", step=self.state.global_step)
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

    def answer_split(self, split: Dataset, name: str) -> AnsweredSplit:
        """The model's answers to every question of `split`, in its order, and its teacher-forced loss where the split
        has answers. `name` prefixes the Trainer's metrics (`test`, `shuffled`, `eval`). Every rank takes part.

        The answers come from the generated ids themselves: the Trainer calls compute_metrics only for a split with
        labels, so a split without answers (VQA v2 test-dev) would leave the metric with the previous split's."""
        prediction = self.predict(with_image_paths(split), metric_key_prefix=name)
        return AnsweredSplit(self.vqa_metrics.decode(prediction.predictions), prediction.metrics.get(f"{name}_loss"))

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """The Trainer's training; the final weights are checked (the last update could make them non-finite)."""
        self.train_start = time.perf_counter()
        output = super().train(*args, **kwargs)
        if (problem := weights_problem(self.model)) is not None:
            raise self.diverged(f"{problem} after it", step=self.state.global_step)
        return output

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

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer, with one parameter group per component and weight-decay choice when components
        have their own learning rate (`learning_rate_scales`)."""
        if self.optimizer is not None or not self.learning_rate_scales:
            return super().create_optimizer(model)
        model = self.model if model is None else model
        decayed = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                groups.setdefault((component_of(name), name in decayed), []).append(parameter)
        optimizer_class, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_class(
            [
                {
                    "params": parameters,
                    "weight_decay": self.args.weight_decay if decay else 0.0,
                    "lr": self.args.learning_rate * self.learning_rate_scales.get(component, 1.0),
                }
                for (component, decay), parameters in groups.items()
            ],
            **optimizer_kwargs,
        )
        return self.optimizer

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
