"""Benchmark: training samples/s, answer generation answers/s, data pipeline images/s, side by side in one run.

Random-init weights on real easy-VQA data, through the real collator, DataLoader and model (a plain training loop:
forward, backward, AdamW step), so each setting differs in one thing only:

- training, freeze=nothing: random batches (one question row per example, as the textbook; an image rarely repeats
  within a batch) vs image-grouped batches (each distinct image and question text encoded once per batch);
- training, freeze=encoders (grouped): encoders run every step vs read from the feature cache;
- generation: the collator's batches (each distinct image encoded once) and batched greedy decoding with the KV
  cache (`VQAModel.generate`) vs the textbook's evaluation (one question at a time, its image encoded for it, greedy
  without a cache), on the same questions; their answers are compared;
- data: images decoded and preprocessed per second by the collator in DataLoader workers; peak memory.

On a GPU (`--device cuda`) training runs under bf16 autocast with SDPA attention, and MFU is reported: model
FLOPs per step (counted by torch's FlopCounterMode) times steps/s over the device's peak. `--precision bf16` on a
CPU with bf16 matrix units (AMX on Intel Sapphire Rapids and later) runs the same autocast there.

    python benchmarks/throughput.py [--preset tiny|base] [--device cpu|cuda] [--out benchmarks/results/...json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, RandomSampler
from transformers import DistilBertConfig, GPT2Config, ViTConfig

from vqa import VQAConfig, VQAModel, VQAProcessor
from vqa.data import build_easy_vqa
from vqa.data.sampling import ImageGroupedSampler
from vqa.model.builders import tiny_model_and_processor
from vqa.model.encoder_inputs import EncoderInputs
from vqa.model.flops import flops_by_component
from vqa.model.processing import VQACollator
from vqa.provenance import provenance
from vqa.training.feature_cache import build_lookups
from vqa.training.trainer import with_image_paths

TINY_PRESET = Path(__file__).resolve().parents[1] / "conf" / "model" / "tiny.yaml"
# Dense bf16 peak FLOP/s (no sparsity), from the vendors' data sheets.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def coco_size_split(split: Any, folder: Path, images: int, questions_per_image: int = 5) -> Any:
    """`images` images of `split` at COCO size (640x480 JPEGs, quality 90, upscaled from easy-VQA's 64x64) with up
    to `questions_per_image` questions each (VQA v2 has about 5): the decoding and resizing cost of real VQA v2
    images, easy-VQA's questions and answers."""
    folder.mkdir(parents=True, exist_ok=True)
    undecoded = with_image_paths(split)
    kept: list[int] = []
    per_image: dict[int, int] = {}
    for row, image_id in enumerate(split["image_id"]):
        if image_id not in per_image and len(per_image) == images:
            continue
        if per_image.get(image_id, 0) < questions_per_image:
            per_image[image_id] = per_image.get(image_id, 0) + 1
            kept.append(row)
    subset = undecoded.select(kept)
    paths = {}
    for image_id, image in zip(subset["image_id"], subset["image"], strict=True):
        if image_id not in paths:
            paths[image_id] = str(folder / f"{image_id}.jpg")
            with PIL.Image.open(image["path"]) as small:
                small.convert("RGB").resize((640, 480), PIL.Image.BILINEAR).save(paths[image_id], quality=90)
    columns = subset.remove_columns("image").to_dict()
    columns["image"] = [paths[image_id] for image_id in subset["image_id"]]
    return Dataset.from_dict(columns).cast_column("image", ImageFeature())


def preset_splits(cache: str, preset: str, coco_images: int, folder: Path) -> Any:
    """easy-VQA's splits; for the base preset, its train and validation questions on `coco_images` COCO-size JPEGs per
    split, written under `folder` (decoding and resizing them is part of a real base-size step)."""
    splits = build_easy_vqa(cache)
    if preset != "base":
        return splits
    return {name: coco_size_split(splits[name], folder / name, coco_images) for name in ("train", "validation")}


def base_config(question_vocab_size: int, answer_vocab_size: int, **options: Any) -> VQAConfig:
    """The base preset's shapes (DistilBERT-base, ViT-B/16 at 224, GPT-2 small) for random-init weights; `options`
    go to VQAConfig (freeze, fusion, ...). The answer vocabulary has pad, BOS, EOS at 0, 1, 2."""
    decoder = GPT2Config(
        vocab_size=answer_vocab_size, add_cross_attention=True, bos_token_id=1, eos_token_id=2, pad_token_id=0
    )
    return VQAConfig(
        text_config=DistilBertConfig(vocab_size=question_vocab_size),
        vision_config=ViTConfig(),
        decoder_config=decoder,
        **options,
    )


def base_model_and_processor(train_split: Any, freeze: str) -> tuple[VQAModel, VQAProcessor]:
    """The base preset's shapes with random weights, tokenizers trained on `train_split`."""
    processor = VQAProcessor.train_tiny(train_split["question"], train_split["multiple_choice_answer"], image_size=224)
    config = base_config(processor.question_vocab_size, processor.answer_vocab_size, freeze=freeze)
    return VQAModel(config), processor


def model_and_processor(preset: str, train_split: Any, freeze: str) -> tuple[VQAModel, VQAProcessor]:
    torch.manual_seed(0)
    if preset == "tiny":
        # The settings of `model=tiny` as the default run uses them (dropout, stem, BOS conditioning, ...).
        settings = {key: value for key, value in OmegaConf.load(TINY_PRESET).items() if key != "_target_"}
        return tiny_model_and_processor(train_split, **{**settings, "freeze": freeze})
    return base_model_and_processor(train_split, freeze)


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast (matrix products in bf16, reductions in fp32: the Trainer's `bf16=True`), or nothing."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def to_device(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}


def training_throughput(
    preset: str,
    splits: Any,
    device: str,
    precision: str,
    freeze: str,
    grouped: bool,
    cached: bool,
    steps: int,
    batch_size: int,
    workers: int,
    cache_dir: Path,
) -> dict[str, Any]:
    """Samples/s over `steps` timed steps after warm-up, data loading included (as in a real run)."""
    train = with_image_paths(splits["train"])
    model, processor = model_and_processor(preset, splits["train"], freeze)
    model.to(device).train()
    # Random batches stand for the textbook's loop: one question row per example (images seldom repeat anyway).
    collator = VQACollator(processor, distinct_questions=grouped)
    if cached:
        collator.features = build_lookups(model, processor, [splits["train"]], cache_dir)
    sampler = ImageGroupedSampler(train["image_id"]) if grouped else RandomSampler(train)
    loader = DataLoader(
        train, batch_size=batch_size, sampler=sampler, collate_fn=collator, num_workers=workers, drop_last=True
    )
    # Fused AdamW: the Trainer's default optimizer (`adamw_torch_fused`).
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    warmup = 3
    batches = iter(loader)
    flops = None
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
        batch = to_device(next(batches), device)

        def forward(batch: dict[str, torch.Tensor] = batch) -> torch.Tensor:
            with autocast(device, precision):
                return model(**batch).loss

        if step == warmup - 1:  # FLOPs of one step, by component (counting slows the step: not a timed one)
            by_component = flops_by_component(forward)
            flops = sum(sum(phases.values()) for phases in by_component.values())
        else:
            forward().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    seconds = time.perf_counter() - start
    result = {
        "samples_per_second": round(steps * batch_size / seconds, 1),
        "steps": steps,
        "batch_size": batch_size,
        "model_flops_per_step": flops,
        "flops_per_sample_by_component": {
            component: {phase: round(value / batch_size) for phase, value in phases.items()}
            for component, phases in by_component.items()
        },
        "achieved_tflops": round(flops * steps / seconds / 1e12, 3),
    }
    peak = peak_flops(device)
    result["mfu"] = round(flops * steps / seconds / peak, 4) if peak else None
    return result


def peak_flops(device: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name(0)
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


@torch.no_grad()
def textbook_greedy(model: VQAModel, batch: dict[str, torch.Tensor], max_new_tokens: int) -> torch.Tensor:
    """The textbook's evaluation of one question (a batch of one): encode its image and question, then every step
    re-runs the decoder over the whole prefix (no KV cache). Returns (1, max_new_tokens) ids, padded."""
    config = model.config.decoder_config
    answer = torch.full((1, max_new_tokens), config.pad_token_id)
    fused = model.encode(EncoderInputs.pick(batch))
    tokens = torch.tensor([[config.bos_token_id]], device=fused.hidden_states.device)
    for step in range(max_new_tokens):
        logits = model.decoder(
            inputs_embeds=model.decoder_embeddings(tokens, fused),
            encoder_hidden_states=fused.hidden_states,
            encoder_attention_mask=fused.attention_mask,
            use_cache=False,
        ).logits
        next_token = logits[0, -1].argmax()
        answer[0, step] = next_token
        if next_token == config.eos_token_id:
            break
        tokens = torch.cat([tokens, next_token.view(1, 1)], dim=1)
    return answer


def generation_throughput(
    preset: str, splits: Any, device: str, precision: str, questions: int, batch_size: int
) -> dict[str, Any]:
    """Answers/s of evaluation as this codebase runs it against the textbook's, on the same questions, image
    decoding and preprocessing included (one process):

    - batched: the collator's batches of `batch_size` (each distinct image and question text decoded and encoded
      once, the questions of an image next to each other as in VQA v2's files), `VQAModel.generate` (greedy, KV cache);
    - textbook: one question at a time, its image decoded and encoded for it, greedy decoding without a cache.
    """
    model, processor = model_and_processor(preset, splits["train"], "nothing")
    model.to(device).eval()
    split = with_image_paths(splits["validation"])
    rows = [split[index] for index in list(ImageGroupedSampler(split["image_id"]))[:questions]]
    max_new_tokens = model.config.max_answer_tokens
    grouped = VQACollator(processor, with_labels=False)
    single = VQACollator(processor, with_labels=False, distinct_questions=False)
    with autocast(device, precision):
        model.generate(**to_device(grouped(rows[:8]), device))  # warm-up
        synchronize(device)
        start = time.perf_counter()
        batched, images = [], 0
        for first in range(0, len(rows), batch_size):
            batch = to_device(grouped(rows[first : first + batch_size]), device)
            images += len(batch["pixel_values"])
            generated = model.generate(**batch)
            batched.append(torch.nn.functional.pad(generated, (0, max_new_tokens - generated.shape[1])))
        synchronize(device)
        batched_seconds = time.perf_counter() - start
        start = time.perf_counter()
        looped = [textbook_greedy(model, to_device(single([row]), device), max_new_tokens) for row in rows]
        synchronize(device)
        looped_seconds = time.perf_counter() - start
    batched_answers = processor.decode_answers(torch.cat(batched).cpu())
    looped_answers = processor.decode_answers(torch.cat(looped))
    same = [a == b for a, b in zip(batched_answers, looped_answers, strict=True)]
    return {
        "questions": len(rows),
        "batch_size": batch_size,
        "images_encoded_batched": images,
        "images_encoded_textbook": len(rows),
        "batched_kv_cache_answers_per_second": round(len(rows) / batched_seconds, 2),
        "per_question_no_cache_answers_per_second": round(len(rows) / looped_seconds, 2),
        "speedup": round(looped_seconds / batched_seconds, 1),
        "same_answers": sum(same) / len(same),
    }


def data_throughput(splits: Any, preset: str, batch_size: int, workers: int, batches: int) -> dict[str, Any]:
    """Images decoded and preprocessed per second by the collator in DataLoader workers (ungrouped batches)."""
    train = with_image_paths(splits["train"])
    processor = model_and_processor(preset, splits["train"], "nothing")[1]
    loader = DataLoader(
        train,
        batch_size=batch_size,
        sampler=RandomSampler(train),
        collate_fn=VQACollator(processor),
        num_workers=workers,
    )
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    images = sum(len(next(iterator)["pixel_values"]) for _ in range(batches))
    return {"images_per_second": round(images / (time.perf_counter() - start), 1), "workers": workers}


# VQA v2 (train2014 + val2014): images and questions, for the disk cost of the base preset's feature cache.
VQA_V2_IMAGES, VQA_V2_QUESTIONS = 82_783 + 40_504, 443_757 + 214_354


def feature_cache_disk(splits: Any, inputs: int = 32) -> dict[str, Any]:
    """Bytes per image and per distinct question of float16 stores with the base encoders (random weights: the
    size does not depend on them), measured on `inputs` easy-VQA inputs and scaled to VQA v2's counts (every
    question counted as distinct, an upper bound)."""
    model, processor = base_model_and_processor(splits["train"], "encoders")
    subset = splits["validation"].select(range(inputs))
    with tempfile.TemporaryDirectory() as folder:
        lookups = build_lookups(model, processor, [subset], folder)
        image_store, text_store = lookups["image_encoder"].stores[0], lookups["text_encoder"].stores[0]
        per_image = image_store.size_bytes / len(image_store.index)
        per_question = text_store.size_bytes / len(text_store.index)
    return {
        "bytes_per_image": round(per_image),
        "bytes_per_question": round(per_question),
        "vqa_v2_train_val_gib": {
            "image_encoder": round(per_image * VQA_V2_IMAGES / 2**30, 1),
            "text_encoder_at_most": round(per_question * VQA_V2_QUESTIONS / 2**30, 1),
        },
    }


def peak_memory_gib() -> float:
    """Peak resident memory of this process and of its finished children (DataLoader workers), GiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round((own + children) / 2**20, 2)  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["tiny", "base"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per setting")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (the default run uses 2)")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        help="bf16: autocast for training and generation (default: bf16 on a GPU, fp32 on a CPU)",
    )
    parser.add_argument("--questions", type=int, default=256, help="questions for the generation comparison")
    parser.add_argument("--generation-batch-size", type=int, default=64, help="questions per generate call")
    parser.add_argument("--cache", default=".cache/vqa", help="easy-VQA dataset cache")
    parser.add_argument(
        "--coco-images", type=int, default=400, help="--preset base: images per split, written as 640x480 JPEGs"
    )
    parser.add_argument(
        "--out", type=Path, help="JSON file (default benchmarks/results/throughput_<preset>_<device>.json)"
    )
    args = parser.parse_args(argv)
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")

    images_folder = tempfile.TemporaryDirectory()
    splits = preset_splits(args.cache, args.preset, args.coco_images, Path(images_folder.name))
    settings = {
        "freeze=nothing, random batches": ("nothing", False, False),
        "freeze=nothing, image-grouped batches": ("nothing", True, False),
        "freeze=encoders, random batches, no feature cache (the textbook)": ("encoders", False, False),
        "freeze=encoders, no feature cache": ("encoders", True, False),
        "freeze=encoders, feature cache": ("encoders", True, True),
    }
    training = {}
    with tempfile.TemporaryDirectory() as features:
        for name, (freeze, grouped, cached) in settings.items():
            training[name] = training_throughput(
                args.preset,
                splits,
                args.device,
                args.precision,
                freeze,
                grouped,
                cached,
                args.steps,
                args.batch_size,
                args.workers,
                Path(features),
            )
            print(f"{name:<40} {training[name]['samples_per_second']:>9.1f} samples/s", file=sys.stderr)
    rate = {name: result["samples_per_second"] for name, result in training.items()}
    results = {
        "command": " ".join(["python", *sys.argv]),
        "torch": torch.__version__,
        "preset": args.preset,
        "precision": args.precision,
        "training": training,
        "ratios": {
            "image_grouped_over_random": round(
                rate["freeze=nothing, image-grouped batches"] / rate["freeze=nothing, random batches"], 2
            ),
            "feature_cache_over_no_cache": round(
                rate["freeze=encoders, feature cache"] / rate["freeze=encoders, no feature cache"], 2
            ),
            "feature_cache_over_textbook": round(
                rate["freeze=encoders, feature cache"]
                / rate["freeze=encoders, random batches, no feature cache (the textbook)"],
                2,
            ),
        },
        "generation": generation_throughput(
            args.preset, splits, args.device, args.precision, args.questions, args.generation_batch_size
        ),
        "data": data_throughput(splits, args.preset, args.batch_size, args.workers, batches=20),
        "feature_cache_disk_base": feature_cache_disk(splits),
        "peak_memory_gib": peak_memory_gib(),
        "provenance": provenance(Path(__file__).resolve().parents[1], device=args.device),
    }
    out = args.out or Path("benchmarks/results") / f"throughput_{args.preset}_{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(table(results))
    return 0


def table(results: dict[str, Any]) -> str:
    lines = [
        f"\n{results['preset']} preset, {results['precision']}, on {results['provenance']['device']}",
        "| measurement | value |",
        "|---|---|",
    ]
    for name, result in results["training"].items():
        mfu = f", MFU {100 * result['mfu']:.1f}%" if result["mfu"] is not None else ""
        lines.append(f"| training, {name} | {result['samples_per_second']} samples/s{mfu} |")
    for name, value in results["ratios"].items():
        lines.append(f"| {name.replace('_', ' ')} | {value}x |")
    generation = results["generation"]
    lines += [
        f"| generation, batched with KV cache | {generation['batched_kv_cache_answers_per_second']} answers/s |",
        f"| generation, per question, no cache | {generation['per_question_no_cache_answers_per_second']} answers/s |",
        f"| generation speed-up (same answers: {100 * generation['same_answers']:.0f}%) | {generation['speedup']}x |",
        f"| data pipeline | {results['data']['images_per_second']} images/s ({results['data']['workers']} workers) |",
        f"| peak memory | {results['peak_memory_gib']} GiB |",
    ]
    disk = results["feature_cache_disk_base"]
    lines.append(
        f"| feature cache, base encoders, float16 | {disk['bytes_per_image']} B/image, {disk['bytes_per_question']} "
        f"B/question; VQA v2 train+val: {disk['vqa_v2_train_val_gib']['image_encoder']} GiB images, at most "
        f"{disk['vqa_v2_train_val_gib']['text_encoder_at_most']} GiB questions |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
