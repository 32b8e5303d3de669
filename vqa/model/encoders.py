"""The question and image encoders: any Hugging Face text model whose output has `last_hidden_state`, and any
vision model with patch tokens, each picked from its checkpoint's config through the Auto classes.

Text: DistilBERT (default), BERT, RoBERTa, MiniLM, ... Image: ViT (default), DeiT, DINOv2, and the vision tower of a
full CLIP or SigLIP checkpoint, taken from it automatically. Loading a checkpoint into a fixed class would not fail
for another family: it prints a load report and returns mostly random weights. Picking the class from the config
makes a wrong choice impossible rather than silent.

Shapes: M questions of Lq tokens, N images of H x W pixels; I image-encoder positions: its prefix tokens (ViT's CLS,
DeiT's CLS and distillation token, none for SigLIP), then the P = rows x cols patches.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import logging
import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from torch import nn
from transformers import CONFIG_MAPPING, AutoConfig, PretrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from vqa.errors import CheckpointError, ConfigError, one_line
from vqa.model.encoder_inputs import EncoderInputs

logger = logging.getLogger(__name__)
DEFAULT_MODEL_TYPES = {"text_config": "distilbert", "vision_config": "vit"}
# Settings that leave out a pooling head the VQA model never reads (under DDP an unused trainable parameter is an
# error). `add_pooling_layer` is an __init__ argument (ViT, DeiT, BERT, RoBERTa); `vision_use_head` a config field
# (SigLIP).
POOLER_ARGUMENT = "add_pooling_layer"
POOLER_CONFIG_SWITCHES = {"vision_use_head": False}
# Parameters that `last_hidden_state` does not depend on, by model type (dotted name parts; transformers versions
# differ in the prefix, e.g. `vision_model.`): kept, so checkpoints load whole, but never trained. CLIP's vision tower
# applies its final LayerNorm to the pooled CLS only; DINOv2's mask token replaces patches in masked pretraining only.
UNUSED_PARAMETERS = {"clip_vision_model": ("post_layernorm.",), "dinov2": ("embeddings.mask_token",)}
# The dropout probabilities a component's config may hold, by the names the families use (DistilBERT and CLIP:
# dropout, attention_dropout; BERT and ViT: hidden_dropout_prob, attention_probs_dropout_prob; GPT-2: *_pdrop).
DROPOUT_FIELDS = (
    "dropout",
    "attention_dropout",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
)


def as_sub_config(value: PretrainedConfig | dict[str, Any] | None, default_model_type: str) -> PretrainedConfig:
    """A sub-config from a config object, its dict form (as read back from config.json: its `model_type` picks the
    class), or None for the defaults of `default_model_type`."""
    if value is None:
        return CONFIG_MAPPING[default_model_type]()
    if isinstance(value, dict):
        model_type = value.get("model_type") or default_model_type
        if model_type not in CONFIG_MAPPING:
            raise ValueError(f"model_type {model_type!r} is not a transformers model type")
        return CONFIG_MAPPING[model_type](**{key: item for key, item in value.items() if key != "model_type"})
    if not isinstance(value, PretrainedConfig):
        raise TypeError(f"expected a transformers config or dict, got {type(value).__name__}")
    return value


def checkpoint_location(name_or_path: str | os.PathLike[str], source: str) -> str:
    """`name_or_path` as given, once it can be a checkpoint: an existing folder, or a hub name. A path that is
    neither (transformers would call it a malformed hub repo id) is one line saying the folder does not exist.

    Raises:
        CheckpointError: naming `source` and the missing folder.
    """
    location = str(name_or_path)
    if Path(location).expanduser().is_dir():
        return str(Path(location).expanduser())
    try:
        validate_repo_id(location)
    except HFValidationError:
        raise CheckpointError(f"{source}: folder {location} does not exist (nor is it a hub name)") from None
    return location


def pretrained_config(name_or_path: str | os.PathLike[str], source: str) -> PretrainedConfig:
    """The config of a checkpoint (hub name or local folder); one line (CheckpointError) when there is none."""
    location = checkpoint_location(name_or_path, source)
    try:
        return AutoConfig.from_pretrained(location)
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"{source}: cannot load a config ({one_line(error)}); expected a hub name or a folder with config.json"
        ) from None


def local_config(name_or_path: str | os.PathLike[str], source: str) -> PretrainedConfig | None:
    """The config of a checkpoint when it can be read without the network (a folder, or a hub name already in the
    local cache), else None: the run's checks read what they can before any data is built, and the model build reads
    the rest. A folder that does not exist, or one without a readable config, is refused (CheckpointError)."""
    location = checkpoint_location(name_or_path, source)
    if Path(location).is_dir():
        return pretrained_config(location, source)
    try:
        return AutoConfig.from_pretrained(location, local_files_only=True)
    except (OSError, ValueError):  # not in the cache: the model build downloads and checks it
        return None


def check_text_encoder(config: PretrainedConfig, source: str = "model.text_encoder") -> None:
    """Refuse, in one line, a config that is not a text encoder's: the question encoder runs on `input_ids` (and
    the attention mask) alone and must give one state per question token."""
    expected = (
        "expected a text encoder that runs on input_ids alone and returns last_hidden_state per question token "
        "(distilbert, bert, roberta, ...)"
    )
    if hasattr(config, "vision_config") or hasattr(config, "patch_size"):
        raise ConfigError(f"{source}: a {config.model_type!r} model is not a text encoder; {expected}")
    if getattr(config, "is_encoder_decoder", False):
        # T5, BART, ...: AutoModel gives the whole encoder-decoder, whose forward wants decoder inputs too.
        raise ConfigError(
            f"{source}: a {config.model_type!r} model is an encoder-decoder (its forward needs decoder inputs); "
            f"{expected}"
        )
    forward = inspect.signature(_model_class(config, source).forward).parameters
    if not {"input_ids", "attention_mask"} <= set(forward):
        raise ConfigError(
            f"{source}: a {config.model_type!r} model does not take input_ids and attention_mask; {expected}"
        )


def check_image_encoder(config: PretrainedConfig, source: str = "model.image_encoder") -> None:
    """Refuse, in one line, a config without patch tokens (the decoder reads one key per patch)."""
    if not isinstance(getattr(config, "patch_size", None), int):
        raise ConfigError(
            f"{source}: a {config.model_type!r} model has no patch_size, so no patch tokens; expected a ViT-family "
            "image encoder (vit, deit, dinov2, or a clip / siglip checkpoint's vision tower)"
        )
    _model_class(config, source)


def check_patch_tokens(config: PretrainedConfig, source: str = "model.image_encoder") -> None:
    """Refuse, in one line, an image encoder whose `last_hidden_state` is not one state per patch of the regular
    patch_size grid plus its prefix tokens: the attention maps and the report lay the image keys out on that grid.
    A hierarchical encoder (Swin: its tokens are a merged grid) or a convolutional one (a feature map) is refused.

    The encoder is built and run on the meta device (shapes only: no memory, no weights, well under a second for a
    base-size model), so the check reads the family's real output rather than a list of family names. A family
    that cannot run on the meta device is let through; its shapes are checked when the model first runs.
    """
    check_image_encoder(config, source)
    size = getattr(config, "image_size", None)
    height, width = _pair(size) if isinstance(size, int | list | tuple) else (224, 224)
    rows, cols = patch_grid(config, height, width)
    model_class = _model_class(config, source)
    try:
        with torch.device("meta"):
            encoder = model_class(_without_pooling_head(copy.deepcopy(config)), **_init_arguments(model_class))
            pixels = torch.zeros(1, getattr(config, "num_channels", 3), height, width)
            shape = tuple(encoder(pixel_values=pixels).last_hidden_state.shape)
    except Exception:  # a family the meta device cannot run: left to the first forward pass
        logger.debug("%s: shapes of a %r encoder not checked on the meta device", source, config.model_type)
        return
    expected = (
        f"expected one state per {config.patch_size}x{config.patch_size} patch ({rows * cols} for a {height}x{width} "
        "image) plus prefix tokens, as vit, deit, dinov2 and clip / siglip vision towers give"
    )
    if len(shape) != 3:
        raise ConfigError(
            f"{source}: a {config.model_type!r} model returns a {'x'.join(map(str, shape[1:]))} feature map, not a "
            f"sequence of patch states; {expected}"
        )
    if shape[1] < rows * cols:
        raise ConfigError(
            f"{source}: a {config.model_type!r} model returns {shape[1]} states for a {height}x{width} image (its "
            f"tokens are merged patches, not a grid of {config.patch_size}x{config.patch_size} patches); {expected}"
        )


def vision_tower_config(config: PretrainedConfig) -> PretrainedConfig:
    """A full CLIP or SigLIP config -> its vision tower's config; any other config unchanged."""
    tower = getattr(config, "vision_config", None)
    return tower if isinstance(tower, PretrainedConfig) else config


