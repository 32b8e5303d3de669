"""The figures of `python -m vqa.inspection.report`, each returned as a PNG `data:` URI so that report.html holds them
inline.

Every figure is closed once encoded (matplotlib picks its Agg backend on a machine without a display).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vqa.data.images import to_rgb
from vqa.inspection.attention import AnswerAttention
from vqa.inspection.attention_plots import draw_overlay, pyplot

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def png_data_uri(figure: Figure, dpi: int = 96) -> str:
    """Encode `figure` as an inline PNG (`data:image/png;base64,...`) and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    pyplot().close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def learning_curves(log_history: Sequence[dict[str, Any]]) -> str | None:
    """Training loss and evaluation VQA accuracy against step (top) and wall time (bottom), from the Trainer's
    `log_history`; None when nothing was logged (a baseline without training)."""
    training = [entry for entry in log_history if "loss" in entry and "step" in entry]
    evaluation = [entry for entry in log_history if "eval_vqa_accuracy" in entry]
    if not training and not evaluation:
        return None
    plt = pyplot()
    figure, axes = plt.subplots(2, 2, figsize=(10, 6.4), layout="constrained", squeeze=False)
    series = [(training, "loss", "training loss"), (evaluation, "eval_vqa_accuracy", "evaluation VQA accuracy (%)")]
    for column, (entries, key, label) in enumerate(series):
        for row, (x_key, x_label) in enumerate([("step", "step"), ("elapsed_seconds", "wall time (s)")]):
            axis = axes[row, column]
            points = [(entry[x_key], entry[key]) for entry in entries if x_key in entry]
            if points:
                xs, ys = zip(*points, strict=True)
                axis.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=3)
            axis.set_xlabel(x_label)
            axis.set_ylabel(label)
            axis.grid(alpha=0.3)
    return png_data_uri(figure)


def accuracy_bars(names: Sequence[str], accuracies: Sequence[float], title: str) -> str:
    """Horizontal bars, one per name, in the given order (worst first reads top to bottom)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 0.32 * len(names) + 1.0), layout="constrained")
    positions = range(len(names))
    axis.barh(positions, accuracies, color="#4c72b0")
    axis.set_yticks(positions, names, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(0, 100)
    axis.set_xlabel("VQA accuracy (%)")
    axis.set_title(title, fontsize=10)
    axis.grid(axis="x", alpha=0.3)
    return png_data_uri(figure)


def attention_overlay(maps: AnswerAttention) -> str:
    """The image beside its patch heat map (mean over layers and heads, averaged over the answer's tokens)."""
    plt = pyplot()
    figure, (image_axis, overlay_axis) = plt.subplots(1, 2, figsize=(4.2, 2.2), layout="constrained")
    if maps.image is not None:
        image_axis.imshow(to_rgb(maps.image))
    image_axis.set_axis_off()
    share = float(maps.image_share().mean())
    draw_overlay(overlay_axis, maps, maps.patch_attention().mean(dim=0), f"{100 * share:.0f}% on the image")
    return png_data_uri(figure)


def plain_image(image: Any) -> str:
    """An image alone (for a run whose fusion has no patch attention, or a run without a model)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(2.1, 2.2), layout="constrained")
    axis.imshow(to_rgb(image))
    axis.set_axis_off()
    return png_data_uri(figure)


def metric_by_run(runs: Sequence[str], values: Sequence[float | None], metric: str) -> str:
    """A sweep's metric, one bar per run; a run without the value (failed or unfinished) is marked "no value"
    instead of a bar, so that it does not read as a zero."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(max(4.0, 0.5 * len(runs) + 2), 2.8), layout="constrained")
    axis.bar(range(len(runs)), [0.0 if value is None else value for value in values], color="#55a868")
    for index, value in enumerate(values):
        if value is None:
            axis.text(index, 0, "no value", rotation=90, ha="center", va="bottom", fontsize=7, color="#c44e52")
    axis.set_xticks(range(len(runs)), runs, fontsize=8)
    axis.set_xlabel("run")
    axis.set_ylabel(metric)
    axis.grid(axis="y", alpha=0.3)
    return png_data_uri(figure)
