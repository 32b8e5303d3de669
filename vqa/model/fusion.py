"""Fusion: how the encoded question and image become the sequence that GPT-2 cross-attends to.

A fusion is an `nn.Module` subclass of `Fusion`, built from the `VQAConfig`, that maps the encoders' states to a
`FusedSequence`: the (B, S, Hd) states, their mask, and the named segments they are made of (the attention maps
slice by these names). `VQAConfig.fusion` (`model.fusion` in the Hydra config) chooses it: `tokens`, `pooled`, or the
import path of your own subclass (`my_package.fusions.MyFusion`), saved in the checkpoint's config.

Shapes: B examples, M distinct questions of Lq tokens, N distinct images of I encoder positions, P distinct passages
of Lp tokens, K per example (see `vqa.model.encoder_inputs`), Ht / Hv the encoders' widths, Hd the decoder's, S the
fused length.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers import PretrainedConfig

from vqa.instantiate import current_import_path
from vqa.model.encoder_inputs import EncoderInputs

TEXT, IMAGE, PASSAGE = 0, 1, 2  # rows of the modality embedding (PASSAGE only in models that read passages)
# The short names a config may use for the fusions of this module.
BUILT_IN_FUSIONS = {
    "tokens": "vqa.model.fusion.TokenFusion",
    "pooled": "vqa.model.fusion.PooledFusion",
    "resampler": "vqa.model.resampler.PerceiverResampler",
}


@dataclass
class FusedSequence:
    """What a fusion gives the decoder.

    Attributes:
        hidden_states: (B, S, Hd) the cross-attention keys' source.
        attention_mask: (B, S) 1 where the decoder may attend.
        segments: the named parts of the S positions, in order: [(name, length), ...]. The token fusion's are
            `question` (Lq) and `image` (I), which the attention maps need, then `passage_0` ... `passage_{K-1}` (Lp
            each) when the batch has retrieved passages.
        shared_rows: optional, per modality in order, the (M, N or P, length, Hd) distinct rows and the (B,) index
            that repeats them ((B, K) for passages: each example's K rows, concatenated; None: one row per example).
            `VQAModel` then computes GPT-2's cross-attention keys and values once per distinct row, which is what
            makes image-grouped batches cheap.
        image_sources: optional (B, K, I), for a fusion whose K image keys are not the image encoder's I positions
            (a resampler): each row the share of each encoder position in that key, summing to 1. The attention
            maps follow it back to the patches; None: the image keys are the encoder positions themselves.
    """

    hidden_states: torch.FloatTensor
    attention_mask: torch.LongTensor
    segments: list[tuple[str, int]]
    shared_rows: list[tuple[torch.FloatTensor, torch.LongTensor | None]] | None = None
    image_sources: torch.FloatTensor | None = None

    def segment_slices(self) -> dict[str, slice]:
        """{name: slice of the S positions}."""
        return segment_slices(self.segments)


def segment_slices(segments: list[tuple[str, int]]) -> dict[str, slice]:
    """[(name, length), ...] -> {name: slice} over the concatenated positions."""
    slices, start = {}, 0
    for name, length in segments:
        slices[name] = slice(start, start + length)
        start += length
    return slices


class Projection(nn.Module):
    """Linear map from an encoder's width to the decoder's, optionally followed by LayerNorm."""

    def __init__(self, in_features: int, out_features: int, layer_norm: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.layer_norm = nn.LayerNorm(out_features) if layer_norm else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(..., in_features) -> (..., out_features)"""
        return self.layer_norm(self.linear(hidden_states))


class Fusion(nn.Module):
    """The interface: a subclass builds its modules from the config and implements `forward`.

    `segment_names` declares the segments the fused sequence has (with both modalities), in order: the attention
    maps check it before they run. The base class gives each modality a projection to the decoder width (with a
    LayerNorm if `config.projection_layer_norm`) and, with `config.modality_embeddings`, a learned embedding per
    modality (a third one for passages when `config.passages` is not `none`; passages share the text projection). A
    fusion's parameters count as `projections` for freezing and the parameter table.
    """

    segment_names: ClassVar[tuple[str, ...]] = ()
    # Whether `forward` takes `passage_states` and appends them as segments; VQAConfig refuses passages otherwise.
    reads_passages: ClassVar[bool] = False
    # The fusion's own config keys (`+model.<key>=...`), read from the config it is built with; any other key that is
    # neither a VQAConfig argument nor declared here is refused in one line (vqa.model.settings.check_setting_names).
    own_settings: ClassVar[tuple[str, ...]] = ()
    # The VQAConfig settings blocks the fusion reads (`resampler`): a run that changes one of them with a fusion that
    # does not read it is refused (vqa.model.settings.check_settings_in_use), as it would have no effect.
    reads_settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        width = config.decoder_config.n_embd
        self.text_projection = Projection(config.text_config.hidden_size, width, config.projection_layer_norm)
        self.image_projection = Projection(config.vision_config.hidden_size, width, config.projection_layer_norm)
        modalities = 2 if getattr(config, "passages", "none") == "none" else 3
        self.modality_embedding = nn.Embedding(modalities, width) if config.modality_embeddings else None

    def forward(
        self,
        question_states: torch.FloatTensor | None,
        image_states: torch.FloatTensor | None,
        inputs: EncoderInputs,
        passage_states: torch.FloatTensor | None = None,
    ) -> FusedSequence:
        """Fuse (M, Lq, Ht) question and (N, I, Hv) image states (None for a modality the model leaves out, see
        `VQAConfig.inputs`) and, in a fusion that `reads_passages`, the (P, Lp, Ht) states of the batch's retrieved
        passages (None without them); `inputs` gives the masks and the row indices."""
        raise NotImplementedError

    def projections_of(self, modality: str) -> list[nn.Module]:
        """The modules that only `modality` (`text` or `image`) passes through: left untrained when a blind
        baseline never runs that encoder."""
        return [self.text_projection if modality == "text" else self.image_projection]


class TokenFusion(Fusion):
    """Every question token and every image position is a key: (B, Lq + I, Hd), segments `question` and `image`;
    with retrieved passages, each example's K passages follow, every token a key: (B, Lq + I + K * Lp, Hd).

    Each modality is projected (plus its modality embedding) per distinct row, before being repeated for its
    examples, so a question, image or passage shared in the batch is projected once.
    """

    segment_names = ("question", "image")
    reads_passages = True

    def forward(
        self,
        question_states: torch.FloatTensor | None,
        image_states: torch.FloatTensor | None,
        inputs: EncoderInputs,
        passage_states: torch.FloatTensor | None = None,
    ) -> FusedSequence:
        parts, segments, image_sources = [], [], None
        if question_states is not None:
            parts.append((self._keys(self.text_projection(question_states), TEXT), inputs.question_index))
            segments.append(("question", question_states.shape[1]))
        if image_states is not None:
            image_keys, image_sources = self.image_keys(image_states)
            parts.append((self._keys(image_keys, IMAGE), inputs.image_index))
            segments.append(("image", image_keys.shape[1]))
        if passage_states is not None:
            parts.append((self._keys(self.text_projection(passage_states), PASSAGE), inputs.passage_index))
            segments += [(f"passage_{rank}", passage_states.shape[1]) for rank in range(inputs.passage_index.shape[1])]
        hidden_states = torch.cat([repeat_rows(keys, index) for keys, index in parts], dim=1)
        masks = []
        if question_states is not None:
            masks.append(repeat_rows(inputs.attention_mask, inputs.question_index))
        if image_states is not None:
            masks.append(hidden_states.new_ones(hidden_states.shape[0], image_keys.shape[1], dtype=torch.long))
        if passage_states is not None:
            masks.append(repeat_rows(inputs.passage_attention_mask, inputs.passage_index))
        if image_sources is not None:
            image_sources = repeat_rows(image_sources, inputs.image_index)
        return FusedSequence(hidden_states, torch.cat(masks, dim=1), segments, parts, image_sources)

    def image_keys(self, image_states: torch.FloatTensor) -> tuple[torch.FloatTensor, torch.FloatTensor | None]:
        """(N, I, Hv) image states -> (N, K, Hd) image keys (before the modality embedding) and, when the keys are
        not the I encoder positions themselves, the (N, K, I) share of each position in each key (else None).
        Here every encoder position is a key; a subclass may compress them (`vqa.model.resampler`)."""
        return self.image_projection(image_states), None

    def _keys(self, projected: torch.FloatTensor, modality: int) -> torch.FloatTensor:
        if self.modality_embedding is None:
            return projected
        return projected + self.modality_embedding.weight[modality]


class PooledFusion(Fusion):
    """The textbook fusion: masked mean of the question, mean of the image, each projected, then averaged (or the
    one modality the model keeps): one key, (B, 1, Hd), segment `fused`. Modality embeddings are not used."""

    segment_names = ("fused",)

    def forward(
        self,
        question_states: torch.FloatTensor | None,
        image_states: torch.FloatTensor | None,
        inputs: EncoderInputs,
        passage_states: torch.FloatTensor | None = None,
    ) -> FusedSequence:
        if passage_states is not None:  # VQAConfig refuses passages with this fusion; a direct call is a bug
            raise ValueError("the pooled fusion does not read passages")
        pooled = []
        if question_states is not None:
            question_mean = masked_mean(question_states, inputs.attention_mask)  # (M, Ht)
            pooled.append(repeat_rows(self.text_projection(question_mean), inputs.question_index))
        if image_states is not None:
            pooled.append(repeat_rows(self.image_projection(image_states.mean(dim=1)), inputs.image_index))  # (B, Hd)
        fused = torch.stack(pooled).mean(dim=0)  # (B, Hd)
        mask = torch.ones(fused.shape[0], 1, dtype=torch.long, device=fused.device)
        return FusedSequence(fused.unsqueeze(1), mask, [(self.segment_names[0], 1)])


def fusion_class(name: str) -> type[Fusion]:
    """The `Fusion` subclass that `name` (a short name of BUILT_IN_FUSIONS or an import path) refers to.

    Raises:
        ValueError: one line naming the value and what was expected.
    """
    path = current_import_path(BUILT_IN_FUSIONS.get(name, name))  # a checkpoint may name a path from before a move
    expected = f"expected one of {', '.join(BUILT_IN_FUSIONS)} or the import path of a vqa.model.fusion.Fusion subclass"
    module_name, _, class_name = path.rpartition(".")
    if not module_name:
        raise ValueError(f"fusion: got {name!r}, {expected}")
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"fusion: cannot import {path!r} ({error}); {expected}") from None
    if not (isinstance(found, type) and issubclass(found, Fusion)):
        raise ValueError(f"fusion: {path!r} is not a vqa.model.fusion.Fusion subclass; {expected}")
    return found


def masked_mean(states: torch.FloatTensor, mask: torch.LongTensor) -> torch.FloatTensor:
    """(N, L, H) states and (N, L) mask -> (N, H) mean over the positions where the mask is 1 (0 for none)."""
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def repeat_rows(tensor: torch.Tensor, index: torch.LongTensor | None) -> torch.Tensor:
    """(M, ...) distinct rows -> (B, ...) one per example (`tensor[index]`); unchanged when `index` is None.

    A (B, K) index takes K rows per example and concatenates them along dimension 1: (M, L, ...) -> (B, K * L, ...)
    (each example's K passages as one segment run).

    `index_select`, not `tensor[index]`: on CPU the backward of advanced indexing adds the repeated rows' gradients
    with atomic adds from several threads, in an order that changes from run to run (the last bits of the text
    encoder's gradients differed at the first logged step); `index_select`'s backward (`index_add_`) adds them in
    index order, and is faster here too (docs/reproducibility.md).
    """
    if index is None:
        return tensor
    if index.dim() == 1:
        return tensor.index_select(0, index)
    rows = tensor.index_select(0, index.reshape(-1))  # (B * K, L, ...)
    return rows.reshape(index.shape[0], index.shape[1] * tensor.shape[1], *tensor.shape[2:])