def build_encoder(config: PretrainedConfig) -> PreTrainedModel:
    """A random-init encoder of `config`'s family, without a pooling head."""
    model_class = _model_class(config, config.model_type)
    return model_class(_without_pooling_head(config), **_init_arguments(model_class))


def with_dropout(config: PretrainedConfig, dropout: float | None) -> PretrainedConfig:
    """`config` with every dropout probability it holds (DROPOUT_FIELDS) set to `dropout`; None leaves the
    checkpoint's own values. Set on the config before the model is built, so that attention kernels that read the
    probability from the config (not from an nn.Dropout module) use it too, and a saved checkpoint keeps it."""
    if dropout is not None:
        for field in DROPOUT_FIELDS:
            if isinstance(getattr(config, field, None), float | int):
                setattr(config, field, float(dropout))
    return config


def load_encoder(name_or_path: str | os.PathLike[str], role: str, dropout: float | None = None) -> PreTrainedModel:
    """A pretrained encoder (hub name or local folder) of whatever family its config names, without a pooling head.

    Args:
        role: `text` or `image`; an image checkpoint with a vision tower inside (CLIP, SigLIP) gives the tower.
        dropout: every dropout probability of the encoder (`with_dropout`); None keeps the checkpoint's.
    """
    source = f"model.{role}_encoder ({name_or_path})"
    config = check_encoder_family(pretrained_config(name_or_path, source), role, source)
    model_class = _model_class(config, source)
    return model_class.from_pretrained(
        checkpoint_location(name_or_path, source),
        config=with_dropout(_without_pooling_head(config), dropout),
        **_init_arguments(model_class),
    )


