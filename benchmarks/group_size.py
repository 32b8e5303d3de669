"""Benchmark: training samples/s of the default model for image groups of different sizes, decoding included.

One process (no DataLoader workers): for each `questions_per_image` (whole groups, 4, 3, 2), the first 60 batches
of 64 from the image-grouped sampler are collated (each distinct image decoded and preprocessed once) and trained on
(forward, backward, AdamW), and the images per batch are counted.

    python benchmarks/group_size.py [--out benchmarks/results/group_size_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from default_run import default_config_and_data, default_model

from vqa.data.sampling import ImageGroupedSampler
from vqa.provenance import provenance

STEPS = 60
GROUP_SIZES = (None, 4, 3, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/group_size_cpu.json"))
    args = parser.parse_args(argv)
    cfg, train = default_config_and_data()
    batch_size = cfg.trainer.args.per_device_train_batch_size
    results = []
    for questions_per_image in GROUP_SIZES:
        model, collator = default_model(cfg, train)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
        order = list(ImageGroupedSampler(train["image_id"], questions_per_image, seed=cfg.seed))
        rows = [train[index] for index in order[: STEPS * batch_size]]
        images = 0
        start = time.perf_counter()
        for step in range(STEPS):
            batch = collator(rows[step * batch_size : (step + 1) * batch_size])
            images += batch["pixel_values"].shape[0]
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
        results.append(
            {
                "questions_per_image": questions_per_image,
                "samples_per_second": round(STEPS * batch_size / seconds),
                "images_per_batch": round(images / STEPS, 1),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    command = "python benchmarks/group_size.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {
        "command": command,
        "steps": STEPS,
        "results": results,
        "provenance": provenance(Path(__file__).resolve().parents[1], device="cpu"),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
