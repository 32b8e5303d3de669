"""A `VQAModel` from pretrained components (hub names or local folders): the question encoder and image encoder of
any family `vqa.model.encoders` accepts, and a GPT-2-family decoder given new cross-attention layers."""

from __future__ import annotations

import os
from typing import Any

from transformers import GPT2LMHeadModel, PretrainedConfig, PreTrainedModel

from vqa.errors import ConfigError
from vqa.model.configuration import VQAConfig
from vqa.model.encoders import (
    check_encoder_family,
    checkpoint_location,
    install_conv_stem,
    load_encoder,
    local_config,
    pretrained_config,
    with_dropout,
)
from vqa.model.gates import install_cross_attention_gates
from vqa.model.lora import add_adapters
from vqa.model.settings import lora_settings


def assemble_pretrained(
    model_class: type[PreTrainedModel],
    text_encoder: str | os.PathLike[str],
    image_encoder: str | os.PathLike[str],
    decoder: str | os.PathLike[str],
    dropout: float | None = None,
    **config_kwargs: Any,
) -> Any:
    """Assemble a model from pretrained encoder and GPT-2 checkpoints (hub names or local folders).

    The encoders may be of any family that `vqa.model.encoders` accepts (the class comes from each checkpoint's
    config). Fusion modules and GPT-2's new cross-attention layers start from random init; so does a
    `vision_conv_stem`, which replaces the pretrained patch projection. `dropout` sets every dropout probability
    of the three components (None keeps each checkpoint's own). `config_kwargs` go to `VQAConfig`.
    """
    text_model = load_encoder(text_encoder, "text", dropout)
    image_model = load_encoder(image_encoder, "image", dropout)
    decoder_model = load_decoder(decoder, dropout)
    lora = config_kwargs.pop("lora", None)
    config = VQAConfig(
        text_config=text_model.config,
        vision_config=image_model.config,
        decoder_config=decoder_model.config,
        **config_kwargs,
    )
    model = model_class(config)
    if config.vision_conv_stem:
        install_conv_stem(image_model).he_init()
    if config.cross_attention_gate:
        install_cross_attention_gates(decoder_model)
    model.text_encoder = text_model
    model.image_encoder = image_model
    model.decoder = decoder_model
    model.config.lora = lora_settings(lora)  # the adapters go onto the pretrained weights
    if model.config.lora:
        add_adapters(model, model.config.lora)
    model.apply_freeze()
    return model


def check_decoder(config: PretrainedConfig, source: str = "model.decoder") -> None:
    """Refuse, in one line, a decoder outside the GPT-2 family: loaded into GPT-2 anyway, another family would give
    mostly random weights, and the cross-attention cache and generation use GPT-2's layers."""
    if config.model_type != "gpt2":
        raise ConfigError(
            f"{source}: a {config.model_type!r} model; expected a GPT-2-family decoder (gpt2 ... gpt2-xl)"
        )


def check_local_components(
    text_encoder: str | os.PathLike[str] | None = None,
    image_encoder: str | os.PathLike[str] | None = None,
    decoder: str | os.PathLike[str] | None = None,
) -> PretrainedConfig | None:
    """The family checks of `assemble_pretrained`, for the run's checks before any data is built: each component
    named by a folder (or a hub name already in the local cache) has its config read and checked now; the others
    are checked when the model is built. Returns the decoder's config when it was readable (its width bounds other
    settings), else None.

    Raises:
        ConfigError, CheckpointError: one line naming the component (a missing folder, a wrong family).
    """
    for role, name in (("text", text_encoder), ("image", image_encoder)):
        if name is not None:
            source = f"model.{role}_encoder ({name})"
            config = local_config(name, source)
            if config is not None:
                check_encoder_family(config, role, source)
    if decoder is None:
        return None
    source = f"model.decoder ({decoder})"
    config = local_config(decoder, source)
    if config is not None:
        check_decoder(config, source)
    return config


def load_decoder(name_or_path: str | os.PathLike[str], dropout: float | None = None) -> GPT2LMHeadModel:
    """A pretrained GPT-2-family decoder with (new, random) cross-attention layers; `dropout` sets its dropout
    probabilities (None keeps the checkpoint's)."""
    source = f"model.decoder ({name_or_path})"
    config = pretrained_config(name_or_path, source)
    check_decoder(config, source)
    config.add_cross_attention = True
    decoder = GPT2LMHeadModel.from_pretrained(
        checkpoint_location(name_or_path, source), config=with_dropout(config, dropout)
    )
    if decoder.config.pad_token_id is None:
        # GPT-2 has no pad token; padded positions are masked and labelled -100, so EOS can stand in.
        decoder.config.pad_token_id = decoder.config.eos_token_id
    return decoder
