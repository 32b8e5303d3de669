"""`VQAConfig`: one config that holds the text encoder, image encoder and decoder configs plus the fusion settings."""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import AutoConfig, DistilBertConfig, GPT2Config, PretrainedConfig, ViTConfig

from vqa.model.encoders import as_sub_config, check_image_encoder, check_text_encoder
from vqa.model.fusion import fusion_class
from vqa.model.settings import (
    HEADS,
    Head,
    Inputs,
    Passages,
    PositiveInt,
    annotations_of,
    check_values,
    model_settings,
    resampler_settings,
)


class VQAConfig(PretrainedConfig):
    """Configuration of `VQAModel`.

    Args:
        text_config: config (or dict) of the question encoder: any text model of `vqa.model.encoders` (DistilBERT when
            None).
        vision_config: config (or dict) of the image encoder: any patch-token vision model (ViT when None).
        decoder_config: GPT-2 config (or dict) of the answer decoder; cross-attention is switched on here.
        fusion: `"tokens"` (every question token and image patch is a cross-attention key), `"pooled"` (the
            textbook baseline: one averaged vector), or the import path of a `vqa.model.fusion.Fusion` subclass.
        projection_layer_norm: apply a LayerNorm after each encoder's linear projection.
        modality_embeddings: add a learned embedding per modality so the decoder can tell text keys from image keys.
        vision_conv_stem: replace the ViT's one-layer patch projection by a small convolutional stem of the same
            stride (Xiao et al. 2021, "Early convolutions help transformers see better"). For ViTs trained from
            scratch on little data; pretrained ViTs keep their own projection.
        conditioned_bos: add a learned map (zero at init) of the mean fused encoder state to GPT-2's BOS embedding,
            so the decoder's first queries already depend on the question and image. Without it, the first
            layer's cross-attention query is the same for every example.
        cross_attention_gate: multiply each GPT-2 block's cross-attention output by tanh(g), a learned scalar per
            block initialised at zero (Flamingo), so the decoder starts as the language model it was
            (`vqa.model.gates`).
        resampler: settings of `fusion="resampler"`, `{"latents": 32, "layers": 2, "heads": 4}` (`vqa.model.resampler`).
        lora: LoRA adapters through peft, `{"targets": [component, ...], "r": 8, "alpha": 16, "dropout": 0.0}` with
            components among decoder, cross_attention, text_encoder, image_encoder (`vqa.model.lora`); None: none.
        inputs: the modalities the decoder reads: `"both"`, or a blind baseline: `"question_only"` (the image
            encoder is not run and no image key enters the cross-attention) or `"image_only"` (likewise for the
            question). The weights of the left-out encoder stay in the model, untrained, so checkpoints load across.
        freeze: a preset name (`nothing`, `encoders`, `text_encoder`, `image_encoder`, `decoder`, `all`) or a list
            of component names (see `vqa.model.freezing.COMPONENTS`).
        max_answer_tokens: default number of new tokens for `generate`.
        head: `"generator"` (GPT-2 writes the answer) or `"classifier"`: a linear layer over `answer_vocabulary`
            reads GPT-2's state at BOS, whose cross-attention in every block pools the fused sequence
            (`vqa.model.classifier`).
        answer_vocabulary: the classifier's answers, in class order (built from the training split by the builders,
            `vqa.model.classifier.answer_vocabulary`); None for the generator.
        passages: `"none"`, or how retrieved passages (`vqa.retrieval`) become a third fused segment: each passage
            encoded by the text encoder without gradients (`"frozen"`) or with them (`"trained"`, when the text encoder
            trains), projected like the question and marked by a third modality embedding. A batch without passages
            runs such a model without the segment. Needs a fusion that reads passages (`Fusion.reads_passages`).
    """

    model_type = "vqa"
    sub_configs: ClassVar[dict[str, type[PretrainedConfig]]] = {
        "text_config": AutoConfig,
        "vision_config": AutoConfig,
        "decoder_config": GPT2Config,
    }

    def __init__(
        self,
        text_config: DistilBertConfig | dict[str, Any] | None = None,
        vision_config: ViTConfig | dict[str, Any] | None = None,
        decoder_config: GPT2Config | dict[str, Any] | None = None,
        fusion: str = "tokens",
        projection_layer_norm: bool = True,
        modality_embeddings: bool = True,
        vision_conv_stem: bool = False,
        conditioned_bos: bool = False,
        cross_attention_gate: bool = False,
        resampler: dict[str, int] | None = None,
        lora: dict[str, Any] | None = None,
        inputs: Inputs = "both",
        freeze: str | list[str] = "nothing",
        max_answer_tokens: PositiveInt = 8,
        head: Head = "generator",
        answer_vocabulary: list[str] | None = None,
        passages: Passages = "none",
        **kwargs: Any,
    ) -> None:
        own = {
            "fusion": fusion,
            "projection_layer_norm": projection_layer_norm,
            "modality_embeddings": modality_embeddings,
            "vision_conv_stem": vision_conv_stem,
            "conditioned_bos": conditioned_bos,
            "cross_attention_gate": cross_attention_gate,
            "resampler": resampler,
            "lora": lora,
            "inputs": inputs,
            "freeze": freeze,
            "max_answer_tokens": max_answer_tokens,
            "head": head,
            "passages": passages,
        }
        try:  # a wrong setting fails here, before any weights are built
            # Types and ranges from this signature's annotations: a string "maybe" for a switch would be truthy.
            check_values(own, annotations_of(VQAConfig))
            settings = model_settings(fusion, inputs, freeze, lora, resampler, passages)
        except ValueError as error:
            raise ValueError(f"VQAConfig.{error}") from None
        if head not in HEADS:
            raise ValueError(f"VQAConfig.head: got {head!r}, expected one of {', '.join(HEADS)}")
        if (head == "classifier") != bool(answer_vocabulary):
            raise ValueError(
                f"VQAConfig.answer_vocabulary: got {len(answer_vocabulary or [])} answers for head={head!r}, expected "
                "a list of answers for the classifier and none for the generator"
            )
        self.text_config = as_sub_config(text_config, "distilbert")
        self.vision_config = as_sub_config(vision_config, "vit")
        check_text_encoder(self.text_config, "VQAConfig.text_config")
        check_image_encoder(self.vision_config, "VQAConfig.vision_config")
        self.decoder_config = _as_config(decoder_config, GPT2Config)
        if "resampler" in fusion_class(fusion).reads_settings:
            try:  # its latents attend at the decoder's width, which the heads must divide
                resampler_settings(resampler, self.decoder_config.n_embd)
            except ValueError as error:
                raise ValueError(f"VQAConfig.{error}") from None
        # The decoder reads the fused encoder sequence through cross-attention in every block.
        self.decoder_config.add_cross_attention = True
        self.decoder_config.is_decoder = True
        self.fusion = settings["fusion"]
        self.projection_layer_norm = projection_layer_norm
        self.modality_embeddings = modality_embeddings
        self.vision_conv_stem = vision_conv_stem
        self.conditioned_bos = conditioned_bos
        self.cross_attention_gate = cross_attention_gate
        self.resampler = settings["resampler"]
        self.lora = settings["lora"]
        self.inputs = settings["inputs"]
        self.freeze = settings["freeze"]
        self.max_answer_tokens = max_answer_tokens
        self.head = head
        self.answer_vocabulary = list(answer_vocabulary) if answer_vocabulary else None
        self.passages = settings["passages"]
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            kwargs.setdefault(name, getattr(self.decoder_config, name, None))
        super().__init__(**kwargs)

    @classmethod
    def tiny(
        cls,
        text_vocab_size: int = 1000,
        answer_vocab_size: int = 1000,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        image_size: int = 64,
        patch_size: int = 8,
        dropout: float = 0.1,
        **kwargs: Any,
    ) -> VQAConfig:
        """Small random-init components for CPU runs and tests (hidden 128, 2 layers; 64x64 images, 8x8 patches).

        The answer vocabulary reserves ids 0, 1, 2 for pad, BOS and EOS (the layout of the tiny answer tokenizer).
        """
        text_config = DistilBertConfig(
            vocab_size=text_vocab_size,
            dim=hidden_size,
            n_layers=num_layers,
            n_heads=num_heads,
            hidden_dim=4 * hidden_size,
            max_position_embeddings=64,
            dropout=dropout,
            attention_dropout=dropout,
            pad_token_id=0,
        )
        vision_config = ViTConfig(
            image_size=image_size,
            patch_size=patch_size,
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=4 * hidden_size,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
        )
        decoder_config = GPT2Config(
            vocab_size=answer_vocab_size,
            n_positions=32,
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
        return cls(text_config=text_config, vision_config=vision_config, decoder_config=decoder_config, **kwargs)


def _as_config(value: PretrainedConfig | dict[str, Any] | None, config_class: type[PretrainedConfig]) -> Any:
    """Accept a config object, its dict form (as read back from config.json), or None for the class defaults."""
    if value is None:
        return config_class()
    if isinstance(value, dict):
        return config_class(**value)
    if not isinstance(value, config_class):
        raise TypeError(f"expected a {config_class.__name__} or dict, got {type(value).__name__}")
    return value
