"""One training run, end to end: config -> data -> model -> Trainer -> final evaluation -> run folder."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import transformers
from datasets import Dataset
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vqa.baselines import AnswerPrior, shuffle_images
from vqa.feature_cache import FeatureLookup, build_lookups
from vqa.processing import VQACollator, VQAProcessor
from vqa.run_outputs import metrics_content, official_results, run_card, write_json
from vqa.training import VQATrainer, for_training, score_split, training_arguments, validate_config

logger = logging.getLogger("vqa")
CODE_FOLDER = Path(__file__).resolve().parents[1]


def resumed_config(cfg: DictConfig) -> DictConfig:
    """With `resume=<run folder>`, that run's own saved config (so one override is enough to continue it)."""
    saved = Path(cfg.resume) / "config.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"resume: {saved} not found; expected the folder of an earlier run")
    previous = OmegaConf.load(saved)
    previous.resume = cfg.resume
    return previous


def configure_wandb(cfg: DictConfig, run_dir: Path) -> None:
    """Offline unless the user configured wandb (a mode or an API key): a default run never prompts or fails."""
    if "wandb" not in cfg.logger.report_to:
        return
    if not os.environ.get("WANDB_MODE") and not os.environ.get("WANDB_API_KEY"):
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_DIR", str(run_dir))
    os.environ.setdefault("WANDB_PROJECT", cfg.logger.get("project", "vqa"))


def cached_features(
    cfg: DictConfig, model: torch.nn.Module, processor: VQAProcessor, splits: dict[str, Dataset]
) -> dict[str, FeatureLookup] | None:
    """Feature stores for the frozen encoders over the splits the run reads, when `feature_cache.enabled`; None when
    nothing is cached (no encoder that runs is frozen)."""
    if not cfg.feature_cache.enabled:
        return None
    used = dict.fromkeys(["train", cfg.eval_split, *([cfg.final_split] if cfg.final_evaluation else [])])
    lookups = build_lookups(
        model, processor, [splits[name] for name in used], cfg.feature_cache.dir, cfg.feature_cache.dtype
    )
    for component, lookup in lookups.items():
        logger.info("feature cache: %s, %.1f MiB in %s", component, lookup.size_bytes / 2**20, cfg.feature_cache.dir)
    return lookups or None


