"""Benchmark: peak memory of base-size training against batch size, to size a batch before a run.

Each point runs in its own process, so its peak resident memory (`ru_maxrss`) is its own: the base preset's shapes
with random weights (DistilBERT-base, ViT-B/16 at 224, GPT-2 small), a batch of COCO-size JPEGs (640x480) through the
real collator in that process (no DataLoader workers: their memory is the data pipeline's, not the batch's), and
three training steps (forward, backward, AdamW step: the peak comes once the optimizer holds its two moments).
Settings:

- full fine-tuning, random batches: one image per question (the most memory a batch of that size can take);
- full fine-tuning, image-grouped: 5 questions per image, as in VQA v2 (a fifth of the images);
- encoders frozen (image-grouped): the encoders run without autograd every step;
- encoders frozen, feature cache: the encoders' outputs are read from a store built in the same process before the
  steps (encoder forward passes without autograd; `rss_before_training_gib` is the peak up to then).

    python benchmarks/memory.py [--batch-sizes 8 16 32 64] [--out benchmarks/results/memory_base_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from throughput import coco_size_split, model_and_processor

from vqa.data import build_easy_vqa
from vqa.data.sampling import ImageGroupedSampler
from vqa.model.processing import VQACollator
from vqa.provenance import provenance
from vqa.training.feature_cache import build_lookups
from vqa.training.trainer import with_image_paths

SETTINGS = {
    "full fine-tuning, random batches": {"freeze": "nothing", "questions_per_image": 1, "cached": False},
    "full fine-tuning, image-grouped": {"freeze": "nothing", "questions_per_image": 5, "cached": False},
    "encoders frozen": {"freeze": "encoders", "questions_per_image": 5, "cached": False},
    "encoders frozen, feature cache": {"freeze": "encoders", "questions_per_image": 5, "cached": True},
}
STEPS = 3


def resident_gib() -> float:
    """Peak resident memory of this process so far, GiB (`ru_maxrss` is in KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def one_point(setting: str, batch_size: int, cache: str, work: Path) -> dict[str, Any]:
    """Peak memory of `STEPS` training steps of `setting` at `batch_size`, in this process."""
    options = SETTINGS[setting]
    splits = build_easy_vqa(cache)
    images = -(-batch_size // options["questions_per_image"]) + 2  # enough images for one batch (some have < 5)
    train = coco_size_split(splits["train"], work / "images", images, options["questions_per_image"])
    model, processor = model_and_processor("base", splits["train"], options["freeze"])
    collator = VQACollator(processor)
    if options["cached"]:
        collator.features = build_lookups(model, processor, [train], work / "features")
    rows = with_image_paths(train)
    batch = collator([rows[index] for index in list(ImageGroupedSampler(rows["image_id"]))[:batch_size]])
    after_build = resident_gib()
    model.train()
    # Fused AdamW: the Trainer's default optimizer (`adamw_torch_fused`).
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    start = time.perf_counter()
    for _ in range(STEPS):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {
        "setting": setting,
        "batch_size": batch_size,
        "images_per_batch": len(batch["image_features" if options["cached"] else "pixel_values"]),
        "peak_rss_gib": resident_gib(),
        "rss_before_training_gib": after_build,
        "seconds_per_step": round((time.perf_counter() - start) / STEPS, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--cache", default=".cache/vqa", help="easy-VQA dataset cache")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/memory_base_cpu.json"))
    parser.add_argument("--point", nargs=2, metavar=("SETTING", "BATCH_SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.point:  # a child process: one measurement, printed as JSON on the last line
        with tempfile.TemporaryDirectory() as work:
            print(json.dumps(one_point(args.point[0], int(args.point[1]), args.cache, Path(work))))
        return 0
    points = []
    for setting in args.settings:
        for batch_size in args.batch_sizes:
            command = [sys.executable, __file__, "--cache", args.cache, "--point", setting, str(batch_size)]
            finished = subprocess.run(command, capture_output=True, text=True)
            if finished.returncode != 0:  # out of memory or a bug: recorded, and the larger sizes are skipped
                points.append({"setting": setting, "batch_size": batch_size, "failed": finished.stderr[-2000:]})
                print(f"{setting}, batch {batch_size}: failed (exit {finished.returncode})", file=sys.stderr)
                break
            points.append(json.loads(finished.stdout.strip().splitlines()[-1]))
            print(json.dumps(points[-1]), file=sys.stderr, flush=True)
    results = {
        "command": " ".join(["python", *sys.argv]),
        "torch": torch.__version__,
        "precision": "fp32",
        "steps": STEPS,
        "points": points,
        "provenance": provenance(Path(__file__).resolve().parents[1], device="cpu"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return 0


def table(results: dict[str, Any]) -> str:
    """Markdown: one row per setting, peak GiB per batch size."""
    sizes = sorted({point["batch_size"] for point in results["points"]})
    lines = [
        "| peak resident memory, GiB (s/step) | " + " | ".join(f"batch {size}" for size in sizes) + " |",
        "|---" * (len(sizes) + 1) + "|",
    ]
    for setting in dict.fromkeys(point["setting"] for point in results["points"]):
        cells = {
            point["batch_size"]: "failed"
            if "failed" in point
            else f"{point['peak_rss_gib']} ({point['seconds_per_step']} s)"
            for point in results["points"]
            if point["setting"] == setting
        }
        lines.append(f"| {setting} | " + " | ".join(cells.get(size, "") for size in sizes) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
