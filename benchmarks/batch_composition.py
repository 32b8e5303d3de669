"""How batch composition sets the gradient noise of the image pathway, at one point of training.

From one set of weights (a checkpoint, e.g. a default run's epoch-2 checkpoint on the question-prior plateau, or
random init), the first `--batches` training batches of each composition give one gradient each: whole image groups
(`trainer.questions_per_image=null`, all of an image's questions together), groups of at most 3 (the default) or 1,
and random batches (`trainer.group_by_image=false`). Per composition and per part of the model (the image pathway:
ViT and its projection; the question pathway; the decoder), the noise-to-signal ratio

    mean_i ||g_i - g||^2 / ||g||^2        (g_i: one batch's gradient, g: their mean)

says how far a single step's gradient strays from the expected one, relative to its size: the larger, the more
steps it takes to follow the expected direction. Also the distinct images per batch.

    python benchmarks/batch_composition.py [--checkpoint outputs/<run>/checkpoint-1084] [--batches 40]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from default_run import default_config_and_data, default_model
from torch.utils.data import RandomSampler

from vqa.data.sampling import ImageGroupedSampler
from vqa.provenance import provenance
from vqa.training.trainer import load_checkpoint_weights

# Parameter name prefixes of each pathway.
PARTS = {
    "image_pathway": ("image_encoder.", "fusion.image_projection."),
    "question_pathway": ("text_encoder.", "fusion.text_projection."),
    "decoder": ("decoder.",),
}
COMPOSITIONS = {"whole_groups": None, "groups_of_3": 3, "groups_of_1": 1, "random": "random"}


def part_gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The current gradients, flattened and concatenated per part of the model."""
    flat: dict[str, list[torch.Tensor]] = {part: [] for part in PARTS}
    for name, parameter in model.named_parameters():
        for part, prefixes in PARTS.items():
            if parameter.grad is not None and name.startswith(prefixes):
                flat[part].append(parameter.grad.flatten())
    return {part: torch.cat(grads).double() for part, grads in flat.items() if grads}


def noise_to_signal(gradients: list[torch.Tensor]) -> float:
    stacked = torch.stack(gradients)
    mean = stacked.mean(dim=0)
    return float(((stacked - mean) ** 2).sum(dim=1).mean() / (mean**2).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="weights to start from (default: the seed's random init)")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/batch_composition.json"))
    args = parser.parse_args(argv)

    cfg, train = default_config_and_data()
    model, collator = default_model(cfg, train)
    if args.checkpoint:
        load_checkpoint_weights(model, args.checkpoint)
    model.train()
    batch_size = cfg.trainer.args.per_device_train_batch_size
    results: dict[str, Any] = {}
    for name, questions_per_image in COMPOSITIONS.items():
        if questions_per_image == "random":
            order = list(RandomSampler(train, generator=torch.Generator().manual_seed(cfg.seed)))
        else:
            order = list(ImageGroupedSampler(train["image_id"], questions_per_image, seed=cfg.seed))
        gradients: dict[str, list[torch.Tensor]] = {part: [] for part in PARTS}
        images = []
        for start in range(0, args.batches * batch_size, batch_size):
            batch = collator([train[index] for index in order[start : start + batch_size]])
            images.append(len(set(batch["image_index"].tolist())) if "image_index" in batch else batch_size)
            model.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            for part, gradient in part_gradients(model).items():
                gradients[part].append(gradient)
        results[name] = {
            "images_per_batch": sum(images) / len(images),
            "noise_to_signal": {part: round(noise_to_signal(grads), 2) for part, grads in gradients.items()},
        }
        print(name, json.dumps(results[name]), flush=True)
    report = {
        "command": "python benchmarks/batch_composition.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "batches": args.batches,
        "batch_size": batch_size,
        "compositions": results,
        "provenance": provenance(Path(__file__).resolve().parents[1], device="cpu"),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