def check_encoder_family(config: PretrainedConfig, role: str, source: str) -> PretrainedConfig:
    """The config of the encoder a `role` (`text` or `image`) checkpoint gives (an image checkpoint's vision tower),
    once its family fits the role; one line (ConfigError) naming the family and what is expected otherwise."""
    if role == "image":
        config = vision_tower_config(config)
        check_patch_tokens(config, source)
    else:
        check_text_encoder(config, source)
    return config


def unused_parameters(encoder: PreTrainedModel) -> list[nn.Parameter]:
    """The encoder's parameters that its `last_hidden_state` does not depend on (see UNUSED_PARAMETERS)."""
    parts = [f".{part}" for part in UNUSED_PARAMETERS.get(encoder.config.model_type, ())]
    return [parameter for name, parameter in encoder.named_parameters() if any(part in f".{name}" for part in parts)]


def question_states(encoder: PreTrainedModel, inputs: EncoderInputs, dtype: torch.dtype) -> torch.FloatTensor:
    """(M, Lq, Ht) the text encoder's `last_hidden_state`, or the cached one (cast to `dtype`) when given."""
    if inputs.attention_mask is None:
        raise ValueError("attention_mask (M, Lq) is required: it marks the question tokens")
    if (inputs.input_ids is None) == (inputs.question_features is None):
        raise ValueError("give exactly one of input_ids and question_features")
    if inputs.question_features is not None:
        return inputs.question_features.to(dtype)
    return encoder(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask).last_hidden_state


