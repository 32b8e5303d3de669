"""Where a training step of the default run goes: torch.profiler over a few steps of the tiny preset on real
easy-VQA batches (the default run's sampler and collator; no DataLoader workers, so the collator's time shows too),
grouped by phase (collate, forward, backward, optimizer) and by operator.

    python benchmarks/step_profile.py --steps 20 --out benchmarks/results/step_profile.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from throughput import model_and_processor
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.data import DataLoader

from vqa.data import build_easy_vqa
from vqa.data.sampling import ImageGroupedSampler
from vqa.model.processing import VQACollator
from vqa.provenance import provenance
from vqa.training.trainer import with_image_paths

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("collate", "forward", "backward", "optimizer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--questions-per-image", type=int, default=3)
    parser.add_argument("--cache", default=".cache/vqa")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/step_profile.json")
    options = parser.parse_args()

    splits = build_easy_vqa(options.cache)
    train = with_image_paths(splits["train"])
    model, processor = model_and_processor("tiny", splits["train"], "nothing")
    model.train()
    loader = DataLoader(
        train,
        batch_size=options.batch_size,
        sampler=ImageGroupedSampler(train["image_id"], options.questions_per_image),
        collate_fn=VQACollator(processor),
        num_workers=0,
        drop_last=True,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01, fused=True)
    batches = iter(loader)

    def step() -> None:
        with record_function("collate"):
            batch = next(batches)
        with record_function("forward"):
            loss = model(**batch).loss
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up
        step()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(options.steps):
            step()
    seconds = time.perf_counter() - start
    events = profiler.key_averages()
    phase_ms = {phase: events_total(events, phase) / options.steps for phase in PHASES}
    operators = sorted(
        (event for event in events if event.key not in PHASES), key=lambda event: event.self_cpu_time_total
    )[::-1][:25]
    result: dict[str, Any] = {
        "command": " ".join(["python benchmarks/step_profile.py", *sys.argv[1:]]),  # every option as given
        "steps": options.steps,
        "batch_size": options.batch_size,
        "seconds_per_step_profiled": round(seconds / options.steps, 4),
        "milliseconds_per_step_by_phase": {phase: round(value, 1) for phase, value in phase_ms.items()},
        "top_operators_self_cpu_ms_per_step": {
            event.key: {
                "self_ms": round(event.self_cpu_time_total / 1000 / options.steps, 2),
                "calls_per_step": round(event.count / options.steps, 1),
            }
            for event in operators
        },
        "operator_calls_per_step": round(
            sum(event.count for event in events if event.key not in PHASES) / options.steps
        ),
        "provenance": provenance(ROOT),
    }
    options.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: value for key, value in result.items() if key != "provenance"}, indent=2))


def events_total(events: Any, name: str) -> float:
    """Milliseconds in all `record_function(name)` ranges."""
    return sum(event.cpu_time_total for event in events if event.key == name) / 1000


if __name__ == "__main__":
    main()
