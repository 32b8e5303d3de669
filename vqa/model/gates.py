"""Gated cross-attention (Flamingo, Alayrac et al. 2022): each GPT-2 block's cross-attention output is multiplied by
tanh(g), one learnable scalar g per block, initialised at zero.

At initialisation the decoder is then exactly the language model it was: the new, randomly initialised cross-
attention layers add nothing until training opens the gates, so a pretrained GPT-2 is not disturbed at the start.
Switched on by `VQAConfig.cross_attention_gate` (`model.cross_attention_gate=true`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import GPT2LMHeadModel

GATE = "gate"  # the parameter's name on each block's `crossattention` module (the `cross_attention` component)


def install_cross_attention_gates(decoder: GPT2LMHeadModel) -> None:
    """Give every block's cross-attention a zero gate and multiply its output by tanh(gate)."""
    for block in decoder.transformer.h:
        attention = block.crossattention
        attention.register_parameter(GATE, nn.Parameter(torch.zeros((), dtype=attention.c_proj.weight.dtype)))
        attention.register_forward_hook(_apply_gate)


def _apply_gate(module: nn.Module, args: Any, output: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Forward hook of a gated cross-attention: (B, T, Hd) output -> tanh(gate) * output; weights unchanged."""
    return (output[0] * torch.tanh(getattr(module, GATE)).to(output[0].dtype), *output[1:])


def gate_values(decoder: GPT2LMHeadModel) -> dict[str, float]:
    """{`cross_attention_gate/<layer>`: tanh(gate)} for a gated decoder, {} otherwise (for the training log)."""
    return {
        f"cross_attention_gate/{layer}": float(torch.tanh(getattr(block.crossattention, GATE).detach()))
        for layer, block in enumerate(decoder.transformer.h)
        if hasattr(block.crossattention, GATE)
    }
