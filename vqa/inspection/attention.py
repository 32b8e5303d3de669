"""Where the decoder looks: its cross-attention over question tokens and image patches for each answer token.

`explain` generates the answers, then replays them teacher-forced with eager attention to read the weights: SDPA
returns no weights, and `generate` returns no cross-attentions. Decoder position t is the step that wrote answer
token t, so the weights at t show what the model read to write it.

The raw weights are over the encoders' output tokens, which their own self-attention has already mixed (a small
ViT may gather the image into a few patch tokens). The rollout follows the attention back through the decoder and
both encoders to the input words and input patches.

Maps need a fusion whose sequence has a `question` and an `image` segment (`vqa.model.fusion.FusedSequence`), as the
token fusion and the resampler give; a resampler's K image keys are mapped back to the encoder positions through
its `image_sources`, so weights and rollout are always over the encoder's positions.

Shapes: L decoder layers, H heads, T generated tokens (the answer's tokens, then EOS), Lq question tokens ([CLS] and
[SEP] included, padding removed), C the image encoder's prefix tokens (ViT's CLS; 2 for DeiT, none for SigLIP),
P = rows x cols image patches, S = Lq + C + P.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from PIL.Image import Image

from vqa.model.encoders import patch_grid
from vqa.model.fusion import segment_slices
from vqa.model.modeling import VQAModel, labels_from_answers
from vqa.model.processing import VQAProcessor

MAP_SEGMENTS = ("question", "image")  # the fused segments a map is drawn over

Layer = int | Literal["mean", "rollout"]
Head = int | Literal["mean"]


@dataclass
class AnswerAttention:
    """The cross-attention of one generated answer, with the text needed to label it.

    Attributes:
        weights: (L, H, T, S) cross-attention weights on the encoders' output tokens; each row sums to 1.
        rollout: (T, S) attention rollout through the decoder and the encoders to the input tokens and patches
            (see `decoder_rollout` and `encoder_rollout`); each row sums to 1.
        grid: (rows, cols) of the image encoder's patch grid.
        image_prefix: C, the image encoder's positions before the patches (CLS and the like).
    """

    question: str
    answer: str
    question_tokens: list[str]
    answer_tokens: list[str]
    image: Image | None
    weights: torch.Tensor
    rollout: torch.Tensor
    grid: tuple[int, int]
    image_prefix: int = 1

    @property
    def num_layers(self) -> int:
        return self.weights.shape[0]

    @property
    def num_heads(self) -> int:
        return self.weights.shape[1]

    def fused(self, layer: Layer = "mean", head: Head = "mean") -> torch.Tensor:
        """(T, S) weights of one layer or their mean (or the rollout), of one head or the mean over heads."""
        if layer == "rollout":
            if head != "mean":
                raise ValueError(f"head={head!r}: the rollout combines all heads; use head='mean'")
            return self.rollout
        return select(self.weights, layer, head)

    def question_attention(self, layer: Layer = "mean", head: Head = "mean") -> torch.Tensor:
        """(T, Lq) attention on each question token."""
        return self.fused(layer, head)[:, : len(self.question_tokens)]

    def cls_attention(self, layer: Layer = "mean", head: Head = "mean") -> torch.Tensor:
        """(T,) attention on the image encoder's prefix tokens (its CLS; 0 for an encoder without one)."""
        start = len(self.question_tokens)
        return self.fused(layer, head)[:, start : start + self.image_prefix].sum(dim=-1)

    def patch_attention(self, layer: Layer = "mean", head: Head = "mean") -> torch.Tensor:
        """(T, rows, cols) attention on each image patch, on the image encoder's patch grid."""
        patches = self.fused(layer, head)[:, len(self.question_tokens) + self.image_prefix :]
        return patches.reshape(-1, *self.grid)

    def image_share(self, layer: Layer = "mean", head: Head = "mean") -> torch.Tensor:
        """(T,) share of the attention on the image (CLS and patches) rather than the question."""
        return self.fused(layer, head)[:, len(self.question_tokens) :].sum(dim=-1)


def select(weights: torch.Tensor, layer: int | Literal["mean"], head: Head) -> torch.Tensor:
    """(L, H, T, S) -> (T, S): one layer or the mean over layers, then one head or the mean over heads."""
    num_layers, num_heads = weights.shape[:2]
    if layer != "mean" and not 0 <= layer < num_layers:
        raise ValueError(f"layer={layer!r}: expected 'mean', 'rollout' or a layer index below {num_layers}")
    if head != "mean" and not 0 <= head < num_heads:
        raise ValueError(f"head={head!r}: expected 'mean' or a head index below {num_heads}")
    by_layer = weights.mean(dim=0) if layer == "mean" else weights[layer]  # (H, T, S)
    return by_layer.mean(dim=0) if head == "mean" else by_layer[head]


