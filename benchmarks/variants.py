"""Benchmark: the issue-16 variants at base size on this CPU, training samples/s and peak memory side by side.

The base preset's shapes (DistilBERT-base, ViT-B/16 at 224 px, GPT-2 small with cross-attention), random weights,
synthetic batches (random 224 px images, 12-token questions, 3-token answers; every image distinct), a plain
forward / backward / AdamW loop: 2 warm-up steps, then `--steps` timed. Each variant runs in its own process, so
its peak resident memory (ru_maxrss) is its own:

- tokens: every question token and the 197 image positions are cross-attention keys (the default);
- resampler: 32 latents per image (`model.fusion=resampler`);
- gated: tokens with `model.cross_attention_gate=true`;
- lora_all: LoRA r=8 on all four components (everything else frozen);
- lora_decoder: LoRA r=8 on GPT-2's self-attention and MLP, encoders frozen (`freeze=encoders`).

    python benchmarks/variants.py [--steps 4] [--batch-size 8] [--out benchmarks/results/variants_base_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from throughput import base_config

from vqa import VQAModel
from vqa.provenance import provenance

VARIANTS: dict[str, dict[str, Any]] = {
    "tokens": {},
    "resampler": {"fusion": "resampler", "resampler": {"latents": 32, "layers": 2, "heads": 8}},
    "gated": {"cross_attention_gate": True},
    "lora_all": {"lora": {"targets": ["decoder", "cross_attention", "text_encoder", "image_encoder"], "r": 8}},
    "lora_decoder": {"lora": {"targets": ["decoder"], "r": 8}, "freeze": "encoders"},
}


def base_model(options: dict[str, Any]) -> VQAModel:
    torch.manual_seed(0)
    return VQAModel(base_config(question_vocab_size=30522, answer_vocab_size=1000, **options))


def synthetic_batch(batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    labels = torch.randint(3, 1000, (batch_size, 4), generator=generator)
    labels[:, 3] = 2  # EOS
    return {
        "input_ids": torch.randint(1000, 30522, (batch_size, 12), generator=generator),
        "attention_mask": torch.ones(batch_size, 12, dtype=torch.long),
        "pixel_values": torch.randn(batch_size, 3, 224, 224, generator=generator),
        "labels": labels,
    }


def measure(name: str, steps: int, batch_size: int) -> dict[str, Any]:
    """One variant in this process: samples/s over the timed steps, peak RSS, parameter counts."""
    model = base_model(VARIANTS[name]).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    batches = [synthetic_batch(batch_size, generator) for _ in range(2 + steps)]
    for step, batch in enumerate(batches):
        if step == 2:
            start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    return {
        "options": VARIANTS[name],
        "samples_per_second": round(steps * batch_size / seconds, 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant, after 2 warm-up steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--variant", choices=list(VARIANTS), help="measure one variant in this process (internal)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/variants_base_cpu.json"))
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(measure(args.variant, args.steps, args.batch_size)))
        return 0
    results = {}
    for name in VARIANTS:
        command = [sys.executable, __file__, "--variant", name, "--steps", str(args.steps)]
        command += ["--batch-size", str(args.batch_size)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[name] = json.loads(output.strip().splitlines()[-1])
        print(f"{name:<14}{results[name]['samples_per_second']:>8} samples/s{results[name]['peak_rss_gib']:>8} GiB")
    report = {
        "command": "python benchmarks/variants.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "batch_size": args.batch_size,
        "timed_steps": args.steps,
        "variants": results,
        "provenance": provenance(Path(__file__).resolve().parents[1], device="cpu"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
