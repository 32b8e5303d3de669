"""Benchmark: the generator head against the classifier head (`head=classifier`), training samples/s and answering
answers/s, on the same random-init model, data, batches and questions, one after the other in one process.

Training is the plain loop of benchmarks/throughput.py (image-grouped batches, freeze=nothing, forward, backward,
fused AdamW), with each head's forward loss (the generator's answer cross-entropy, the classifier's cross-entropy of
the answer's class; the soft binary cross-entropy costs the same matrix product). Answering is batched `generate`:
greedy decoding with the KV cache for the generator, one decoder position and an argmax for the classifier. The
classifier's answers are easy-VQA's 13, all present in training.

    python benchmarks/head_throughput.py [--preset tiny|base] [--steps N] [--batch-size B] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from throughput import model_and_processor, preset_splits, to_device
from torch.utils.data import DataLoader

from vqa.data.sampling import ImageGroupedSampler
from vqa.model.builders import with_answer_tokens
from vqa.model.classifier import answer_vocabulary
from vqa.model.configuration import VQAConfig
from vqa.model.modeling import VQAModel
from vqa.model.processing import VQACollator
from vqa.provenance import provenance
from vqa.training.trainer import with_image_paths


def model_with_head(preset: str, train_split: Any, head: str) -> tuple[VQAModel, Any]:
    """The preset's model (random init, seed 0) with `head`; the classifier's answers are the training answers."""
    model, processor = model_and_processor(preset, train_split, "nothing")
    if head == "generator":
        return model, processor
    settings = model.config.to_dict() | {
        "head": "classifier",
        "answer_vocabulary": answer_vocabulary(train_split["multiple_choice_answer"], 1),
    }
    torch.manual_seed(0)
    return with_answer_tokens(VQAModel(VQAConfig(**settings)), processor), processor


def training_rate(preset: str, splits: Any, head: str, steps: int, batch_size: int, workers: int) -> float:
    """Training samples/s over `steps` timed steps after 3 warm-up steps, data loading included."""
    train = with_image_paths(splits["train"])
    model, processor = model_with_head(preset, splits["train"], head)
    model.train()
    loader = DataLoader(
        train,
        batch_size=batch_size,
        sampler=ImageGroupedSampler(train["image_id"]),
        collate_fn=VQACollator(processor),
        num_workers=workers,
        drop_last=True,
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    batches = iter(loader)
    for step in range(3 + steps):
        if step == 3:
            start = time.perf_counter()
        model(**to_device(next(batches), "cpu")).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * batch_size / (time.perf_counter() - start)


def answering_rate(preset: str, splits: Any, head: str, questions: int, batch_size: int) -> float:
    """Answers/s of batched `generate` on the first `questions` validation questions (image-grouped order)."""
    model, processor = model_with_head(preset, splits["train"], head)
    model.eval()
    split = with_image_paths(splits["validation"])
    rows = [split[index] for index in list(ImageGroupedSampler(split["image_id"]))[:questions]]
    collator = VQACollator(processor, with_labels=False)
    model.generate(**collator(rows[:8]))  # warm-up
    start = time.perf_counter()
    for first in range(0, len(rows), batch_size):
        model.generate(**collator(rows[first : first + batch_size]))
    return len(rows) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["tiny", "base"], default="base")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per head")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--questions", type=int, default=64, help="questions answered per head")
    parser.add_argument("--coco-images", type=int, default=200, help="--preset base: 640x480 JPEGs per split")
    parser.add_argument("--cache", default=".cache/vqa", help="easy-VQA dataset cache")
    parser.add_argument(
        "--out", type=Path, help="JSON file (default benchmarks/results/head_throughput_<preset>_cpu.json)"
    )
    args = parser.parse_args(argv)
    images = tempfile.TemporaryDirectory()
    splits = preset_splits(args.cache, args.preset, args.coco_images, Path(images.name))
    results: dict[str, Any] = {"command": " ".join(["python", *sys.argv]), "preset": args.preset, "heads": {}}
    for head in ("generator", "classifier"):
        training = training_rate(args.preset, splits, head, args.steps, args.batch_size, args.workers)
        with torch.no_grad():
            answering = answering_rate(args.preset, splits, head, args.questions, args.batch_size)
        results["heads"][head] = {
            "training_samples_per_second": round(training, 2),
            "answers_per_second": round(answering, 2),
        }
        print(f"{head:<12} training {training:8.2f} samples/s   answering {answering:8.2f} answers/s", file=sys.stderr)
    generator, classifier = results["heads"]["generator"], results["heads"]["classifier"]
    results["classifier_over_generator"] = {
        key: round(classifier[key] / generator[key], 2) for key in ("training_samples_per_second", "answers_per_second")
    }
    results["provenance"] = provenance(Path(__file__).resolve().parents[1], device="cpu")
    out = args.out or Path("benchmarks/results") / f"head_throughput_{args.preset}_cpu.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
