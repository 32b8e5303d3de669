"""Matplotlib views of `AnswerAttention`: patch heat maps over the image, a layer-by-token grid, question bars.

Each function returns a `matplotlib.figure.Figure` (shown inline in a notebook); `save_figure` writes a PNG and
closes it. matplotlib is imported on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from vqa.data.images import to_rgb
from vqa.inspection.attention import AnswerAttention, Head, Layer

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

HEAT_MAP = "inferno"


def pyplot() -> Any:
    """matplotlib.pyplot, imported on first use (with the backend matplotlib picks: Agg without a display)."""
    import matplotlib.pyplot as plt

    return plt


def upsample(patch_map: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(rows, cols) patch weights -> (height, width) bilinear heat map, scaled to [0, 1] for display."""
    heat = F.interpolate(patch_map[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
    heat = heat - heat.min()
    return (heat / heat.max().clamp(min=1e-12)).numpy()


def draw_overlay(
    ax: Axes, maps: AnswerAttention, patch_map: torch.Tensor, title: str = "", alpha: float = 0.55
) -> None:
    """The image with a (rows, cols) patch heat map upsampled over it (or the bare map when there is no image)."""
    if maps.image is not None:
        image = np.asarray(to_rgb(maps.image))
        ax.imshow(image)
        ax.imshow(upsample(patch_map, image.shape[:2]), cmap=HEAT_MAP, alpha=alpha)
    else:
        ax.imshow(patch_map.numpy(), cmap=HEAT_MAP)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def draw_question_bars(ax: Axes, maps: AnswerAttention, layer: Layer = "mean", head: Head = "mean") -> None:
    """Grouped bars: the attention on each question token, one colour per generated answer token."""
    weights = maps.question_attention(layer, head).numpy()  # (T, Lq)
    steps, num_tokens = weights.shape
    width = 0.8 / steps
    positions = np.arange(num_tokens)
    for step, token in enumerate(maps.answer_tokens):
        ax.bar(positions + (step - (steps - 1) / 2) * width, weights[step], width, label=f"writing {token!r}")
    ax.set_xticks(positions, maps.question_tokens, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("attention")
    ax.set_title(f"question tokens ({_describe(layer, head)})", fontsize=9)
    ax.legend(fontsize=7)


def plot_answer_attention(maps: AnswerAttention, layer: Layer = "mean", head: Head = "mean") -> Figure:
    """The image, one overlay per generated token (with the image's share of the attention), and question bars."""
    plt = pyplot()
    steps = len(maps.answer_tokens)
    figure = plt.figure(figsize=(2.4 * (steps + 1), 5.2), layout="constrained")
    grid = figure.add_gridspec(2, steps + 1, height_ratios=[1.2, 1])
    image_axis = figure.add_subplot(grid[0, 0])
    if maps.image is not None:
        image_axis.imshow(to_rgb(maps.image))
    image_axis.set_title("image", fontsize=9)
    image_axis.set_axis_off()
    patches, image_share = maps.patch_attention(layer, head), maps.image_share(layer, head)
    for step, token in enumerate(maps.answer_tokens):
        title = f"writing {token!r}\n{100 * image_share[step]:.0f}% on the image"
        draw_overlay(figure.add_subplot(grid[0, step + 1]), maps, patches[step], title)
    draw_question_bars(figure.add_subplot(grid[1, :]), maps, layer, head)
    figure.suptitle(f"Q: {maps.question}   A: {maps.answer}   [{_describe(layer, head)}]", fontsize=10)
    return figure


def plot_layer_grid(maps: AnswerAttention, head: Head = "mean") -> Figure:
    """Patch heat maps in a grid: one row per decoder layer, then their mean and the rollout; one column per token."""
    plt = pyplot()
    layers: list[Layer] = [*range(maps.num_layers), "mean", "rollout"]
    steps = len(maps.answer_tokens)
    figure, axes = plt.subplots(
        len(layers), steps, figsize=(2.2 * steps, 2.2 * len(layers)), squeeze=False, layout="constrained"
    )
    for row, layer in enumerate(layers):
        patches = maps.patch_attention(layer, "mean" if layer == "rollout" else head)
        for step, token in enumerate(maps.answer_tokens):
            name = f"layer {layer}" if isinstance(layer, int) else layer
            draw_overlay(axes[row, step], maps, patches[step], f"{name}, writing {token!r}")
    figure.suptitle(f"Q: {maps.question}   A: {maps.answer}   (head: {head})", fontsize=10)
    return figure


def save_figure(figure: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write `figure` as a PNG (creating the folder) and close it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    pyplot().close(figure)
    return path


def _describe(layer: Layer, head: Head) -> str:
    if layer == "rollout":
        return "rollout to the inputs"
    layer_text = "mean over layers" if layer == "mean" else f"layer {layer}"
    head_text = "mean over heads" if head == "mean" else f"head {head}"
    return f"{layer_text}, {head_text}"