def passage_states(encoder: PreTrainedModel, inputs: EncoderInputs, dtype: torch.dtype) -> torch.FloatTensor | None:
    """(P, Lp, Ht) the text encoder's `last_hidden_state` of the batch's distinct passages; None without passages."""
    if inputs.passage_input_ids is None:
        return None
    if inputs.passage_attention_mask is None or inputs.passage_index is None:
        raise ValueError("passage_input_ids need passage_attention_mask (P, Lp) and passage_index (B, K)")
    states = encoder(input_ids=inputs.passage_input_ids, attention_mask=inputs.passage_attention_mask)
    return states.last_hidden_state.to(dtype)


def image_states(encoder: PreTrainedModel, inputs: EncoderInputs, dtype: torch.dtype) -> torch.FloatTensor:
    """(N, I, Hv) the image encoder's `last_hidden_state`, or the cached one (cast to `dtype`) when given."""
    if (inputs.pixel_values is None) == (inputs.image_features is None):
        raise ValueError("give exactly one of pixel_values and image_features")
    if inputs.image_features is not None:
        return inputs.image_features.to(dtype)
    return encoder(pixel_values=inputs.pixel_values.to(encoder.dtype)).last_hidden_state


def patch_grid(config: PretrainedConfig, height: int, width: int) -> tuple[int, int]:
    """(rows, cols) of patches that an image encoder cuts from a (height, width) input."""
    patch_height, patch_width = _pair(config.patch_size)
    return height // patch_height, width // patch_width


class ConvPatchStem(nn.Sequential):
    """Stride-2 3x3 convolutions down to the patch grid, then a 1x1 projection to the encoder width.

    (N, 3, H, W) -> (N, Hv, H / patch, W / patch), like the single strided convolution it replaces. The patch size
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
        """The last layer's weight: the encoders read `<patch projection>.weight.dtype` to cast their input."""
        return self[-1].weight

    def he_init(self) -> None:
        """He init (the encoders' std-0.02 init would shrink activations at each unnormalised layer), so that image
        content, not the position embeddings, dominates the patch tokens from the start: otherwise every image looks
        alike to the decoder and learning stalls on a plateau."""
        for layer in self:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)


def install_conv_stem(encoder: PreTrainedModel) -> ConvPatchStem:
    """Replace the encoder's patch projection (its one convolution with kernel = stride = patch size) by a
    `ConvPatchStem`; returns the stem. Refuses an encoder without exactly one such convolution."""
    config = encoder.config
    patch = _pair(config.patch_size)
    found = [
        name
        for name, module in encoder.named_modules()
        if isinstance(module, nn.Conv2d) and module.kernel_size == patch and module.stride == patch
    ]
    if len(found) != 1:
        raise ValueError(
            f"vision_conv_stem: a {config.model_type!r} image encoder has {len(found)} patch convolutions "
            f"(kernel = stride = {config.patch_size}); expected exactly one to replace"
        )
    parent_name, _, attribute = found[0].rpartition(".")
    stem = ConvPatchStem(config.num_channels, config.hidden_size, patch[0])
    setattr(encoder.get_submodule(parent_name), attribute, stem)
    return stem


def _model_class(config: PretrainedConfig, source: str) -> type[PreTrainedModel]:
    try:
        return MODEL_MAPPING[type(config)]
    except KeyError:
        raise ConfigError(f"{source}: model_type {config.model_type!r} has no transformers AutoModel class") from None


def _without_pooling_head(config: PretrainedConfig) -> PretrainedConfig:
    for name, value in POOLER_CONFIG_SWITCHES.items():
        if hasattr(config, name):
            setattr(config, name, value)
    return config


def _init_arguments(model_class: type[PreTrainedModel]) -> dict[str, Any]:
    accepts_pooler_switch = POOLER_ARGUMENT in inspect.signature(model_class.__init__).parameters
    return {POOLER_ARGUMENT: False} if accepts_pooler_switch else {}


def _pair(value: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
