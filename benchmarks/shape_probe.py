"""When does the image encoder learn shape? A linear probe on its frozen features at each saved checkpoint of a run.

easy-VQA's plateau (docs/time-to-accuracy.md) is the shape questions. This measures whether the image encoder's
features hold shape at a given step, apart from whether the decoder reads them: for every `checkpoint-<step>` folder
of each run (train.py with `trainer.args.save_strategy=steps`), the image encoder encodes one image per question
answered by a shape (circle, rectangle, triangle); a softmax classifier is fitted on the train split's images
(standardised features, full-batch Adam, fixed seed) and scored on the validation split's. Three read-outs: the mean
of the patch tokens, the first (CLS) token, all patch tokens side by side. Chance is the validation share of the most
common shape (written beside). Beside each probe: the run's validation VQA accuracy at that step, when it evaluated.

For comparison, `--alone STEPS` also trains a fresh image encoder of the first run's architecture (its seed, init
and learning rate) with a linear head on the mean of its patch tokens as a shape classifier on the same images,
64 images a step, and scores it every 50 steps: how fast the encoder learns shape when the whole loss asks for it.

    python train.py trainer.args.max_steps=3000 trainer.args.save_strategy=steps trainer.args.save_steps=500 \
        trainer.args.save_total_limit=null hydra.run.dir=/tmp/probe_run
    python benchmarks/shape_probe.py /tmp/probe_run --alone 400 --out benchmarks/results/shape_probe.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from vqa.model.configuration import VQAConfig
from vqa.model.modeling import VQAModel
from vqa.model.processing import VQAProcessor
from vqa.provenance import provenance

SHAPES = ("circle", "rectangle", "triangle")
PROBE_STEPS = 500
READOUTS = ("mean_of_patches", "first_token", "all_patches")


def shape_images(split: Any) -> tuple[list[Any], torch.Tensor]:
    """(images, shape index (N,)): one image per image id among the questions answered by a shape."""
    answered = split.filter(lambda answer: answer in SHAPES, input_columns="multiple_choice_answer")
    first_rows = answered.select_columns(["image_id"]).to_pandas().drop_duplicates("image_id").index.tolist()
    rows = answered.select(first_rows)
    return rows["image"], torch.tensor([SHAPES.index(answer) for answer in rows["multiple_choice_answer"]])


def probe_accuracy(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, labels: torch.Tensor) -> float:
    """Validation accuracy (%) of a softmax classifier fitted on standardised features (N, D)."""
    mean, std = train.mean(dim=0), train.std(dim=0) + 1e-6
    train, test = (train - mean) / std, (test - mean) / std
    torch.manual_seed(0)
    classifier = nn.Linear(train.shape[1], len(SHAPES))
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-2)
    for _ in range(PROBE_STEPS):
        loss = nn.functional.cross_entropy(classifier(train), train_labels) + 1e-3 * classifier.weight.pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return round((classifier(test).argmax(dim=-1) == labels).float().mean().item() * 100, 1)


def readouts(states: torch.Tensor) -> dict[str, torch.Tensor]:
    """(N, 1 + P, H) image-encoder states -> each read-out's features (N, D)."""
    return {
        "mean_of_patches": states[:, 1:].mean(dim=1),
        "first_token": states[:, 0],
        "all_patches": states[:, 1:].flatten(1),
    }


def validation_accuracy(folder: Path, step: int) -> float | None:
    """The run's validation VQA accuracy at `step`, from the checkpoint's trainer_state.json (None if not evaluated
    at that step)."""
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    found = [
        entry["eval_vqa_accuracy"] for entry in history if entry.get("step") == step and "eval_vqa_accuracy" in entry
    ]
    return found[-1] if found else None


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the run's `checkpoint-<step>` folders, by step."""
    found = [
        (int(match.group(1)), path)
        for path in run_dir.iterdir()
        if (match := re.fullmatch(r"checkpoint-(\d+)", path.name))
    ]
    return sorted(found)


ShapePixels = tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def shape_pixels(run_dir: Path, config: DictConfig) -> ShapePixels:
    """((pixels (N, 3, H, W), shapes (N,)) of the train split, the same of the validation split), as the run's
    processor prepares images."""
    splits = instantiate(config.data)
    processor = VQAProcessor.from_pretrained(run_dir / "checkpoint")
    pairs = (shape_images(splits["train"]), shape_images(splits["validation"]))
    return tuple((processor.encode_images(images), labels) for images, labels in pairs)


