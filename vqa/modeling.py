"""`VQAModel`: DistilBERT and ViT token sequences, projected to the decoder width, read by GPT-2's cross-attention.

Shapes used throughout: B batch, Lq question tokens, P image patches (the ViT adds one CLS token), T decoder
positions, S = Lq + 1 + P fused encoder positions (1 for pooled fusion), Hd the decoder width, V answer vocabulary.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DistilBertModel, DynamicCache, EncoderDecoderCache, GPT2LMHeadModel, PreTrainedModel, ViTModel
from transformers.utils import ModelOutput

from vqa.configuration import INPUTS, VQAConfig
from vqa.freezing import apply_freeze, parameter_table, resolve_freeze

TEXT, IMAGE = 0, 1  # rows of the modality embedding


@dataclass
class VQAModelOutput(ModelOutput):
    """Output of `VQAModel.forward`.

    Attributes:
        loss: scalar, cross-entropy over answer tokens and EOS (when `labels` are given).
        logits: (B, T, V) next-token scores at every decoder position.
        cross_attentions: one (B, heads, T, S) tensor per decoder layer, when `output_attentions=True`.
        decoder_attentions: one (B, heads, T, T) causal self-attention tensor per decoder layer, likewise.
        encoder_attention_mask: (B, S) 1 for the fused encoder positions the decoder may attend to.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    decoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    encoder_attention_mask: torch.LongTensor | None = None


