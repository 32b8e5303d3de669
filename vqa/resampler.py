"""`model.fusion=resampler`: a Perceiver resampler (Flamingo, Alayrac et al. 2022) compresses each image's encoder
positions to K learned latent tokens before the decoder reads them.

The decoder's cross-attention then costs Lq + K keys per question instead of Lq + I (I = 197 at ViT-B/16, 224 px).
Each layer: the latents attend to the image tokens and to themselves (keys and values: both, each LayerNormed),
then an MLP, both residual. The question tokens pass as in the token fusion. Settings: `VQAConfig.resampler`
(`model.resampler.latents`, `.layers`, `.heads`).

Attention maps trace through it: in eval mode, `FusedSequence.image_sources` (B, K, I) is the rollout of the
resampler's attention (heads averaged, residual counted as half, as in `vqa.attention.decoder_rollout`), the share
of each image-encoder position in each latent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vqa.encoder_inputs import EncoderInputs
from vqa.fusion import IMAGE, FusedSequence, TokenFusion, repeat_rows

if TYPE_CHECKING:
    from vqa.configuration import VQAConfig

DEFAULTS: dict[str, int] = {"latents": 32, "layers": 2, "heads": 4}


def resampler_settings(value: Mapping[str, Any] | None) -> dict[str, int]:
    """Checked settings with DEFAULTS filled in. Raises ValueError (one line) on an unknown key or a bad value."""
    settings = {**DEFAULTS, **dict(value or {})}
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"resampler: unknown key {unknown[0]!r}; expected {', '.join(DEFAULTS)}")
    for name, number in settings.items():
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            raise ValueError(f"resampler.{name}: got {number!r}, expected a positive integer")
    return settings


class ResamplerLayer(nn.Module):
    """Latents (N, K, Hd) attend to [image tokens; latents] (N, I + K, Hd), then an MLP; both residual."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.query_norm = nn.LayerNorm(width)
        self.key_norm = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, latents: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> updated latents (N, K, Hd) and, in eval mode, the attention weights (N, K, I + K) averaged over heads
        (training skips them: asking for weights takes attention off its fast path)."""
        queries = self.query_norm(latents)
        keys = self.key_norm(torch.cat([image, latents], dim=1))
        attended, weights = self.attention(queries, keys, keys, need_weights=not self.training)
        latents = latents + attended
        return latents + self.mlp(latents), weights


class PerceiverResampler(TokenFusion):
    """Question tokens as keys (as `TokenFusion`), then K latent tokens per image: (B, Lq + K, Hd), segments
    `question` and `image`."""

    def __init__(self, config: VQAConfig) -> None:
        super().__init__(config)
        settings = resampler_settings(config.resampler)
        width = config.decoder_config.n_embd
        self.latents = nn.Parameter(torch.empty(settings["latents"], width))
        nn.init.normal_(self.latents, std=0.02)
        self.layers = nn.ModuleList(ResamplerLayer(width, settings["heads"]) for _ in range(settings["layers"]))
        self.output_norm = nn.LayerNorm(width)

    def forward(
        self,
        question_states: torch.FloatTensor | None,
        image_states: torch.FloatTensor | None,
        inputs: EncoderInputs,
    ) -> FusedSequence:
        question = None if question_states is None else super().forward(question_states, None, inputs)
        if image_states is None:  # a question-only model: nothing to resample
            return question
        resampled, sources = self.resample(self.image_projection(image_states))  # (N, K, Hd), (N, K, I)
        resampled = self._keys(resampled, IMAGE)
        image_keys = repeat_rows(resampled, inputs.image_index)  # (B, K, Hd)
        fused = FusedSequence(
            image_keys,
            image_keys.new_ones(image_keys.shape[:2], dtype=torch.long),
            [("image", resampled.shape[1])],
            [(resampled, inputs.image_index)],
            image_sources=None if sources is None else repeat_rows(sources, inputs.image_index),
        )
        if question is None:
            return fused
        return FusedSequence(
            torch.cat([question.hidden_states, fused.hidden_states], dim=1),
            torch.cat([question.attention_mask, fused.attention_mask], dim=1),
            question.segments + fused.segments,
            question.shared_rows + fused.shared_rows,
            image_sources=fused.image_sources,
        )

    def resample(self, image: torch.FloatTensor) -> tuple[torch.FloatTensor, torch.FloatTensor | None]:
        """(N, I, Hd) projected image tokens -> (N, K, Hd) latents and, in eval mode, the (N, K, I) rollout of the
        attention (None in training mode)."""
        latents = self.latents.expand(image.shape[0], -1, -1)
        positions = image.shape[1]
        from_image = image.new_zeros(image.shape[0], latents.shape[1], positions)
        for layer in self.layers:
            latents, weights = layer(latents, image)
            if weights is not None:
                with torch.no_grad():  # the rollout is for reading, not training
                    on_image, on_latents = weights[..., :positions], weights[..., positions:]
                    from_image = 0.5 * from_image + 0.5 * (on_image + on_latents @ from_image)
        if self.training:
            return self.output_norm(latents), None
        sources = from_image / from_image.sum(dim=-1, keepdim=True).clamp(min=torch.finfo(from_image.dtype).tiny)
        return self.output_norm(latents), sources
