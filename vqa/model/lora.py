"""LoRA adapters (Hu et al. 2021) on chosen components, through the `peft` library.

`VQAConfig.lora` (`model.lora` in the Hydra config) names the components that get adapters and their rank:
`targets` among `decoder` (GPT-2's self-attention and MLP), `cross_attention` (GPT-2's cross-attention),
`text_encoder`, `image_encoder`; `r`, `alpha`, `dropout`. Every linear layer of a targeted component gets an
adapter (peft's `inject_adapter_in_model`, in place, so the model stays a `VQAModel` and saves and loads as one);
the component's own weights are frozen and only its adapters train. Other components follow `freeze` as usual.
`merge_adapters` folds the adapters into the weights for inference.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers.pytorch_utils import Conv1D

from vqa.model.freezing import component_of


def adapter_targets(model: nn.Module, components: list[str]) -> list[str]:
    """Full names of the linear layers (nn.Linear, GPT-2's Conv1D) of `components`; GPT-2's LM head is left out
    (it is tied to the token embeddings)."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear | Conv1D)
        and component_of(f"{name}.weight") in components
        and not name.endswith("lm_head")
    ]


def add_adapters(model: nn.Module, settings: Mapping[str, Any]) -> None:
    """Inject LoRA adapters into the linear layers of `settings["targets"]`, in place."""
    config = LoraConfig(
        r=settings["r"],
        lora_alpha=settings["alpha"],
        lora_dropout=settings["dropout"],
        target_modules=adapter_targets(model, settings["targets"]),
    )
    with warnings.catch_warnings():
        # peft switches fan_in_fan_out per layer between nn.Linear (encoders) and Conv1D (GPT-2), and warns each time.
        warnings.filterwarnings("ignore", message="fan_in_fan_out is set to")
        inject_adapter_in_model(config, model)


def merge_adapters(model: nn.Module) -> int:
    """Fold every adapter into its layer's weight and put the plain layer back; returns how many were merged."""
    layers = [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    for name, layer in layers:
        layer.merge()
        parent_name, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attribute, layer.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config  # set by peft's injection; nothing of it is left
    return len(layers)