class Projection(nn.Module):
    """Linear map from an encoder's width to the decoder's, optionally followed by LayerNorm."""

    def __init__(self, in_features: int, out_features: int, layer_norm: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.layer_norm = nn.LayerNorm(out_features) if layer_norm else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(..., in_features) -> (..., out_features)"""
        return self.layer_norm(self.linear(hidden_states))


class ConvPatchStem(nn.Sequential):
    """Stride-2 3x3 convolutions down to the patch grid, then a 1x1 projection to the ViT width.

    (B, 3, H, W) -> (B, Hv, H / patch, W / patch), like the single strided convolution it replaces. The patch size
    must be a power of two.
    """

    def __init__(self, num_channels: int, hidden_size: int, patch_size: int) -> None:
        if patch_size < 2 or patch_size & (patch_size - 1):
            raise ValueError(f"vision_conv_stem: patch_size {patch_size} is not a power of two >= 2")
        stages = patch_size.bit_length() - 1  # one stride-2 convolution per halving
        widths = [num_channels] + [max(hidden_size >> (stages - 1 - stage), 8) for stage in range(stages)]
        layers: list[nn.Module] = []
        for in_channels, out_channels in itertools.pairwise(widths):
            layers += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), nn.GELU()]
        layers.append(nn.Conv2d(widths[-1], hidden_size, 1))
        super().__init__(*layers)

    @property
    def weight(self) -> torch.Tensor:
        """The last layer's weight: HF's ViT reads `projection.weight.dtype` to cast its input."""
        return self[-1].weight


class VQAModel(PreTrainedModel):
    """Question and image encoders fused at the token level into a GPT-2 decoder that writes the answer.

    The decoder sequence is `BOS answer EOS`: `decoder_input_ids` is `BOS answer` and `labels` is `answer EOS`
    (aligned with the logits, no shift inside the loss), padding -100.
    """

    config_class = VQAConfig
    base_model_prefix = "vqa"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # The loss is a sum over answer tokens divided by `num_items_in_batch` when the Trainer passes it, so gradient
    # accumulation and DDP average over tokens exactly; the Trainer then skips its own division by the steps.
    accepts_loss_kwargs = True

    def __init__(self, config: VQAConfig) -> None:
        super().__init__(config)
        self.text_encoder = DistilBertModel(config.text_config)
        # No pooler: it would be an unused parameter set (DDP complains) and tokens fusion reads every position.
        self.image_encoder = ViTModel(config.vision_config, add_pooling_layer=False)
        if config.vision_conv_stem:
            vision = config.vision_config
            self.image_encoder.embeddings.patch_embeddings.projection = ConvPatchStem(
                vision.num_channels, vision.hidden_size, vision.patch_size
            )
        self.decoder = GPT2LMHeadModel(config.decoder_config)
        decoder_width = config.decoder_config.n_embd
        self.text_projection = Projection(config.text_config.dim, decoder_width, config.projection_layer_norm)
        self.image_projection = Projection(
            config.vision_config.hidden_size, decoder_width, config.projection_layer_norm
        )
        self.modality_embedding = nn.Embedding(2, decoder_width) if config.modality_embeddings else None
        self.bos_conditioning = nn.Linear(decoder_width, decoder_width) if config.conditioned_bos else None
        self.frozen_components = resolve_freeze(config.freeze)
        self.post_init()
        if self.bos_conditioning is not None:
            # Zero at init: the decoder starts exactly as without it (a pretrained GPT-2 is not disturbed).
            nn.init.zeros_(self.bos_conditioning.weight)
            nn.init.zeros_(self.bos_conditioning.bias)
        if config.vision_conv_stem:
            # He init for the stem (the ViT's std-0.02 init would shrink activations at each unnormalised layer),
            # so that image content, not the position embeddings, dominates the patch tokens
            # from the start: otherwise every image looks alike to the decoder and learning stalls on a plateau.
            for layer in self.image_encoder.embeddings.patch_embeddings.projection:
                if isinstance(layer, nn.Conv2d):
                    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                    nn.init.zeros_(layer.bias)
        self.apply_freeze()

    @property
    def active_encoders(self) -> tuple[str, ...]:
        """The encoders that `config.inputs` runs: `text_encoder`, `image_encoder` or both."""
        left_out = {"question_only": "image_encoder", "image_only": "text_encoder"}.get(self.config.inputs)
        return tuple(name for name in ("text_encoder", "image_encoder") if name != left_out)

    @property
    def unused_modules(self) -> list[nn.Module]:
        """The encoder and projection of the modality that `config.inputs` leaves out (never run, never trained)."""
        projections = {"text_encoder": self.text_projection, "image_encoder": self.image_projection}
        return [
            module
            for name in ("text_encoder", "image_encoder")
            if name not in self.active_encoders
            for module in (getattr(self, name), projections[name])
        ]

    def apply_freeze(self) -> None:
        """`requires_grad` from `config.freeze`, and off for the unused modules (DDP rejects trainable parameters
        that get no gradient, and the optimizer should not decay them)."""
        if self.config.inputs not in INPUTS:  # from_pretrained(..., inputs=...) bypasses VQAConfig's own check
            raise ValueError(f"VQAConfig.inputs: got {self.config.inputs!r}, expected one of {', '.join(INPUTS)}")
        apply_freeze(self, self.frozen_components)
        for module in self.unused_modules:
            module.requires_grad_(False)

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2-style init for the modules this class adds; the sub-models initialise their own."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> VQAModel:
        """`PreTrainedModel.from_pretrained`, then the config's freeze spec (loading makes every weight trainable)."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # a tuple with output_loading_info=True
        model.apply_freeze()
        return loaded

    @classmethod
    def from_pretrained_components(
        cls,
        text_encoder: str | os.PathLike[str],
        image_encoder: str | os.PathLike[str],
        decoder: str | os.PathLike[str],
        **config_kwargs: Any,
    ) -> VQAModel:
        """Assemble a model from pretrained DistilBERT, ViT and GPT-2 checkpoints (hub names or local folders).

        Projections, modality embeddings and GPT-2's new cross-attention layers start from random init.
        `config_kwargs` go to `VQAConfig` (fusion, freeze, ...).
        """
        text_model = DistilBertModel.from_pretrained(text_encoder)
        image_model = ViTModel.from_pretrained(image_encoder, add_pooling_layer=False)
        decoder_model = GPT2LMHeadModel.from_pretrained(decoder, add_cross_attention=True)
        if decoder_model.config.pad_token_id is None:
            # GPT-2 has no pad token; padded positions are masked and labelled -100, so EOS can stand in.
            decoder_model.config.pad_token_id = decoder_model.config.eos_token_id
        config = VQAConfig(
            text_config=text_model.config,
            vision_config=image_model.config,
            decoder_config=decoder_model.config,
            **config_kwargs,
        )
        model = cls(config)
        model.text_encoder = text_model
        model.image_encoder = image_model
        model.decoder = decoder_model
        model.apply_freeze()
        return model

    def parameter_table(self) -> str:
        """Trainable and total parameters per component, as a printable table."""
        return parameter_table(self)

    def train(self, mode: bool = True) -> VQAModel:
        """Like `nn.Module.train`, but frozen encoders (and a wholly frozen decoder) stay in eval mode."""
        super().train(mode)
        for name in ("text_encoder", "image_encoder"):
            if name in self.frozen_components:
                getattr(self, name).eval()
        if {"decoder", "cross_attention"} <= self.frozen_components:
            self.decoder.eval()
        return self

    def _encoder_context(self, component: str) -> torch.autograd.grad_mode._NoParamDecoratorContextManager:
        # A frozen encoder needs no autograd graph: this saves its activations' memory and the backward pass.
        return torch.no_grad() if component in self.frozen_components else torch.enable_grad()

    def encode(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_index: torch.LongTensor | None = None,
        question_features: torch.FloatTensor | None = None,
        image_features: torch.FloatTensor | None = None,
        question_index: torch.LongTensor | None = None,
    ) -> tuple[torch.FloatTensor, torch.LongTensor]:
        """Run the encoders (or take their cached outputs) and fuse them into the decoder's cross-attention keys.

        Args:
            input_ids: (B, Lq) question token ids, or (M, Lq) distinct questions with `question_index`; None with
                `question_features`.
            attention_mask: (B, Lq) or (M, Lq), 1 for question tokens, 0 for padding.
            pixel_values: (B, 3, H, W) preprocessed images, or (N, 3, H, W) distinct images with `image_index`;
                None with `image_features`.
            image_index: (B,) row of `pixel_values` (or `image_features`) for each question. Each distinct image is
                encoded once and its states are repeated for its questions (image-grouped batches).
            question_features: (B or M, Lq, Ht) the text encoder's cached `last_hidden_state` (`vqa.feature_cache`).
            image_features: (B or N, 1 + P, Hv) the image encoder's cached `last_hidden_state`.
            question_index: (B,) row of `input_ids` (or `question_features`) for each example: a question text
                repeated in a batch is encoded once.

        With `config.inputs="question_only"` the image arguments are ignored and the image encoder does not run;
        with `"image_only"` likewise for the question.

        Returns:
            encoder_hidden_states (B, S, Hd) and encoder_attention_mask (B, S): S = Lq + 1 + P for `tokens` fusion
            (Lq or 1 + P with one modality) and 1 for `pooled` fusion.
        """
        hidden_states, mask, _ = self._fuse(
            input_ids, attention_mask, pixel_values, question_features, image_features, question_index, image_index
        )
        return hidden_states, mask

    def _fuse(
        self,
        input_ids: torch.LongTensor | None,
        attention_mask: torch.LongTensor | None,
        pixel_values: torch.FloatTensor | None,
        question_features: torch.FloatTensor | None,
        image_features: torch.FloatTensor | None,
        question_index: torch.LongTensor | None,
        image_index: torch.LongTensor | None,
        share_keys_values: bool = False,
    ) -> tuple[torch.FloatTensor, torch.LongTensor, EncoderDecoderCache | None]:
        """`encode`, plus (with `share_keys_values` and a deduplicated batch) GPT-2's cross-attention keys and
        values computed once per distinct question and image (see `_shared_cross_attention_cache`)."""
        text_states, image_states = self._encoder_states(
            input_ids, attention_mask, pixel_values, question_features, image_features
        )
        if self.config.fusion == "pooled":
            return (
                *self._pool_and_average(text_states, attention_mask, image_states, question_index, image_index),
                None,
            )
        text_keys, image_keys = self._fusion_keys(text_states, image_states)
        parts = [
            (keys, index)
            for keys, index in ((text_keys, question_index), (image_keys, image_index))
            if keys is not None
        ]
        hidden_states = torch.cat([_rows(keys, index) for keys, index in parts], dim=1)
        masks = []
        if text_keys is not None:
            masks.append(_rows(attention_mask, question_index))
        if image_keys is not None:
            masks.append(hidden_states.new_ones(hidden_states.shape[0], image_keys.shape[1], dtype=torch.long))
        cache = None
        if share_keys_values and (question_index is not None or image_index is not None):
            cache = self._shared_cross_attention_cache(parts)
        return hidden_states, torch.cat(masks, dim=1), cache

    def _encoder_states(
        self,
        input_ids: torch.LongTensor | None,
        attention_mask: torch.LongTensor | None,
        pixel_values: torch.FloatTensor | None,
        question_features: torch.FloatTensor | None,
        image_features: torch.FloatTensor | None,
    ) -> tuple[torch.FloatTensor | None, torch.FloatTensor | None]:
        """The encoders' `last_hidden_state`s (or the cached ones): (M, Lq, Ht) and (N, 1 + P, Hv); None for the
        modality that `config.inputs` leaves out."""
        text_states = image_states = None
        if "text_encoder" in self.active_encoders:
            if attention_mask is None:
                raise ValueError("attention_mask (B, Lq) is required: it marks the question tokens")
            if (input_ids is None) == (question_features is None):
                raise ValueError("give exactly one of input_ids and question_features")
            if question_features is None:
                with self._encoder_context("text_encoder"):
                    text_states = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask)
                    text_states = text_states.last_hidden_state
            else:
                text_states = question_features.to(self.text_projection.linear.weight.dtype)
        if "image_encoder" in self.active_encoders:
            if (pixel_values is None) == (image_features is None):
                raise ValueError("give exactly one of pixel_values and image_features")
            if image_features is None:
                with self._encoder_context("image_encoder"):
                    pixel_values = pixel_values.to(self.image_encoder.dtype)
                    image_states = self.image_encoder(pixel_values=pixel_values).last_hidden_state
            else:
                image_states = image_features.to(self.image_projection.linear.weight.dtype)
        return text_states, image_states

    def _fusion_keys(
        self, text_states: torch.FloatTensor | None, image_states: torch.FloatTensor | None
    ) -> tuple[torch.FloatTensor | None, torch.FloatTensor | None]:
        """Project each modality to the decoder width (+ its modality embedding): (M, Lq, Hd), (N, 1 + P, Hd).

        Projected before repeating them for their examples, so each distinct question and image is projected once.
        """
        text_keys = image_keys = None
        if text_states is not None:
            text_keys = self.text_projection(text_states)
            if self.modality_embedding is not None:
                text_keys = text_keys + self.modality_embedding.weight[TEXT]
        if image_states is not None:
            image_keys = self.image_projection(image_states)
            if self.modality_embedding is not None:
                image_keys = image_keys + self.modality_embedding.weight[IMAGE]
        return text_keys, image_keys

    def _shared_cross_attention_cache(
        self, parts: list[tuple[torch.FloatTensor, torch.LongTensor | None]]
    ) -> EncoderDecoderCache:
        """GPT-2's cross-attention keys and values, with each distinct question's and image's computed once.

        Each GPT-2 block projects the fused sequence to keys and values (`c_attn`), position by position; over the
        B x (1 + P) repeated image positions of an image-grouped batch that projection dominates training time. It
        is applied here to the distinct rows only, then repeated, and GPT-2 reads the result as an already-filled
        cross-attention cache (as in generation, where it is filled once per answer). Gradients flow through it.

        Args:
            parts: per modality in fused order, the (M or N, L, Hd) keys of the distinct rows and the (B,) index
                that repeats them (None: one row per example already).

        Returns:
            a cache whose cross-attention part holds, per layer, (B, heads, S, head_dim) keys and values.
        """
        cross_attention = DynamicCache()
        for layer, block in enumerate(self.decoder.transformer.h):
            attention = block.crossattention
            keys_values = torch.cat([_rows(attention.c_attn(keys), index) for keys, index in parts], dim=1)
            keys, values = keys_values.split(attention.split_size, dim=2)  # (B, S, Hd) each
            shape = (*keys.shape[:-1], -1, attention.head_dim)
            cross_attention.update(keys.view(shape).transpose(1, 2), values.view(shape).transpose(1, 2), layer)
        cache = EncoderDecoderCache(DynamicCache(), cross_attention)
        for layer in range(len(self.decoder.transformer.h)):
            cache.is_updated[layer] = True  # GPT-2 then reads these instead of projecting the fused sequence
        return cache

    def _pool_and_average(
        self,
        text_states: torch.FloatTensor | None,
        attention_mask: torch.LongTensor | None,
        image_states: torch.FloatTensor | None,
        question_index: torch.LongTensor | None,
        image_index: torch.LongTensor | None,
    ) -> tuple[torch.FloatTensor, torch.LongTensor]:
        """The textbook fusion: masked mean of the question, mean of the image, projected and averaged (or the one
        modality that `config.inputs` keeps).

        Returns (B, 1, Hd) and a (B, 1) mask of ones.
        """
        pooled = []
        if text_states is not None:
            text_mean = _masked_mean(text_states, attention_mask)  # (M, Ht)
            pooled.append(_rows(self.text_projection(text_mean), question_index))
        if image_states is not None:
            pooled.append(_rows(self.image_projection(image_states.mean(dim=1)), image_index))  # (B, Hd)
        fused = torch.stack(pooled).mean(dim=0)  # (B, Hd)
        return fused.unsqueeze(1), torch.ones(fused.shape[0], 1, dtype=torch.long, device=fused.device)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_index: torch.LongTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool = False,
        num_items_in_batch: int | torch.Tensor | None = None,
        question_features: torch.FloatTensor | None = None,
        image_features: torch.FloatTensor | None = None,
        question_index: torch.LongTensor | None = None,
    ) -> VQAModelOutput:
        """Teacher-forced decoding of the answer.

        Args:
            input_ids, attention_mask: (B, Lq) question tokens and mask, or (M, Lq) with `question_index`.
            pixel_values: (B, 3, H, W) images, or (N, 3, H, W) distinct images with `image_index`.
            image_index: (B,) row of `pixel_values` for each example (see `encode`).
            decoder_input_ids: (B, T) `BOS answer`, right-padded. Built from `labels` when omitted.
            decoder_attention_mask: (B, T) 1 for real decoder positions. Built from `labels` when omitted.
            labels: (B, T) `answer EOS` aligned with the logits, -100 on padding.
            output_attentions: return the decoder's cross- and self-attention weights (needs eager attention).
            num_items_in_batch: number of label tokens over all micro-batches of an optimizer step (passed by the
                Trainer); the loss is then the token sum divided by it.
            question_features, image_features: cached encoder outputs that replace `input_ids` / `pixel_values`
                (see `encode`).
            question_index: (B,) row of `input_ids` (or `question_features`) for each example (see `encode`).
        """
        if output_attentions and self.decoder.config._attn_implementation != "eager":
            raise ValueError(
                "output_attentions=True needs eager attention (SDPA returns no weights): call "
                "model.set_attn_implementation('eager') first"
            )
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("forward needs decoder_input_ids or labels")
            decoder_input_ids, decoder_attention_mask = self.decoder_inputs_from_labels(labels)
        encoder_hidden_states, encoder_attention_mask, cross_attention_cache = self._fuse(
            input_ids,
            attention_mask,
            pixel_values,
            question_features,
            image_features,
            question_index,
            image_index,
            share_keys_values=True,
        )
        decoder_output = self.decoder(
            inputs_embeds=self.decoder_embeddings(decoder_input_ids, encoder_hidden_states, encoder_attention_mask),
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            past_key_values=cross_attention_cache,
            output_attentions=output_attentions,
            use_cache=False,
        )
        logits = decoder_output.logits  # (B, T, V)
        loss = None if labels is None else answer_loss(logits, labels, num_items_in_batch)
        return VQAModelOutput(
            loss=loss,
            logits=logits,
            cross_attentions=decoder_output.cross_attentions if output_attentions else None,
            decoder_attentions=decoder_output.attentions if output_attentions else None,
            encoder_attention_mask=encoder_attention_mask,
        )

    def decoder_embeddings(
        self,
        decoder_input_ids: torch.LongTensor,
        encoder_hidden_states: torch.FloatTensor,
        encoder_attention_mask: torch.LongTensor,
    ) -> torch.FloatTensor:
        """GPT-2 token embeddings (B, T, Hd) of `decoder_input_ids`; with `conditioned_bos`, position 0 (BOS) also
        gets a learned map of the masked mean of the fused encoder states (B, S, Hd)."""
        embeddings = self.decoder.get_input_embeddings()(decoder_input_ids)
        if self.bos_conditioning is None:
            return embeddings
        summary = _masked_mean(encoder_hidden_states, encoder_attention_mask)  # (B, Hd)
        start = embeddings[:, :1] + self.bos_conditioning(summary).unsqueeze(1).to(embeddings.dtype)
        return torch.cat([start, embeddings[:, 1:]], dim=1)

    def decoder_inputs_from_labels(self, labels: torch.LongTensor) -> tuple[torch.LongTensor, torch.LongTensor]:
        """(B, T) labels `answer EOS` (-100 padded) -> decoder_input_ids `BOS answer` and its attention mask."""
        config = self.config.decoder_config
        shifted = labels.roll(1, dims=1)
        shifted[:, 0] = config.bos_token_id
        # A position is real exactly when it has a target; its input is the previous target (or BOS).
        mask = (labels != -100).long()
        return shifted.masked_fill(mask == 0, config.pad_token_id), mask

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_index: torch.LongTensor | None = None,
        max_new_tokens: int | None = None,
        num_beams: int = 1,
        question_features: torch.FloatTensor | None = None,
        image_features: torch.FloatTensor | None = None,
        question_index: torch.LongTensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.LongTensor:
        """Write answers: the encoders run once, then GPT-2 decodes with its KV cache (greedy or beam search).

        Args:
            input_ids, attention_mask: (B, Lq) question tokens and mask.
            pixel_values: (B, 3, H, W) images, or (N, 3, H, W) distinct images with `image_index`.
            image_index: (B,) row of `pixel_values` for each question (see `encode`).
            max_new_tokens: answer length limit, EOS included (default `config.max_answer_tokens`).
            num_beams: 1 for greedy decoding.
            question_features, image_features: cached encoder outputs (see `encode`).
            question_index: (B,) row of `input_ids` (or `question_features`) for each example (see `encode`).
            generate_kwargs: passed to `GenerationMixin.generate` (e.g. `length_penalty`).

        Returns:
            (B, N) answer token ids without BOS; rows end at EOS and are padded with the pad id after it.
        """
        encoder_hidden_states, encoder_attention_mask = self.encode(
            input_ids, attention_mask, pixel_values, image_index, question_features, image_features, question_index
        )
        config = self.config.decoder_config
        bos = encoder_attention_mask.new_full((encoder_attention_mask.shape[0], 1), config.bos_token_id)
        sequences = self.decoder.generate(
            inputs_embeds=self.decoder_embeddings(bos, encoder_hidden_states, encoder_attention_mask),
            attention_mask=torch.ones_like(bos),
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            max_new_tokens=max_new_tokens or self.config.max_answer_tokens,
            num_beams=num_beams,
            do_sample=False,
            use_cache=True,
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
            **generate_kwargs,
        )
        answers = sequences  # from `inputs_embeds`, generate returns the new tokens only
        # Beam search fills finished rows with EOS, greedy with pad: make every row `answer EOS pad...`.
        is_eos = (answers == config.eos_token_id).long()
        after_first_eos = (is_eos.cumsum(dim=1) - is_eos) > 0
        return answers.masked_fill(after_first_eos, config.pad_token_id)


