"""Does a trained model look at the shape? A grounding check on easy-VQA, where each image holds one shape.

For each question, the share of the image attention (patches only) that falls on the shape's pixels is compared
with the share of the image the shape covers. Their ratio (mean attention share over mean area) is 1 for
attention spread evenly over the image and above 1 when it concentrates on the shape. It is reported for each
decoder layer, their mean and the rollout to the input patches, at the answer's tokens (EOS left out).

    python -m vqa.inspection.grounding --checkpoint outputs/DATE/TIME/checkpoint [--split validation] [--limit 1000]
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from PIL.Image import Image
from tqdm.auto import tqdm

from vqa.data.easy_vqa import build_easy_vqa
from vqa.data.images import to_rgb
from vqa.errors import ArgumentParser, exit_on_user_error
from vqa.inspection.attention import AnswerAttention, Layer, explain_batch
from vqa.model.loading import load_checkpoint, refuse_passage_model
from vqa.model.modeling import VQAModel
from vqa.model.processing import VQAProcessor

# A pixel belongs to the shape when a colour channel differs from the background's by more than this (of 255):
# easy-VQA draws one flat-coloured, anti-aliased shape on a flat background.
SHAPE_THRESHOLD = 48


def shape_mask(image: Image, threshold: int = SHAPE_THRESHOLD) -> torch.Tensor:
    """(H, W) bool mask of the pixels that differ from the background (the most common colour on the border)."""
    pixels = torch.from_numpy(np.array(to_rgb(image))).int()  # (H, W, 3)
    border = torch.cat([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])  # (2H + 2W, 3)
    colours, counts = border.unique(dim=0, return_counts=True)
    background = colours[counts.argmax()]
    return (pixels - background).abs().amax(dim=-1) > threshold


def patch_coverage(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(H, W) mask -> (rows, cols) fraction of each patch's pixels inside the mask (the image resized to the grid,
    as the image processor resizes it before cutting patches)."""
    return F.adaptive_avg_pool2d(mask[None, None].float(), grid)[0, 0]


def attention_on_shape(maps: AnswerAttention, coverage: torch.Tensor, layer: Layer) -> float:
    """Share of the patch attention that falls on the shape, averaged over the answer's tokens (EOS left out,
    unless the answer is empty). Each patch counts by the fraction of it the shape covers."""
    patches = maps.patch_attention(layer, "mean")  # (T, rows, cols)
    if patches.shape[0] > 1:
        patches = patches[:-1]
    per_token = (patches * coverage).sum(dim=(1, 2)) / patches.sum(dim=(1, 2)).clamp(min=1e-12)
    return float(per_token.mean())


def grounding_report(
    model: VQAModel, processor: VQAProcessor, dataset: Dataset, batch_size: int = 64, progress: bool = True
) -> dict[str, Any]:
    """The grounding ratio of `model` over the questions of an easy-VQA split, per view and per answer type.

    Returns a dict with `questions`, `shape_area` (mean share of the image the shape covers) and `views`: for each
    of `layer 0`, ..., `mean`, `rollout`: `attention_on_shape`, `ratio`, and `ratio_<answer type>`.
    """
    views: list[Layer] = [*range(model.config.decoder_config.n_layer), "mean", "rollout"]
    areas: dict[str, list[float]] = defaultdict(list)  # answer type ('all' too) -> shape areas
    shares: dict[tuple[str, str], list[float]] = defaultdict(list)  # (view, answer type) -> attention shares
    batches = range(0, len(dataset), batch_size)
    for start in tqdm(batches, desc="grounding", unit="batch", disable=not progress):
        rows = dataset[start : start + batch_size]
        for maps, answer_type in zip(
            explain_batch(model, processor, rows["image"], rows["question"]), rows["answer_type"], strict=True
        ):
            coverage = patch_coverage(shape_mask(maps.image), maps.grid)
            for group in ("all", answer_type):
                areas[group].append(float(coverage.mean()))
                for view in views:
                    shares[(_view_name(view), group)].append(attention_on_shape(maps, coverage, view))
    report: dict[str, Any] = {"questions": len(areas["all"]), "shape_area": float(np.mean(areas["all"])), "views": {}}
    for view in map(_view_name, views):
        row = {"attention_on_shape": float(np.mean(shares[(view, "all")]))}
        for group, group_areas in areas.items():
            key = "ratio" if group == "all" else f"ratio_{group.replace('/', '_')}"
            row[key] = float(np.mean(shares[(view, group)]) / np.mean(group_areas))
        report["views"][view] = row
    return report


def _view_name(view: Layer) -> str:
    return f"layer {view}" if isinstance(view, int) else view


def format_report(report: dict[str, Any]) -> str:
    """A printable table of `grounding_report`'s result."""
    ratio_keys = [key for key in next(iter(report["views"].values())) if key.startswith("ratio")]
    header = f"{'view':<10}{'on shape':>10}" + "".join(f"{key:>16}" for key in ratio_keys)
    lines = [
        f"{report['questions']} questions; the shape covers {100 * report['shape_area']:.1f}% of the image on average",
        header,
    ]
    for view, row in report["views"].items():
        ratios = "".join(f"{row[key]:>16.2f}" for key in ratio_keys)
        lines.append(f"{view:<10}{100 * row['attention_on_shape']:>9.1f}%{ratios}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m vqa.inspection.grounding",
        description="Grounding check on easy-VQA: share of image attention on the shape / share of the image it "
        "covers (1 = attention spread evenly; above 1 = the model looks at the shape).",
    )
    parser.add_argument("--checkpoint", required=True, help="a run's checkpoint folder (model + processor)")
    parser.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    parser.add_argument("--limit", type=int, default=1000, help="first N questions of the split (0: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache-dir", default=os.environ.get("VQA_CACHE", ".cache/vqa"), help="dataset cache")
    parser.add_argument("--output", type=Path, help="also write the report as JSON here")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    args = parser.parse_args(argv)

    with exit_on_user_error():
        model, processor = load_checkpoint(args.checkpoint, args.device)
        refuse_passage_model(model, "python -m vqa.inspection.grounding")
        dataset = build_easy_vqa(args.cache_dir)[args.split]
    if args.limit:
        dataset = dataset.select(range(min(args.limit, len(dataset))))
    report = {"checkpoint": str(args.checkpoint), "split": args.split}
    report |= grounding_report(model, processor, dataset, args.batch_size)
    print(format_report(report))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
