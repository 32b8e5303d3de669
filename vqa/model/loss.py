"""The loss `VQAModel.forward` returns for `labels`: the answer tokens' cross-entropy, summed and divided per label
token (the Trainer's `num_items_in_batch` during training, so that gradient accumulation and DDP average over tokens
exactly). The training objectives (`vqa.training.objectives`) build on the same division."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    return per_label_token(total, labels, num_items_in_batch)


def sequence_cross_entropy(logits: torch.FloatTensor, labels: torch.LongTensor) -> torch.FloatTensor:
    """(B,) each sequence's cross-entropy summed over its label tokens (-100 ignored), from logits (B, T, V) in
    float32 and labels (B, T)."""
    token_losses = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="none")
    return token_losses.view_as(labels).sum(dim=1)


def per_label_token(
    total: torch.Tensor, labels: torch.LongTensor, num_items_in_batch: int | torch.Tensor | None
) -> torch.Tensor:
    """A token-summed loss divided by `num_items_in_batch` or, outside training, the label tokens of `labels`."""
    count = (labels != -100).sum() if num_items_in_batch is None else num_items_in_batch
    # clamp: a batch with no label tokens gives a zero loss rather than NaN.
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)
