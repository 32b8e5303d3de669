"""Training objectives: what the Trainer minimises for a batch.

An objective is a callable `(model, batch, num_items_in_batch) -> (loss, model output)`, chosen by the Hydra group
`objective` (`objective=answer`, the default) and called by `VQATrainer.compute_loss`. `model` is what the Trainer
trains (possibly wrapped by DDP: call it, do not reach into it, so that gradients are synchronised); `batch` is the
collator's batch; `num_items_in_batch` is the Trainer's count of label tokens over all micro-batches of an
optimizer step (None outside training), by which a token-summed loss is divided so that gradient accumulation and
DDP average over tokens exactly.

An objective may also define `batch_extras(processor, rows, batch, undecodable)` (the batch keys it needs beyond the
model inputs; `vqa.model.processing.VQACollator` calls it for each batch), `bind(model, processor)` (called once by
the trainer, before training), `log_values()` (numbers added to each training log entry) and
`averages_own_batch = True` (its loss is a mean over its own micro-batch, not divided by `num_items_in_batch`: the
trainer then divides by the accumulation steps).

`VQAModel.forward` still returns `answer_cross_entropy` when given `labels`, for Hugging Face compatibility; the
evaluation loss (`eval_loss`) is that one whatever the objective, so it compares across objectives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn

from vqa.errors import ConfigError
from vqa.evaluation.answer_coverage import official_answer_scores
from vqa.model.encoder_inputs import EncoderInputs
from vqa.model.loss import answer_cross_entropy, per_label_token, sequence_cross_entropy
from vqa.model.processing import VQAProcessor
from vqa.training.soft_targets import ANSWER_EXAMPLE, ANSWER_LABELS, ANSWER_WEIGHTS, soft_target_batch

LOSS_WEIGHTS = "loss_weights"  # batch key of AnswerCrossEntropy.batch_extras: (B,) a weight per example

Objective = Callable[[nn.Module, Mapping[str, torch.Tensor], int | torch.Tensor | None], tuple[torch.Tensor, Any]]


def teacher_forced(model: nn.Module, inputs: EncoderInputs, labels: torch.LongTensor) -> Any:
    """The model's output (logits (B, T, V)) when its decoder reads `labels` (B, T) `answer EOS` teacher-forced.

    The forward pass goes through `model` as given (a DDP wrapper synchronises gradients); only the label shifting
    uses the model inside it. Only the encoder inputs are passed: a batch may carry more for the objective.
    """
    decoder_input_ids, decoder_attention_mask = extract_model_from_parallel(model).decoder_inputs_from_labels(labels)
    return model(
        **inputs.as_kwargs(), decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask
    )


class AnswerCrossEntropy:
    """Teacher-forced cross-entropy of the reference answer's tokens and EOS (`labels`: `answer EOS`, -100 padded).

    Args:
        answer_type_weights: a loss weight per answer type (the dataset's `answer_type`: `yes/no`, `number`,
            `other`); a type not named weighs 1. A question's tokens are multiplied by its weight, and the sum is
            still divided by the label tokens, so weights below 1 shrink the loss. Why: on easy-VQA most questions
            are yes/no, and they give the image encoder no consistent signal for shape until it already sees
            shape; at a weight of 0.25 the open questions ("what shape ...") teach it shape about twice as soon
            (docs/time-to-accuracy.md).
    """

    def __init__(self, answer_type_weights: Mapping[str, float] | None = None) -> None:
        self.check_options({"answer_type_weights": answer_type_weights})
        self.answer_type_weights = {str(name): float(weight) for name, weight in (answer_type_weights or {}).items()}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Refuse, in one line (ConfigError), a weight that is not a finite number >= 0. The run's checks call it
        before anything is built; `__init__` too."""
        for name, weight in (options.get("answer_type_weights") or {}).items():
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight < math.inf:
                raise ConfigError(
                    f"objective.answer_type_weights.{name}: got {weight!r}, expected a number >= 0 (a loss weight)"
                )

    def batch_extras(
        self, processor: VQAProcessor, rows: list[dict[str, Any]], batch: dict[str, Any], undecodable: list[int]
    ) -> dict[str, Any]:
        """`loss_weights` (B,): each example's answer-type weight, for a batch with labels when weights are set."""
        del processor, undecodable  # rows without their image have no label tokens: their weight multiplies 0
        if not self.answer_type_weights or "labels" not in batch:
            return {}
        weights = [self.answer_type_weights.get(row["answer_type"], 1.0) for row in rows]
        return {LOSS_WEIGHTS: torch.tensor(weights, dtype=torch.float32)}

    def __call__(
        self,
        model: nn.Module,
        batch: Mapping[str, torch.Tensor],
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Any]:
        labels = batch["labels"]
        outputs = teacher_forced(model, EncoderInputs.pick(batch), labels)
        if LOSS_WEIGHTS not in batch:
            return answer_cross_entropy(outputs.logits, labels, num_items_in_batch), outputs
        total = (sequence_cross_entropy(outputs.logits, labels) * batch[LOSS_WEIGHTS]).sum()
        return per_label_token(total, labels, num_items_in_batch), outputs


