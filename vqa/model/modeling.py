"""`VQAModel`: a question encoder and an image encoder, fused into the sequence that GPT-2 cross-attends to.

The encoders come from `vqa.model.encoders` (any Auto text model, any patch-token vision model), the fusion from
`vqa.model.fusion`, the training objective from `vqa.training.objectives`; this module holds the decoder side: GPT-2's
shared cross-attention cache, BOS conditioning, teacher-forced decoding and generation.

Shapes used throughout: B batch, T decoder positions, S fused encoder positions, Hd the decoder width, V answer
vocabulary; the encoder inputs' shapes are in `vqa.model.encoder_inputs`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache, EncoderDecoderCache, GPT2LMHeadModel, PreTrainedModel
from transformers.utils import ModelOutput

from vqa.model.classifier import IGNORE, AnswerClassifier
from vqa.model.configuration import VQAConfig
from vqa.model.encoder_inputs import EncoderInputs
from vqa.model.encoders import (
    build_encoder,
    image_states,
    install_conv_stem,
    passage_states,
    question_states,
    unused_parameters,
)
from vqa.model.freezing import apply_freeze, parameter_table, resolve_freeze
from vqa.model.fusion import FusedSequence, fusion_class, masked_mean, repeat_rows
from vqa.model.gates import install_cross_attention_gates
from vqa.model.lora import add_adapters, merge_adapters
from vqa.model.loss import answer_cross_entropy
from vqa.model.pretrained import assemble_pretrained
from vqa.model.settings import INPUTS
from vqa.model.transformers_compat import kv_cache_keyword, quiet_generated_padding_warning

# Checkpoints written before the fusion became its own module kept its parameters at the top level.
LEGACY_KEYS = {r"^(text_projection|image_projection|modality_embedding)\.": r"fusion.\1."}

quiet_generated_padding_warning()  # a false warning of transformers' generate (see its docstring)


@dataclass
class VQAModelOutput(ModelOutput):
    """Output of `VQAModel.forward`.

    Attributes:
        loss: scalar, cross-entropy over answer tokens and EOS (when `labels` are given).
        logits: (B, T, V) next-token scores at every decoder position.
        cross_attentions: one (B, heads, T, S) tensor per decoder layer, when `output_attentions=True`.
        decoder_attentions: one (B, heads, T, T) causal self-attention tensor per decoder layer, likewise.
        encoder_attention_mask: (B, S) 1 for the fused encoder positions the decoder may attend to.
        encoder_segments: the fusion's named parts of the S positions, [(name, length), ...].
        encoder_image_sources: (B, K, I) for a fusion whose image keys are not the image encoder's positions (see
            `FusedSequence.image_sources`); None otherwise.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    decoder_attentions: tuple[torch.FloatTensor, ...] | None = None
    encoder_attention_mask: torch.LongTensor | None = None
    encoder_segments: list[tuple[str, int]] | None = None
    encoder_image_sources: torch.FloatTensor | None = None