def _masked_mean(states: torch.FloatTensor, mask: torch.LongTensor) -> torch.FloatTensor:
    """(N, L, H) states and (N, L) mask -> (N, H) mean over the positions where the mask is 1 (0 for none)."""
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def _rows(tensor: torch.Tensor, index: torch.LongTensor | None) -> torch.Tensor:
    """(M, ...) distinct rows -> (B, ...) one per example (`tensor[index]`); unchanged when `index` is None.

    `index_select`, not `tensor[index]`: on CPU the backward of advanced indexing adds the repeated rows' gradients
    with atomic adds from several threads, in an order that changes from run to run (the last bits of the text
    encoder's gradients differed at the first logged step); `index_select`'s backward (`index_add_`) adds them in
    index order, and is faster here too (README, "Reproducible runs").
    """
    return tensor if index is None else tensor.index_select(0, index)


def answer_loss(
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


def labels_from_answers(answer_ids: torch.LongTensor, eos_token_id: int) -> torch.LongTensor:
    """(B, N) generated answers (as from `VQAModel.generate`) -> labels `answer EOS`, -100 after the first EOS.

    Feeding them back as `labels` replays the generation teacher-forced: decoder position t reads the same prefix
    that produced token t. Rows without EOS (cut at the length limit) are kept whole. Pad may equal EOS (GPT-2).
    """
    is_eos = (answer_ids == eos_token_id).long()
    after_first_eos = (is_eos.cumsum(dim=1) - is_eos) > 0
    return answer_ids.masked_fill(after_first_eos, -100)
