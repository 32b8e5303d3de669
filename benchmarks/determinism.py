"""Benchmark: is a training step bit-reproducible, and what does reproducibility cost in samples/s?

The default config's model and data (random init, real easy-VQA batches from the image-grouped sampler, collated
once up front so that only the model's step is timed: forward, backward, AdamW). Four ways to compute it:

- how the distinct question and image rows reach each example: `tensor[index]` (advanced indexing, the code before
  the fix; its CPU backward adds repeated rows with atomic adds from several threads) or `tensor.index_select(0,
  index)` (today's `vqa.model.fusion.repeat_rows`; its backward adds in index order);
- with `torch.use_deterministic_algorithms(True)` off or on (on is what `trainer.args.full_determinism`, the CPU
  default, sets).

Reproducible: from the same weights, the same batches give gradients equal to the last bit in every repeat (the
count of gradient tensors that differ from the first repeat is reported). Cost: median samples/s over rounds in which
the variants take turns, so that a slow moment of the machine hits all of them.

    python benchmarks/determinism.py [--rounds 7] [--out benchmarks/results/determinism_cpu.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from default_run import default_config_and_data, default_model

import vqa.model.fusion
import vqa.model.modeling
from vqa.data.sampling import ImageGroupedSampler
from vqa.provenance import provenance

BATCHES = 20
REPEATS = 3


def advanced_indexing(tensor: torch.Tensor, index: torch.LongTensor | None) -> torch.Tensor:
    """The rows as `vqa.model.fusion.repeat_rows` took them before the fix."""
    return tensor if index is None else tensor[index]


ROWS: dict[str, Callable[[torch.Tensor, torch.LongTensor | None], torch.Tensor]] = {
    "advanced_indexing": advanced_indexing,
    "index_select": vqa.model.fusion.repeat_rows,
}


def use_rows(name: str) -> None:
    """Make the fusion and the shared cross-attention cache take their rows with `ROWS[name]`."""
    vqa.model.fusion.repeat_rows = vqa.model.modeling.repeat_rows = ROWS[name]


def default_batches() -> tuple[torch.nn.Module, list[dict[str, torch.Tensor]], int]:
    """The default run's model and its first `BATCHES` training batches, and the batch size."""
    cfg, train = default_config_and_data()
    model, collator = default_model(cfg, train)
    batch_size = cfg.trainer.args.per_device_train_batch_size
    order = list(ImageGroupedSampler(train["image_id"], cfg.trainer.questions_per_image, seed=cfg.seed))
    rows = [train[index] for index in order[: BATCHES * batch_size]]
    batches = [collator(rows[start : start + batch_size]) for start in range(0, len(rows), batch_size)]
    return model, batches, batch_size


def gradients(
    model: torch.nn.Module, weights: dict[str, torch.Tensor], batches: list[dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Gradients summed over the first six batches, from `weights`."""
    model.load_state_dict(weights)
    model.zero_grad(set_to_none=True)
    for batch in batches[:6]:
        model(**batch).loss.backward()
    return {name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None}


def seconds_per_pass(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    start = time.perf_counter()
    for batch in batches:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed passes over the batches per variant")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/determinism_cpu.json"))
    args = parser.parse_args(argv)

    model, batches, batch_size = default_batches()
    model.train()
    weights = copy.deepcopy(model.state_dict())
    variants = [(rows, deterministic) for deterministic in (False, True) for rows in ROWS]
    results: dict[str, Any] = {}
    for rows, deterministic in variants:
        use_rows(rows)
        torch.use_deterministic_algorithms(deterministic)
        reference = gradients(model, weights, batches)
        differing = [
            sum(not torch.equal(reference[name], grad) for name, grad in gradients(model, weights, batches).items())
            for _ in range(REPEATS)
        ]
        name = f"{rows}{'+deterministic_algorithms' if deterministic else ''}"
        results[name] = {"differing_gradient_tensors_per_repeat": differing, "gradient_tensors": len(reference)}
    timings: dict[str, list[float]] = {name: [] for name in results}
    for _ in range(args.rounds):
        for (rows, deterministic), name in zip(variants, results, strict=True):
            use_rows(rows)
            torch.use_deterministic_algorithms(deterministic)
            model.load_state_dict(weights)
            timings[name].append(BATCHES * batch_size / seconds_per_pass(model, batches))
    use_rows("index_select")
    torch.use_deterministic_algorithms(False)
    for name, rates in timings.items():
        results[name].update(
            samples_per_second=round(statistics.median(rates)), all_rounds=[round(rate) for rate in rates]
        )
    report = {
        "command": "python benchmarks/determinism.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "torch": torch.__version__,
        "batches": BATCHES,
        "batch_size": batch_size,
        "variants": results,
        "provenance": provenance(Path(__file__).resolve().parents[1], device="cpu"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