class SoftAnswerCrossEntropy:
    """The weighted sum of the sequence cross-entropies of every distinct human answer (`vqa.training.soft_targets`:
    weight = the answer's official VQA score, normalised per question), divided by the reference answers' token count
    like `AnswerCrossEntropy`; with ten agreeing humans it is exactly that objective.

    The encoders run once per distinct question and image; only the decoder runs once per target answer.
    """

    @staticmethod
    def batch_extras(
        processor: VQAProcessor, rows: list[dict[str, Any]], batch: dict[str, Any], undecodable: list[int]
    ) -> dict[str, Any]:
        """Every distinct human answer of each example with its weight (`soft_target_batch`), for a batch with labels
        (rows without their image get no target)."""
        if "labels" not in batch:
            return {}
        return soft_target_batch(processor, [row["answers"] for row in rows], undecodable)

    def __call__(
        self,
        model: nn.Module,
        batch: Mapping[str, torch.Tensor],
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Any]:
        if ANSWER_LABELS not in batch:
            raise ValueError(
                "objective=soft: the batch has no soft targets; build the collator with "
                "VQACollator(..., batch_extras=objective.batch_extras)"
            )
        labels, weights = batch[ANSWER_LABELS], batch[ANSWER_WEIGHTS]  # (A, T), (A,)
        outputs = teacher_forced(model, EncoderInputs.pick(batch).select_examples(batch[ANSWER_EXAMPLE]), labels)
        total = (sequence_cross_entropy(outputs.logits, labels) * weights).sum()
        return per_label_token(total, batch["labels"], num_items_in_batch), outputs


ANSWER_SCORES = "answer_scores"  # batch key of AnswerClassification.batch_extras: (B, A) official score per answer
SCORED_ROWS = "scored_rows"  # (B,) 1 for rows the soft loss counts (0: the row's image could not be decoded)
ClassifierLoss = Literal["soft_bce", "cross_entropy"]


class AnswerClassification:
    """For `model.head=classifier` (`vqa.model.classifier`): the answer scores (B, A) against the human answers.

    Args:
        loss: `"soft_bce"`, the standard VQA v2 recipe: binary cross-entropy of every answer's score against its
            official VQA score among the ten human answers (0, 0.3, 0.6, 0.9 or 1; 0 for answers no human gave),
            summed over answers and averaged over questions; questions whose answers are all outside the vocabulary
            still train every score toward 0. `"cross_entropy"`: the cross-entropy of the most common answer's
            class, over the questions whose answer is in the vocabulary.
    """

    heads: tuple[str, ...] = ("classifier",)  # the model heads it trains (config checks read it)
    averages_own_batch = True  # a mean over its micro-batch's questions

    def __init__(self, loss: ClassifierLoss = "soft_bce") -> None:
        self.check_options({"loss": loss})
        self.loss = loss
        self.classes: dict[str, int] = {}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Refuse an unknown loss in one line (ConfigError)."""
        if options.get("loss", "soft_bce") not in ("soft_bce", "cross_entropy"):
            raise ConfigError(f"objective.loss: got {options.get('loss')!r}, expected soft_bce or cross_entropy")

    def bind(self, model: nn.Module, processor: VQAProcessor) -> None:
        """Learn the answer classes from the model's vocabulary."""
        del processor
        vocabulary = extract_model_from_parallel(model).config.answer_vocabulary or []
        self.classes = {answer: index for index, answer in enumerate(vocabulary)}

    def batch_extras(
        self, processor: VQAProcessor, rows: list[dict[str, Any]], batch: dict[str, Any], undecodable: list[int]
    ) -> dict[str, Any]:
        """`answer_scores` (B, A) and `scored_rows` (B,) for the soft loss, in a batch with labels."""
        del processor
        if self.loss != "soft_bce" or "labels" not in batch:
            return {}
        scores = torch.zeros(len(rows), len(self.classes))
        for row_index, row in enumerate(rows):
            for answer, score in official_answer_scores(row["answers"], self.classes).items():
                scores[row_index, self.classes[answer]] = score
        scored = torch.ones(len(rows))
        scored[undecodable] = 0.0  # a row without its image must not teach the model to answer from a blank one
        return {ANSWER_SCORES: scores, SCORED_ROWS: scored}

    def __call__(
        self,
        model: nn.Module,
        batch: Mapping[str, torch.Tensor],
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Any]:
        del num_items_in_batch  # a mean over its own questions
        inputs = EncoderInputs.pick(batch).as_kwargs()
        if self.loss == "cross_entropy":
            outputs = model(**inputs, labels=batch["labels"])
            return outputs.loss, outputs
        if ANSWER_SCORES not in batch:
            raise ValueError(
                "objective=classifier: the batch has no answer scores; build the collator with "
                "VQACollator(..., batch_extras=objective.batch_extras)"
            )
        outputs = model(**inputs)
        per_answer = nn.functional.binary_cross_entropy_with_logits(
            outputs.logits.float(), batch[ANSWER_SCORES], reduction="none"
        )
        rows = batch[SCORED_ROWS]
        return (per_answer.sum(dim=1) * rows).sum() / rows.sum().clamp(min=1), outputs
