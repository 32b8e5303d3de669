"""Training objectives: what the Trainer minimises for a batch.

An objective is a callable `(model, batch, num_items_in_batch) -> (loss, model output)`, chosen by the Hydra group
`objective` (`objective=answer`, the default) and called by `VQATrainer.compute_loss`. `model` is what the Trainer
trains (possibly wrapped by DDP: call it, do not reach into it, so that gradients are synchronised); `batch` is the
collator's batch; `num_items_in_batch` is the Trainer's count of label tokens over all micro-batches of an
optimizer step (None outside training), by which a token-summed loss is divided so that gradient accumulation and
DDP average over tokens exactly.

`VQAModel.forward` still returns `answer_cross_entropy` when given `labels`, for Hugging Face compatibility; the
evaluation loss (`eval_loss`) is that one whatever the objective, so it compares across objectives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel
from torch import nn

Objective = Callable[[nn.Module, Mapping[str, torch.Tensor], int | torch.Tensor | None], tuple[torch.Tensor, Any]]


class AnswerCrossEntropy:
    """Teacher-forced cross-entropy of the reference answer's tokens and EOS (`labels`: `answer EOS`, -100 padded)."""

    def __call__(
        self,
        model: nn.Module,
        batch: Mapping[str, torch.Tensor],
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Any]:
        labels = batch["labels"]
        # The model inside DDP for its method; the forward pass goes through the wrapper (gradient synchronisation).
        inner = extract_model_from_parallel(model)
        decoder_input_ids, decoder_attention_mask = inner.decoder_inputs_from_labels(labels)
        inputs = {name: value for name, value in batch.items() if name != "labels"}
        outputs = model(**inputs, decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask)
        return answer_cross_entropy(outputs.logits, labels, num_items_in_batch), outputs


def answer_cross_entropy(
    logits: torch.FloatTensor,
    labels: torch.LongTensor,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.FloatTensor:
    """Cross-entropy summed over label tokens (-100 ignored), divided by `num_items_in_batch` or the local count.

    Args:
        logits: (B, T, V), computed in float32 for a stable softmax under mixed precision.
        labels: (B, T) targets aligned with `logits`.
    """
    total = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum")
    count = (labels != -100).sum() if num_items_in_batch is None else num_items_in_batch
    # clamp: a batch with no label tokens gives a zero loss rather than NaN.
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)