def train_alone(
    run_dir: Path, config: DictConfig, pixels: ShapePixels, steps: int, batch_size: int = 64, every: int = 50
) -> list[dict[str, float]]:
    """[{step, accuracy}]: a fresh image encoder of the run's architecture (the run's seed and learning rate) and a
    linear head on the mean of its patch tokens, trained as a shape classifier on `pixels` (`shape_pixels`);
    validation accuracy every `every`."""
    (train_pixels, train_labels), (test_pixels, test_labels) = pixels
    torch.manual_seed(config.seed)
    encoder = VQAModel(VQAConfig.from_pretrained(run_dir / "checkpoint")).image_encoder
    head = nn.Linear(encoder.config.hidden_size, len(SHAPES))
    arguments = config.trainer.args
    optimizer = torch.optim.AdamW(
        [*encoder.parameters(), *head.parameters()], lr=arguments.learning_rate, weight_decay=arguments.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)
    curve = []
    for step in tqdm(range(1, steps + 1), desc="shape classifier alone", unit="step"):
        rows = torch.randint(len(train_labels), (batch_size,), generator=generator)
        logits = head(readouts(encoder(pixel_values=train_pixels[rows]).last_hidden_state)["mean_of_patches"])
        loss = nn.functional.cross_entropy(logits, train_labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % every == 0:
            with torch.no_grad():
                states = encoder(pixel_values=test_pixels).last_hidden_state
                correct = head(readouts(states)["mean_of_patches"]).argmax(dim=-1) == test_labels
            curve.append({"step": step, "accuracy": round(correct.float().mean().item() * 100, 1)})
    return curve


def probe_run(run_dir: Path, pixels: ShapePixels) -> dict[str, Any]:
    """The probe's accuracies at each of the run's checkpoints on `pixels` (`shape_pixels`), with the run's
    overrides and the chance level."""
    overrides = run_dir / ".hydra" / "overrides.yaml"  # what the run changed, for the record
    card = run_dir / "run_card.json"
    (train_pixels, train_labels), (test_pixels, test_labels) = pixels
    chance = round(torch.bincount(test_labels).max().item() / len(test_labels) * 100, 1)
    results = []
    for step, folder in tqdm(checkpoints(run_dir), desc=f"probing {run_dir.name}", unit="checkpoint"):
        encoder = VQAModel.from_pretrained(folder).image_encoder.eval()
        with torch.no_grad():
            train_states = encoder(pixel_values=train_pixels).last_hidden_state
            test_states = encoder(pixel_values=test_pixels).last_hidden_state
        train_features, test_features = readouts(train_states), readouts(test_states)
        accuracy = {
            name: probe_accuracy(train_features[name], train_labels, test_features[name], test_labels)
            for name in READOUTS
        }
        results.append({"step": step, **accuracy, "validation_vqa_accuracy": validation_accuracy(folder, step)})
    return {
        "run": str(run_dir),
        "overrides": OmegaConf.to_container(OmegaConf.load(overrides)) if overrides.is_file() else None,
        "git_commit": json.loads(card.read_text()).get("git_commit") if card.is_file() else None,  # the run's code
        "train_images": len(train_labels),
        "validation_images": len(test_labels),
        "chance": chance,
        "checkpoints": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/shape_probe.json"))
    parser.add_argument("--alone", type=int, default=0, metavar="STEPS", help="also train the encoder alone on shape")
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        if not (run_dir / "config.yaml").is_file() or not (run_dir / "checkpoint").is_dir() or not checkpoints(run_dir):
            print(
                f"error: {run_dir}: expected a finished train.py run with checkpoint/ and checkpoint-<step>/ folders "
                "(trainer.args.save_strategy=steps)",
                file=sys.stderr,
            )
            return 2
    configs = [OmegaConf.load(run_dir / "config.yaml") for run_dir in args.run_dirs]
    pixels = [shape_pixels(run_dir, config) for run_dir, config in zip(args.run_dirs, configs, strict=True)]
    runs = [probe_run(run_dir, run_pixels) for run_dir, run_pixels in zip(args.run_dirs, pixels, strict=True)]
    command = "python benchmarks/shape_probe.py " + " ".join(argv if argv is not None else sys.argv[1:])
    alone = train_alone(args.run_dirs[0], configs[0], pixels[0], args.alone) if args.alone > 0 else None
    report = {
        "command": command,
        "runs": runs,
        "trained_alone": alone,
        "provenance": provenance(Path(__file__).resolve().parents[1]),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for run in runs:
        print(f"{run['run']} (chance {run['chance']}%)")
        for row in run["checkpoints"]:
            print(f"  step {row['step']:>5}: " + "  ".join(f"{name} {row[name]:5.1f}" for name in READOUTS))
    if alone:
        print("trained alone: " + ", ".join(f"step {row['step']} {row['accuracy']}" for row in alone))
    return 0


if __name__ == "__main__":
    sys.exit(main())