def decoder_rollout(self_attentions: torch.Tensor, cross_attentions: torch.Tensor) -> torch.Tensor:
    """Attention rollout (Abnar and Zuidema, 2020) through a decoder that cross-attends to fixed encoder states.

    Each decoder state is tracked as a mixture of decoder inputs and encoder positions. A self-attention sublayer
    mixes decoder positions (0.5 A + 0.5 I, the residual counted as identity); a cross-attention sublayer keeps
    half of each state and adds half from the encoder positions it attends to. Heads are averaged, the MLPs
    ignored, as in the original rollout. The result is the encoder part, each row normalised to sum to 1.

    Args:
        self_attentions: (L, H, T, T) causal decoder self-attention.
        cross_attentions: (L, H, T, S) cross-attention.

    Returns:
        (T, S) the share of each encoder position in what decoder position t read, over all layers.
    """
    steps = self_attentions.shape[-1]
    identity = torch.eye(steps, dtype=self_attentions.dtype, device=self_attentions.device)
    from_decoder = identity  # (T, T) how much each decoder input contributes to each current state
    from_encoder = cross_attentions.new_zeros(cross_attentions.shape[-2:])  # (T, S)
    for self_layer, cross_layer in zip(self_attentions.mean(dim=1), cross_attentions.mean(dim=1), strict=True):
        mixing = 0.5 * self_layer + 0.5 * identity
        from_decoder, from_encoder = mixing @ from_decoder, mixing @ from_encoder
        from_decoder, from_encoder = 0.5 * from_decoder, 0.5 * from_encoder + 0.5 * cross_layer
    return from_encoder / from_encoder.sum(dim=-1, keepdim=True).clamp(min=torch.finfo(from_encoder.dtype).tiny)


def encoder_rollout(attentions: torch.Tensor) -> torch.Tensor:
    """Attention rollout through an encoder: (L, H, N, N) self-attention -> (N, N), row i the share of each input
    position in output position i. Heads averaged, residual counted as identity (0.5 A + 0.5 I per layer)."""
    positions = attentions.shape[-1]
    identity = torch.eye(positions, dtype=attentions.dtype, device=attentions.device)
    rollout = identity
    for layer in attentions.mean(dim=1):
        rollout = (0.5 * layer + 0.5 * identity) @ rollout
    return rollout


@contextmanager
def eager_attention(model: VQAModel) -> Iterator[None]:
    """Eager attention in the decoder and both encoders inside the block; their previous implementations after it."""
    previous = {
        "": model.config._attn_implementation,
        "text_config": model.text_encoder.config._attn_implementation,
        "vision_config": model.image_encoder.config._attn_implementation,
        "decoder_config": model.decoder.config._attn_implementation,
    }
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


