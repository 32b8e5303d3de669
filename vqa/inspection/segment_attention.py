"""Which segment the answer read: the share of the decoder's cross-attention on each fused segment (the question, the
image, each retrieved passage), per question.

The answers are generated as in evaluation, then replayed teacher-forced with eager attention (SDPA returns no
weights); the weights are averaged over layers, heads and the answer's tokens (EOS included; the classifier's one
query), then summed within each segment, so a question's shares sum to 1.

Shapes: B questions, L layers, H heads, T answer positions, S fused positions.
"""

from __future__ import annotations

import torch

from vqa.inspection.attention import eager_attention, evaluation_mode
from vqa.model.encoder_inputs import EncoderInputs
from vqa.model.fusion import segment_slices
from vqa.model.modeling import VQAModel, labels_from_answers


@torch.no_grad()
def segment_shares(model: VQAModel, batch: dict[str, torch.Tensor]) -> tuple[list[str], torch.Tensor]:
    """The fused segments' names and each question's (B, segments) share of cross-attention on them.

    Args:
        batch: model inputs (as the collator gives them; labels, if any, are ignored).
    """
    inputs = EncoderInputs.pick(batch).as_kwargs()
    with evaluation_mode(model):
        answers = model.generate(**inputs)
        labels = labels_from_answers(answers, model.config.decoder_config.eos_token_id)
        with eager_attention(model):
            output = model(**inputs, labels=labels, output_attentions=True)
    weights = torch.stack(output.cross_attentions, dim=1).float().mean(dim=(1, 2))  # (B, T, S)
    if model.answer_classifier is None:
        real = (labels != -100).float()  # (B, T): the answer's tokens and EOS
        per_question = (weights * real.unsqueeze(-1)).sum(dim=1) / real.sum(dim=1, keepdim=True).clamp(min=1)
    else:
        per_question = weights[:, 0]  # the classifier's one query, at BOS
    slices = segment_slices(output.encoder_segments)
    shares = torch.stack([per_question[:, part].sum(dim=1) for part in slices.values()], dim=1)  # (B, segments)
    return list(slices), shares.cpu()