def run(cfg: DictConfig) -> float | None:
    """Train and evaluate as configured; returns the final VQA accuracy (for sweeps and optimisers)."""
    start = time.perf_counter()
    if cfg.get("resume"):
        cfg = resumed_config(cfg)
    validate_config(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    transformers.set_seed(cfg.seed)
    configure_wandb(cfg, run_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    splits = instantiate(cfg.data)
    if cfg.get("prior"):
        return run_prior(cfg, splits, run_dir, start)
    model, processor = instantiate(cfg.model, train_split=splits["train"])
    logger.info("parameters:\n%s", model.parameter_table())

    collator = VQACollator(processor, inputs=model.config.inputs)
    trainer = VQATrainer(
        model=model,
        args=training_arguments(cfg, str(run_dir)),
        train_dataset=for_training(splits["train"]),
        eval_dataset=for_training(splits[cfg.eval_split]),
        data_collator=collator,
        processor=processor,
        group_by_image=cfg.trainer.group_by_image,
        questions_per_image=cfg.trainer.questions_per_image,
        num_beams=cfg.trainer.num_beams,
    )
    # After the Trainer has put the model on its device, so that the encoders run there once.
    collator.features = cached_features(cfg, trainer.model, processor, splits)
    train_output = trainer.train(resume_from_checkpoint=True if cfg.get("resume") else None)
    parameters_in_sync = ranks_agree_on_parameters(trainer.model)

    final: dict[str, Any] = {}
    answers: list[str] = []
    shuffled_accuracy = None
    if cfg.final_evaluation:
        final_split = splits[cfg.final_split]
        prediction = trainer.predict(for_training(final_split), metric_key_prefix="test")
        answers = trainer.vqa_metrics.predictions
        final = {key.removeprefix("test_"): value for key, value in prediction.metrics.items()}
        if shuffled_check_applies(cfg, final_split) and "vqa_accuracy" in final:
            logger.info("shuffled-image check: %s questions, each on a random other image", len(final_split))
            shuffled = shuffle_images(final_split, cfg.seed)
            shuffled_accuracy = trainer.predict(for_training(shuffled), metric_key_prefix="shuffled").metrics.get(
                "shuffled_vqa_accuracy"
            )

    if trainer.is_world_process_zero():
        checkpoint = run_dir / "checkpoint"
        trainer.save_model(str(checkpoint))
        processor.save_pretrained(checkpoint)
        num_questions = len(splits[cfg.final_split]) if cfg.final_evaluation else 0
        metrics = metrics_content(cfg.final_split, num_questions, final, shuffled_accuracy)
        write_json(run_dir / "metrics.json", metrics)
        if answers:
            write_json(run_dir / "predictions.json", official_results(splits[cfg.final_split], answers))
        card = run_card(CODE_FOLDER, splits, time.perf_counter() - start, train_output.metrics, trainer.args.world_size)
        card["parameters_identical_across_ranks"] = parameters_in_sync
        card["feature_cache"] = {
            component: {"bytes": lookup.size_bytes, "folders": [str(store.folder) for store in lookup.stores]}
            for component, lookup in (collator.features or {}).items()
        }
        write_json(run_dir / "run_card.json", card)
        if answers and "wandb" in cfg.logger.report_to:
            log_sample_predictions(splits[cfg.final_split], answers, cfg.logger.get("sample_predictions", 32))
        print_summary(run_dir, metrics, card)
    return final.get("vqa_accuracy")


def shuffled_check_applies(cfg: DictConfig, split: Dataset) -> bool:
    """Whether to run the shuffled-image check on `split`: asked for (runs saved before it existed did not), and the
    split has at least two images to swap (otherwise one line says so)."""
    if not cfg.get("shuffled_image_check", False):
        return False
    if len(set(split["image_id"])) < 2:
        logger.warning("shuffled-image check skipped: the %s split has fewer than two images", cfg.final_split)
        return False
    return True


def run_prior(cfg: DictConfig, splits: dict[str, Dataset], run_dir: Path, start: float) -> float | None:
    """`baseline=prior`: the training split's most common answer per question type (or overall), no network.

    Writes the same run folder as a trained model: metrics.json (with the shuffled-image check, which a prior
    passes unchanged by construction), predictions.json, run_card.json.
    """
    train = splits["train"]
    prior = AnswerPrior.fit(train["multiple_choice_answer"], train["question_type"], cfg.prior.by)
    final_split = splits[cfg.final_split]
    question_types, inferred = prior.question_types(final_split["question_type"], final_split["question"])
    answers = prior.predict(question_types)
    unseen = prior.count_unseen(question_types)
    logger.info(
        "prior by %s: %d question types, overall answer %r; %s split: %d questions without a question_type typed "
        "from their text, %d questions of types unseen in training",
        cfg.prior.by,
        len(prior.answers),
        prior.overall,
        cfg.final_split,
        inferred,
        unseen,
    )
    scores = score_split(final_split, answers)
    shuffled_accuracy = None
    if shuffled_check_applies(cfg, final_split) and scores:
        shuffled = shuffle_images(final_split, cfg.seed)
        shuffled_types, _ = prior.question_types(shuffled["question_type"], shuffled["question"])
        shuffled_accuracy = score_split(shuffled, prior.predict(shuffled_types)).get("vqa_accuracy")
    baseline = {
        "name": "prior",
        "by": cfg.prior.by,
        "question_types": len(prior.answers),
        "overall_answer": prior.overall,
        "questions_of_unseen_types": unseen,
        "question_types_read_from_text": inferred,
    }
    metrics = metrics_content(cfg.final_split, len(final_split), scores, shuffled_accuracy, baseline=baseline)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun: one writer
        return scores.get("vqa_accuracy")
    write_json(run_dir / "metrics.json", metrics)
    write_json(run_dir / "predictions.json", official_results(final_split, answers))
    card = run_card(CODE_FOLDER, splits, time.perf_counter() - start, {}, world_size=1)
    write_json(run_dir / "run_card.json", card)
    print_summary(run_dir, metrics, card)
    return scores.get("vqa_accuracy")


def ranks_agree_on_parameters(model: torch.nn.Module) -> bool | None:
    """Under DDP, whether every rank ended with the same weights (per-tensor float64 sums); None on one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    device = next(model.parameters()).device  # nccl gathers GPU tensors, gloo CPU ones
    checksum = torch.stack([parameter.detach().double().sum() for parameter in model.parameters()]).to(device)
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    return all(torch.equal(gathered[0], other) for other in gathered[1:])


def log_sample_predictions(split: Dataset, answers: list[str], count: int) -> None:
    """A wandb table of the first `count` final-split questions: image, question, prediction, human answer."""
    import wandb

    if wandb.run is None:
        return
    table = wandb.Table(columns=["question_id", "image", "question", "prediction", "answer"])
    for row, answer in zip(split.select(range(min(count, len(split)))), answers, strict=False):
        table.add_data(
            row["question_id"], wandb.Image(row["image"]), row["question"], answer, row["multiple_choice_answer"]
        )
    wandb.run.log({"sample_predictions": table})


def print_summary(run_dir: Path, metrics: dict[str, Any], card: dict[str, Any]) -> None:
    lines = [
        "",
        f"run folder        {run_dir}",
        f"VQA accuracy      {metrics['vqa_accuracy']} on {metrics['num_questions']} {metrics['split']} questions",
    ]
    lines += [f"  {name:<16}{value}" for name, value in metrics["per_answer_type"].items()]
    if metrics.get("vqa_accuracy_shuffled_images") is not None:
        lines.append(f"shuffled images   {metrics['vqa_accuracy_shuffled_images']} (each question on another image)")
    if "baseline" in metrics:
        lines.append(f"baseline          {metrics['baseline']['name']} by {metrics['baseline']['by']}, no training")
    lines.append(f"wall time         {card['wall_seconds']:.0f} s (training {card['train_seconds']:.0f} s)")
    if card["train_samples_per_second"]:
        lines.append(f"throughput        {card['train_samples_per_second']} training samples/s on {card['device']}")
    lines += [
        f"feature cache     {component}: {cache['bytes'] / 2**20:.1f} MiB in {len(cache['folders'])} split folders"
        for component, cache in card.get("feature_cache", {}).items()
    ]
    print("\n".join(lines), flush=True)