@contextmanager
def evaluation_mode(model: VQAModel) -> Iterator[None]:
    """`model.eval()` inside the block (no dropout in the weights), the previous mode after it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def map_refusal(model: VQAModel) -> str | None:
    """Why this model has no attention map over question tokens and image patches (one line), or None."""
    if getattr(model.config, "passages", "none") != "none":
        return "the model reads retrieved passages: its attention per passage is printed instead of a map"
    if model.config.inputs != "both":
        return f"inputs={model.config.inputs!r}: attention maps over question and image need a model with inputs='both'"
    segment_names = type(model.fusion).segment_names
    if segment_names != MAP_SEGMENTS:
        return (
            f"fusion={model.config.fusion!r} has the segments ({', '.join(segment_names)}); attention maps need the "
            f"{' and '.join(MAP_SEGMENTS)} tokens as keys, as fusion='tokens' gives"
        )
    return None


@torch.no_grad()
def explain_batch(
    model: VQAModel,
    processor: VQAProcessor,
    images: Sequence[Image],
    questions: Sequence[str],
    max_new_tokens: int | None = None,
) -> list[AnswerAttention]:
    """Generate an answer for each (image, question) and return its cross-attention, one item per question.

    The answers are the model's greedy answers, generated as in evaluation (with its own attention
    implementation); only the replay that reads the weights runs with eager attention. A classifier
    (`model.head=classifier`) chooses the whole answer at one query, GPT-2's BOS position: its item has one row
    (T = 1), named by the answer.
    """
    refusal = map_refusal(model)
    if refusal is not None:
        raise ValueError(refusal)
    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images but {len(questions)} questions; expected one image per question")
    batch = {name: tensor.to(model.device) for name, tensor in processor(questions, images).items()}
    eos_token_id = model.config.decoder_config.eos_token_id
    with evaluation_mode(model):
        answer_ids = model.generate(**batch, max_new_tokens=max_new_tokens)  # (B, N)
        labels = labels_from_answers(answer_ids, eos_token_id)
        with eager_attention(model):
            # Each encoder once, with its own self-attention (for the rollout to the inputs); the replay then reads
            # their outputs as precomputed features instead of running them again.
            text = model.text_encoder(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_attentions=True
            )
            pixel_values = batch["pixel_values"].to(model.image_encoder.dtype)
            image = model.image_encoder(pixel_values=pixel_values, output_attentions=True)
            output = model(
                attention_mask=batch["attention_mask"],
                question_features=text.last_hidden_state,
                image_features=image.last_hidden_state,
                labels=labels,
                output_attentions=True,
            )
    segments = segment_slices(output.encoder_segments)
    cross = _stacked(output.cross_attentions)  # (B, L, H, N, Lq_max + C + P)
    decoder_self = _stacked(output.decoder_attentions)  # (B, L, H, N, N)
    text_self, image_self = _stacked(text.attentions), _stacked(image.attentions)  # (B, Lt, H, Lq_max, Lq_max) ...
    rows, cols = patch_grid(model.config.vision_config, *pixel_values.shape[-2:])
    question_length = segments["question"].stop
    image_positions = image.last_hidden_state.shape[1]
    image_prefix = image_positions - rows * cols
    if image_prefix < 0:
        raise ValueError(
            f"image encoder gave {image_positions} positions, fewer than the {rows}x{cols} patches of a "
            f"{tuple(pixel_values.shape[-2:])} image with patch_size {model.config.vision_config.patch_size}"
        )
    # A fusion whose image keys are not the encoder positions (a resampler) says how they map back: (B, K, I).
    image_sources = None if output.encoder_image_sources is None else output.encoder_image_sources.float().cpu()
    answers = processor.decode_answers(answer_ids)
    attention_mask, input_ids, labels = batch["attention_mask"].cpu(), batch["input_ids"].cpu(), labels.cpu()
    classifier = model.answer_classifier is not None
    items = []
    for row, (image, question) in enumerate(zip(images, questions, strict=True)):
        steps = 1 if classifier else int((labels[row] != -100).sum())
        question_positions = attention_mask[row].nonzero().squeeze(1)  # padding dropped
        keep = torch.cat([question_positions, torch.arange(question_length, cross.shape[-1])])
        num_question = len(question_positions)
        to_image = None if image_sources is None else image_sources[row]  # (K, I): image keys -> encoder positions
        weights = _to_encoder_positions(cross[row, :, :, :steps][..., keep], num_question, to_image)  # (L, H, T, S)
        to_outputs = decoder_rollout(decoder_self[row, :, :, :steps, :steps], cross[row, :, :, :steps])[:, keep]
        to_outputs = _to_encoder_positions(to_outputs, num_question, to_image)  # (T, S)
        # Through each encoder to its inputs; both maps are row-stochastic, so rows still sum to 1.
        text_rollout = encoder_rollout(text_self[row])[question_positions][:, question_positions]  # (Lq, Lq)
        image_rollout = encoder_rollout(image_self[row])  # (I, I)
        rollout = torch.cat(
            [to_outputs[:, :num_question] @ text_rollout, to_outputs[:, num_question:] @ image_rollout], dim=1
        )
        answer_tokens = [processor.answer_tokenizer.decode([token]) for token in labels[row, :steps].tolist()]
        items.append(
            AnswerAttention(
                question=question,
                answer=answers[row],
                question_tokens=processor.question_tokenizer.convert_ids_to_tokens(
                    input_ids[row, question_positions].tolist()
                ),
                answer_tokens=[answers[row]] if classifier else answer_tokens,
                image=image,
                weights=weights,
                rollout=rollout,
                grid=(rows, cols),
                image_prefix=image_prefix,
            )
        )
    return items


def _to_encoder_positions(attention: torch.Tensor, num_question: int, to_image: torch.Tensor | None) -> torch.Tensor:
    """(..., Lq + K) attention over question and image keys -> (..., Lq + I) over question tokens and image-encoder
    positions, through the (K, I) row-stochastic map `to_image` (unchanged when None: the keys are the positions)."""
    if to_image is None:
        return attention
    return torch.cat([attention[..., :num_question], attention[..., num_question:] @ to_image], dim=-1)


def _stacked(attentions: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """One (B, H, Q, K) tensor per layer -> (B, L, H, Q, K) float32 on the CPU."""
    return torch.stack(attentions, dim=1).float().cpu()


def explain(
    model: VQAModel, processor: VQAProcessor, image: Image, question: str, max_new_tokens: int | None = None
) -> AnswerAttention:
    """The generated answer to one question about one image, with its cross-attention (see `explain_batch`)."""
    return explain_batch(model, processor, [image], [question], max_new_tokens)[0]
