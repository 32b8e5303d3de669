"""`model.fusion=resampler`: a Perceiver resampler (Flamingo, Alayrac et al. 2022) compresses each image's encoder
positions to K learned latent tokens before the decoder reads them.

The decoder's cross-attention then costs Lq + K keys per question instead of Lq + I (I = 197 at ViT-B/16, 224 px).
Each layer: the latents attend to the image tokens and to themselves (keys and values: both, each LayerNormed),
then an MLP, both residual. The question tokens pass as in the token fusion. Settings: `VQAConfig.resampler`
(`model.resampler.latents`, `.layers`, `.heads`).

Attention maps trace through it: in eval mode, `FusedSequence.image_sources` (B, K, I) is the rollout of the
resampler's attention (heads averaged, residual counted as half, as in `vqa.inspection.attention.decoder_rollout`),
the share of each image-encoder position in each latent.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from transformers import PretrainedConfig

from vqa.model.fusion import TokenFusion
from vqa.model.settings import resampler_settings


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


class LatentResampler(nn.Module):
    """K learned latents read the image over a few `ResamplerLayer`s: (N, I, Hd) -> (N, K, Hd)."""

    def __init__(self, width: int, settings: Mapping[str, int]) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.empty(settings["latents"], width))
        nn.init.normal_(self.latents, std=0.02)
        self.layers = nn.ModuleList(ResamplerLayer(width, settings["heads"]) for _ in range(settings["layers"]))
        self.output_norm = nn.LayerNorm(width)

    def forward(self, image: torch.FloatTensor) -> tuple[torch.FloatTensor, torch.FloatTensor | None]:
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


class PerceiverResampler(TokenFusion):
    """The token fusion with each image's keys compressed to K latents: (B, Lq + K, Hd), segments `question` and
    `image`."""

    reads_settings = ("resampler",)

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__(config)
        width = config.decoder_config.n_embd
        self.resampler = LatentResampler(width, resampler_settings(config.resampler, width))

    def image_keys(self, image_states: torch.FloatTensor) -> tuple[torch.FloatTensor, torch.FloatTensor | None]:
        return self.resampler(self.image_projection(image_states))

    def projections_of(self, modality: str) -> list[nn.Module]:
        return [*super().projections_of(modality), *([self.resampler] if modality == "image" else [])]