class VQAModel(PreTrainedModel):
    """Question and image encoders fused into a GPT-2 decoder that writes the answer.

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
        self.text_encoder = build_encoder(config.text_config)
        self.image_encoder = build_encoder(config.vision_config)
        conv_stem = install_conv_stem(self.image_encoder) if config.vision_conv_stem else None
        self.decoder = GPT2LMHeadModel(config.decoder_config)
        if config.cross_attention_gate:
            install_cross_attention_gates(self.decoder)
        self.fusion = fusion_class(config.fusion)(config)
        decoder_width = config.decoder_config.n_embd
        self.bos_conditioning = nn.Linear(decoder_width, decoder_width) if config.conditioned_bos else None
        self.answer_classifier = None
        if config.head == "classifier":
            self.answer_classifier = AnswerClassifier(
                decoder_width, len(config.answer_vocabulary), config.max_answer_tokens
            )
        self.frozen_components = resolve_freeze(config.freeze)
        self.post_init()
        if self.bos_conditioning is not None:
            # Zero at init: the decoder starts exactly as without it (a pretrained GPT-2 is not disturbed).
            nn.init.zeros_(self.bos_conditioning.weight)
            nn.init.zeros_(self.bos_conditioning.bias)
        if conv_stem is not None:
            conv_stem.he_init()  # after post_init, which would give it the encoder's init
        if config.lora:
            add_adapters(self, config.lora)
        self.apply_freeze()

    @property
    def active_encoders(self) -> tuple[str, ...]:
        """The encoders that `config.inputs` runs: `text_encoder`, `image_encoder` or both."""
        left_out = {"question_only": "image_encoder", "image_only": "text_encoder"}.get(self.config.inputs)
        return tuple(name for name in ("text_encoder", "image_encoder") if name != left_out)

    @property
    def adapted_components(self) -> frozenset[str]:
        """The components with LoRA adapters (`config.lora`)."""
        return frozenset(self.config.lora["targets"] if self.config.lora else ())

    @property
    def fixed_components(self) -> frozenset[str]:
        """Frozen components without adapters: they run in eval mode without autograd (and are cacheable)."""
        return self.frozen_components - self.adapted_components

    def set_freeze(self, spec: str | list[str]) -> None:
        """Freeze by `spec` (as `config.freeze`) from now on: the config, the frozen set and `requires_grad`.

        Raises:
            ValueError: an unknown preset or component, naming it.
        """
        self.frozen_components = resolve_freeze(spec)
        self.config.freeze = spec
        self.apply_freeze()

    def apply_freeze(self) -> None:
        """`requires_grad` from `config.freeze`, and off for the unused parameters (DDP rejects trainable
        parameters that get no gradient, and the optimizer should not decay them)."""
        if self.config.inputs not in INPUTS:  # from_pretrained(..., inputs=...) bypasses VQAConfig's own check
            raise ValueError(f"VQAConfig.inputs: got {self.config.inputs!r}, expected one of {', '.join(INPUTS)}")
        apply_freeze(self, self.frozen_components, self.adapted_components)
        for parameter in parameters_without_gradient(self):
            parameter.requires_grad_(False)

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
        """`PreTrainedModel.from_pretrained`, then the config's freeze spec (loading makes every weight trainable).

        Checkpoints of earlier versions load too: their parameter names are mapped (`LEGACY_KEYS`).
        """
        kwargs["key_mapping"] = {**LEGACY_KEYS, **(kwargs.get("key_mapping") or {})}
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # a tuple with output_loading_info=True
        # transformers keeps a used renaming and reverses it on save: drop ours, so old checkpoints re-save as new.
        conversions = getattr(model, "_weight_conversions", None)
        if conversions:
            model._weight_conversions = [
                conversion for conversion in conversions if not set(conversion.source_patterns) & set(LEGACY_KEYS)
            ]
        model.apply_freeze()
        return loaded

    @classmethod
    def from_pretrained_components(
        cls,
        text_encoder: str | os.PathLike[str],
        image_encoder: str | os.PathLike[str],
        decoder: str | os.PathLike[str],
        dropout: float | None = None,
        **config_kwargs: Any,
    ) -> VQAModel:
        """Assemble a model from pretrained encoder and GPT-2 checkpoints (hub names or local folders); see
        `vqa.model.pretrained.assemble_pretrained`."""
        return assemble_pretrained(cls, text_encoder, image_encoder, decoder, dropout, **config_kwargs)

    def merge_lora(self) -> int:
        """Fold the LoRA adapters into their weights for inference (it then saves as a plain model); returns how
        many layers were merged."""
        merged = merge_adapters(self)
        self.config.lora = None
        self.apply_freeze()
        return merged

    def parameter_table(self) -> str:
        """Trainable and total parameters per component, as a printable table."""
        return parameter_table(self)

    def train(self, mode: bool = True) -> VQAModel:
        """Like `nn.Module.train`, but frozen encoders (and a wholly frozen decoder) stay in eval mode."""
        super().train(mode)
        for name in ("text_encoder", "image_encoder"):
            if name in self.fixed_components:
                getattr(self, name).eval()
        if {"decoder", "cross_attention"} <= self.fixed_components:
            self.decoder.eval()
        return self

    def _encoder_context(self, component: str) -> torch.autograd.grad_mode._NoParamDecoratorContextManager:
        # A fixed encoder needs no autograd graph: this saves its activations' memory and the backward pass.
        return torch.no_grad() if component in self.fixed_components else torch.enable_grad()

    def encode(self, inputs: EncoderInputs) -> FusedSequence:
        """Run the encoders (or take their cached outputs) and fuse them into the decoder's cross-attention keys.

        With `config.inputs="question_only"` the image inputs are ignored and the image encoder does not run; with
        `"image_only"` likewise for the question. Retrieved passages in `inputs` go through the text encoder too,
        with gradients only when `config.passages="trained"` and the text encoder trains.
        """
        question = image = passages = None
        if "text_encoder" in self.active_encoders:
            with self._encoder_context("text_encoder"):
                question = question_states(self.text_encoder, inputs, self.dtype)
        if "image_encoder" in self.active_encoders:
            with self._encoder_context("image_encoder"):
                image = image_states(self.image_encoder, inputs, self.dtype)
        if inputs.passage_input_ids is None:
            return self.fusion(question, image, inputs)
        if self.config.passages == "none":
            raise ValueError("the batch has passages but the model has passages='none' (VQAConfig.passages)")
        trained = self.config.passages == "trained" and "text_encoder" not in self.fixed_components
        with torch.enable_grad() if trained else torch.no_grad():
            passages = passage_states(self.text_encoder, inputs, self.dtype)
        return self.fusion(question, image, inputs, passage_states=passages)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        *,
        question_features: torch.FloatTensor | None = None,
        image_features: torch.FloatTensor | None = None,
        question_index: torch.LongTensor | None = None,
        image_index: torch.LongTensor | None = None,
        passage_input_ids: torch.LongTensor | None = None,
        passage_attention_mask: torch.LongTensor | None = None,
        passage_index: torch.LongTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        output_attentions: bool = False,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> VQAModelOutput:
        """Teacher-forced decoding of the answer.

        Args:
            input_ids ... passage_index (the first ten): the encoder inputs, packed into one `EncoderInputs`
                (documented there).
            decoder_input_ids: (B, T) `BOS answer`, right-padded. Built from `labels` when omitted.
            decoder_attention_mask: (B, T) 1 for real decoder positions. Built from `labels` when omitted.
            labels: (B, T) `answer EOS` aligned with the logits, -100 on padding: the loss is then
                `vqa.training.objectives.answer_cross_entropy` (training calls the configured objective instead).
            output_attentions: return the decoder's cross- and self-attention weights (needs eager attention).
            num_items_in_batch: number of label tokens over all micro-batches of an optimizer step (passed by the
                Trainer); the loss is then the token sum divided by it.
        """
        inputs = EncoderInputs.pick(locals())
        if output_attentions and self.decoder.config._attn_implementation != "eager":
            raise ValueError(
                "output_attentions=True needs eager attention (SDPA returns no weights): call "
                "model.set_attn_implementation('eager') first"
            )
        if self.answer_classifier is not None:
            return self.classify(inputs, labels, output_attentions)
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("forward needs decoder_input_ids or labels")
            decoder_input_ids, decoder_attention_mask = self.decoder_inputs_from_labels(labels)
        fused = self.encode(inputs)
        decoder_output = self.decoder(
            inputs_embeds=self.decoder_embeddings(decoder_input_ids, fused),
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=fused.hidden_states,
            encoder_attention_mask=fused.attention_mask,
            output_attentions=output_attentions,
            use_cache=False,
            **{kv_cache_keyword(): shared_cross_attention_cache(self.decoder, fused)},
        )
        logits = decoder_output.logits  # (B, T, V)
        loss = None if labels is None else answer_cross_entropy(logits, labels, num_items_in_batch)
        return model_output(loss, logits, decoder_output, fused, output_attentions)

    def classify(
        self, inputs: EncoderInputs, labels: torch.LongTensor | None = None, output_attentions: bool = False
    ) -> VQAModelOutput:
        """The classifier head (`vqa.model.classifier`): GPT-2 reads BOS alone, cross-attending to the fused sequence;
        its final state at BOS (B, Hd) gives `logits` (B, A), one score per answer of `config.answer_vocabulary`.

        Args:
            labels: (B, T) `answer EOS` as for the generator; the loss is then the cross-entropy of each answer's
                class, over the rows whose answer is in the vocabulary (training calls the configured objective).
        """
        fused = self.encode(inputs)
        bos = fused.attention_mask.new_full((fused.attention_mask.shape[0], 1), self.config.decoder_config.bos_token_id)
        decoder_output = self.decoder.transformer(
            inputs_embeds=self.decoder_embeddings(bos, fused),
            encoder_hidden_states=fused.hidden_states,
            encoder_attention_mask=fused.attention_mask,
            output_attentions=output_attentions,
            use_cache=False,
            # As for the generator: the cross-attention keys and values of each distinct question and image once.
            **{kv_cache_keyword(): shared_cross_attention_cache(self.decoder, fused)},
        )
        logits = self.answer_classifier(decoder_output.last_hidden_state[:, 0])  # (B, A)
        loss = None
        if labels is not None:
            classes = self.answer_classifier.classes_of(labels)
            # Rows outside the vocabulary have no class: with none in the batch the loss is 0, not NaN.
            total = nn.functional.cross_entropy(logits.float(), classes, ignore_index=IGNORE, reduction="sum")
            loss = total / (classes != IGNORE).sum().clamp(min=1)
        return model_output(loss, logits, decoder_output, fused, output_attentions)

    def decoder_embeddings(self, decoder_input_ids: torch.LongTensor, fused: FusedSequence) -> torch.FloatTensor:
        """GPT-2 token embeddings (B, T, Hd) of `decoder_input_ids`; with `conditioned_bos`, position 0 (BOS) also
        gets a learned map of the masked mean of the fused encoder states."""
        embeddings = self.decoder.get_input_embeddings()(decoder_input_ids)
        if self.bos_conditioning is None:
            return embeddings
        summary = masked_mean(fused.hidden_states, fused.attention_mask)  # (B, Hd)
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
        *,
        question_features: torch.FloatTensor | None = None,
        image_features: torch.FloatTensor | None = None,
        question_index: torch.LongTensor | None = None,
        image_index: torch.LongTensor | None = None,
        passage_input_ids: torch.LongTensor | None = None,
        passage_attention_mask: torch.LongTensor | None = None,
        passage_index: torch.LongTensor | None = None,
        max_new_tokens: int | None = None,
        num_beams: int = 1,
        do_sample: bool = False,
        **generate_kwargs: Any,
    ) -> torch.LongTensor:
        """Write answers: the encoders run once, then GPT-2 decodes with its KV cache (greedy or beam search).

        Args:
            input_ids ... passage_index (the first ten): the encoder inputs, packed into one `EncoderInputs`
                (documented there).
            max_new_tokens: answer length limit, EOS included (default `config.max_answer_tokens`).
            num_beams: 1 for greedy decoding.
            do_sample: sample instead (with `temperature`, `top_k`, `top_p` among `generate_kwargs`).
            generate_kwargs: passed to `GenerationMixin.generate` (e.g. `length_penalty`).

        Returns:
            (B, N) answer token ids without BOS; rows end at EOS and are padded with the pad id after it.
        """
        config = self.config.decoder_config
        if self.answer_classifier is not None:  # the top answer's tokens, as the generator would write them
            classes = self.classify(EncoderInputs.pick(locals())).logits.argmax(dim=1)
            return self.answer_classifier.answer_tokens(classes, config.pad_token_id)
        fused = self.encode(EncoderInputs.pick(locals()))
        bos = fused.attention_mask.new_full((fused.attention_mask.shape[0], 1), config.bos_token_id)
        if num_beams == 1 and generate_kwargs.get("num_return_sequences", 1) == 1:
            # Cross-attention keys and values once per distinct question and image, as in training. Beam search
            # and several sequences per row expand the batch inside `generate`, which a filled cache does not follow.
            cache = shared_cross_attention_cache(self.decoder, fused)
            if cache is not None:
                generate_kwargs[kv_cache_keyword()] = cache
        answers = self.decoder.generate(  # from `inputs_embeds`, generate returns the new tokens only
            inputs_embeds=self.decoder_embeddings(bos, fused),
            attention_mask=torch.ones_like(bos),
            encoder_hidden_states=fused.hidden_states,
            encoder_attention_mask=fused.attention_mask,
            max_new_tokens=max_new_tokens or self.config.max_answer_tokens,
            num_beams=num_beams,
            do_sample=do_sample,
            use_cache=True,
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
            **generate_kwargs,
        )
        # Beam search fills finished rows with EOS, greedy with pad: make every row `answer EOS pad...`.
        is_eos = (answers == config.eos_token_id).long()
        after_first_eos = (is_eos.cumsum(dim=1) - is_eos) > 0
        return answers.masked_fill(after_first_eos, config.pad_token_id)


def model_output(
    loss: torch.Tensor | None, logits: torch.Tensor, decoder_output: Any, fused: FusedSequence, attentions: bool
) -> VQAModelOutput:
    """`VQAModelOutput` of a forward pass: the loss, the logits ((B, T, V) of the generator, (B, A) of the classifier),
    the decoder's attention weights when asked for, and the fused sequence's mask, segments and image sources."""
    return VQAModelOutput(
        loss=loss,
        logits=logits,
        cross_attentions=decoder_output.cross_attentions if attentions else None,
        decoder_attentions=decoder_output.attentions if attentions else None,
        encoder_attention_mask=fused.attention_mask,
        encoder_segments=fused.segments,
        encoder_image_sources=fused.image_sources,
    )


def parameters_without_gradient(model: VQAModel) -> list[nn.Parameter]:
    """Parameters that never get a gradient: those of the encoder and projection of the modality that
    `config.inputs` leaves out, and the parts of an encoder that its `last_hidden_state` skips."""
    modules = []
    for name, modality in (("text_encoder", "text"), ("image_encoder", "image")):
        if name not in model.active_encoders:
            modules += [getattr(model, name), *model.fusion.projections_of(modality)]
    skipped = unused_parameters(model.text_encoder) + unused_parameters(model.image_encoder)
    return [parameter for module in modules for parameter in module.parameters()] + skipped


def shared_cross_attention_cache(decoder: GPT2LMHeadModel, fused: FusedSequence) -> EncoderDecoderCache | None:
    """GPT-2's cross-attention keys and values, with each distinct question's and image's computed once; None when
    the fusion gives no shared rows (`FusedSequence.shared_rows`) or every example has its own.

    Each GPT-2 block projects the fused sequence to keys and values (`c_attn`), position by position; over the
    B x I repeated image positions of an image-grouped batch that projection dominates training time. It is applied
    here to the distinct rows only, then repeated, and GPT-2 reads the result as an already-filled cross-attention
    cache (as in generation, where it is filled once per answer). Gradients flow through it.

    Returns:
        a cache whose cross-attention part holds, per layer, (B, heads, S, head_dim) keys and values.
    """
    shared_rows = fused.shared_rows
    if shared_rows is None or all(index is None for _, index in shared_rows):
        return None
    cross_attention = DynamicCache()
    for layer, block in enumerate(decoder.transformer.h):
        attention = block.crossattention
        keys_values = torch.cat([repeat_rows(attention.c_attn(rows), index) for rows, index in shared_rows], dim=1)
        keys, values = keys_values.split(attention.split_size, dim=2)  # (B, S, Hd) each
        shape = (*keys.shape[:-1], -1, attention.head_dim)
        cross_attention.update(keys.view(shape).transpose(1, 2), values.view(shape).transpose(1, 2), layer)
    cache = EncoderDecoderCache(DynamicCache(), cross_attention)
    for layer in range(len(decoder.transformer.h)):
        cache.is_updated[layer] = True  # GPT-2 then reads these instead of projecting the fused sequence
    return cache


def labels_from_answers(answer_ids: torch.LongTensor, eos_token_id: int) -> torch.LongTensor:
    """(B, N) generated answers (as from `VQAModel.generate`) -> labels `answer EOS`, -100 after the first EOS.

    Feeding them back as `labels` replays the generation teacher-forced: decoder position t reads the same prefix
    that produced token t. Rows without EOS (cut at the length limit) are kept whole. Pad may equal EOS (GPT-2).
    """
    is_eos = (answer_ids == eos_token_id).long()
    after_first_eos = (is_eos.cumsum(dim=1) - is_eos) > 0
    return answer_ids.masked_fill(after_first_eos, -100)
