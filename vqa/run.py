"""One training run, end to end: config -> data -> model -> Trainer -> final evaluation -> run folder."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import datasets
import torch
import torch.distributed as dist
import transformers
from datasets import Dataset
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch.distributed.tensor import DTensor
from transformers import TrainerState

from vqa.config_checks import validate_config
from vqa.data.schema import column
from vqa.errors import FAILURE_FILE, UserError, one_line
from vqa.evaluation.baselines import AnswerPrior, shuffle_images
from vqa.evaluation.scoring import score_split
from vqa.evaluation.validation import final_validation_accuracy, validation_block
from vqa.inspection.report import report_at_the_end
from vqa.instantiate import instantiate
from vqa.model.loading import load_checkpoint
from vqa.model.modeling import VQAModel
from vqa.model.processing import VQACollator, VQAProcessor
from vqa.run_outputs import metrics_content, official_results, run_card, write_json
from vqa.training.arguments import training_arguments
from vqa.training.checkpoints import discard_incomplete, latest_complete_checkpoint, replace_folder
from vqa.training.feature_cache import FeatureLookup, build_lookups
from vqa.training.objectives import AnswerCrossEntropy
from vqa.training.resume import record_overrides, resumed_config, training_finished
from vqa.training.trainer import VQATrainer, for_training, load_checkpoint_weights

logger = logging.getLogger("vqa")
CODE_FOLDER = Path(__file__).resolve().parents[1]
# What a run folder holds before training starts: Hydra's files and the resolved config.
UNSTARTED_RUN_FILES = {".hydra", "train.log", "config.yaml"}


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
    """Train and evaluate as configured; returns the eval (validation) split's VQA accuracy of the final weights,
    what sweeps and optimisers maximise (the final split's accuracy is recorded in metrics.json, never returned).

    Raises:
        UserError: a wrong setting, file or checkpoint (one line; `train.py` prints it and exits with status 2). A
            run folder that this call created and that holds nothing of a run yet is removed first, except in a
            multirun, where the folder keeps the failure (`run_in_sweep`).
    """
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    created_here = not cfg.get("resume") or not (run_dir / "config.yaml").is_file()
    try:
        accuracy = train_and_evaluate(cfg, run_dir)
    except UserError:
        if created_here and not in_multirun():
            remove_unstarted_run_folder(run_dir)
        raise
    leave_process_group()
    return accuracy


def leave_process_group() -> None:
    """Under DDP, once every rank is done: close the process group. A rank that exits with it open can abort in
    gloo's threads at exit ("terminate called without an active exception", exit -6; seen in two of five runs of
    the SLURM-variables test, where rank 1 finishes while rank 0 still writes the run folder)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def in_multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def run_in_sweep(cfg: DictConfig) -> float | None:
    """`run` as one job of a multirun: a job that fails does not stop the sweep. Its folder gets `error.json`
    (the one-line error, and whether it was the user's mistake or a bug, whose traceback goes to the log), the
    sweep goes on, and its report marks the job (`vqa.inspection.sweep_report`). Returns None for a failed job."""
    try:
        return run(cfg)
    except Exception as error:  # recorded and reported; the sweep's other jobs still run
        user_error = isinstance(error, UserError)
        line = one_line(str(error) if user_error else f"{type(error).__name__}: {error}")
        if user_error:
            logger.error("error: %s", line)
        else:
            logger.exception("this job failed with a bug (traceback below); the sweep goes on")
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / FAILURE_FILE, {"error": line, "user_error": user_error})
        return None


def remove_unstarted_run_folder(run_dir: Path) -> None:
    """Delete `run_dir` when it holds only what Hydra and the config step wrote (no checkpoint, no metrics)."""
    if run_dir.is_dir() and {path.name for path in run_dir.iterdir()} <= UNSTARTED_RUN_FILES:
        shutil.rmtree(run_dir, ignore_errors=True)


def train_and_evaluate(cfg: DictConfig, run_dir: Path) -> float | None:
    """`run` inside its error handling: every check first, then data, model, training, evaluation, run folder."""
    start = time.perf_counter()
    applied: list[str] = []
    if cfg.get("resume"):
        cfg, applied = resumed_config(cfg, list(HydraConfig.get().overrides.task))
    validate_config(cfg)
    # Built now so that a wrong trainer.args value stops the run before any data or model is built.
    args = None if cfg.get("prior") else training_arguments(cfg, str(run_dir))
    objective = instantiate(cfg.objective) if cfg.get("objective") and not cfg.get("prior") else AnswerCrossEntropy()
    trained = trained_model(cfg.init_from) if cfg.get("init_from") and not cfg.get("prior") else None
    checkpoint = latest_complete_checkpoint(run_dir) if cfg.get("resume") else None
    transformers.set_seed(cfg.seed)
    configure_wandb(cfg, run_dir)
    datasets.disable_progress_bars()  # library internals ("Flattening the indices") are not progress a user follows
    if int(os.environ.get("RANK", "0")) == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        record_overrides(run_dir, applied)
        if checkpoint is not None:
            discard_incomplete(run_dir, checkpoint)

    splits = instantiate(cfg.data)
    for line in data_report_lines({"dropped": splits.dropped}):
        logger.warning(line)
    if cfg.get("prior"):
        return run_prior(cfg, splits, run_dir, start)
    if trained is not None:
        model, processor = trained
        logger.info(
            "model and processor from %s (init_from; its own config, the model group is not used)", cfg.init_from
        )
    else:
        model, processor = instantiate(cfg.model, train_split=splits["train"])
    logger.info("parameters:\n%s", model.parameter_table())
    used_splits = dict.fromkeys(["train", cfg.eval_split, *([cfg.final_split] if cfg.final_evaluation else [])])
    questions_cut = {name: count_cut_questions(processor, splits[name]) for name in used_splits}
    for name, count in questions_cut.items():
        if count:
            logger.warning(
                "%s split: %d distinct questions are longer than %d tokens and are cut to it "
                "(model.max_question_length)",
                name,
                count,
                processor.max_question_length,
            )

    # The batch keys the objective needs beyond the model inputs (soft targets, question and answer texts).
    collator = VQACollator(processor, inputs=model.config.inputs, batch_extras=getattr(objective, "batch_extras", None))
    trainer = VQATrainer(
        model=model,
        args=args,
        train_dataset=for_training(splits["train"]),
        eval_dataset=for_training(splits[cfg.eval_split]),
        data_collator=collator,
        processor=processor,
        objective=objective,
        group_by_image=cfg.trainer.group_by_image,
        questions_per_image=cfg.trainer.questions_per_image,
        num_beams=cfg.trainer.num_beams,
    )
    # After the Trainer has put the model on its device, so that the encoders run there once.
    collator.features = cached_features(cfg, trainer.model, processor, splits)
    trained_now = checkpoint is None or not training_finished(checkpoint, trainer)
    if not trained_now:
        load_checkpoint_weights(trainer.model, final_weights(checkpoint, trainer.args.load_best_model_at_end))
        train_metrics: dict[str, float] = {}
    else:
        train_metrics = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None).metrics
        # trainer_state.json in the run folder: every logged loss and evaluation, unrounded (also without checkpoints).
        trainer.save_state()
    sharded = sharded_parameters(trainer.model)
    # Under FSDP each rank holds its own shard of a weight: comparing them across ranks would say nothing.
    parameters_in_sync = None if sharded else ranks_agree_on_parameters(trainer.model)

    final: dict[str, Any] = {}
    answers: list[str] = []
    shuffled_accuracy = None
    if cfg.final_evaluation:
        final_split = splits[cfg.final_split]
        prediction = trainer.predict(for_training(final_split), metric_key_prefix="test")
        # From the generated ids themselves: the Trainer calls compute_metrics only for a split with labels, so a
        # split without answers (VQA v2 test-dev) would leave the metric holding the previous evaluation's answers.
        answers = trainer.vqa_metrics.decode(prediction.predictions)
        final = {key.removeprefix("test_"): value for key, value in prediction.metrics.items()}
        if shuffled_check_applies(cfg, final_split) and "vqa_accuracy" in final:
            logger.info("shuffled-image check: %s questions, each on a random other image", len(final_split))
            shuffled = shuffle_images(final_split, cfg.seed)
            shuffled_accuracy = trainer.predict(for_training(shuffled), metric_key_prefix="shuffled").metrics.get(
                "shuffled_vqa_accuracy"
            )

    # What searches maximise: the eval split's accuracy of the final weights (the final split is only recorded).
    if cfg.final_evaluation and cfg.final_split == cfg.eval_split and "vqa_accuracy" in final:
        validation_accuracy = final["vqa_accuracy"]
    else:
        started_at = global_step(checkpoint) if checkpoint is not None else 0
        validation_accuracy = final_validation_accuracy(
            trainer, started_at if trained_now else None, evaluate_if_missing=cfg.final_evaluation
        )
    validation = validation_block(cfg.eval_split, len(splits[cfg.eval_split]), validation_accuracy)

    # Under FSDP the whole weights are gathered from every rank's shard, so every rank takes part here; rank 0
    # alone then writes them (trainer.save_model would gather again, waiting for ranks that have moved on).
    # Written from the accelerate and transformers sources; not yet run on GPUs.
    full_weights = trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
    if trainer.is_world_process_zero():

        def write_checkpoint(folder: Path) -> None:
            if full_weights is None:
                trainer.save_model(str(folder))
            else:
                trainer.model.save_pretrained(folder, state_dict=full_weights)
            processor.save_pretrained(folder)

        replace_folder(run_dir / "checkpoint", write_checkpoint)
        num_questions = len(splits[cfg.final_split]) if cfg.final_evaluation else 0
        data_report = {
            "dropped": splits.dropped,
            "questions_cut": questions_cut,
            "undecodable_images": trainer.undecodable_images,
        }
        metrics = metrics_content(
            cfg.final_split,
            num_questions,
            final,
            shuffled_accuracy,
            seed=cfg.seed,
            validation=validation,
            data=data_report,
        )
        write_json(run_dir / "metrics.json", metrics)
        if answers:
            write_json(run_dir / "predictions.json", official_results(splits[cfg.final_split], answers))
        card = run_card(CODE_FOLDER, splits, time.perf_counter() - start, train_metrics, trainer.args.world_size)
        card["parameters_identical_across_ranks"] = parameters_in_sync
        card["sharded_parameters"] = sharded
        card["feature_cache"] = {
            component: {"bytes": lookup.size_bytes, "folders": [str(store.folder) for store in lookup.stores]}
            for component, lookup in (collator.features or {}).items()
        }
        write_json(run_dir / "run_card.json", card)
        if answers and "wandb" in cfg.logger.report_to:
            log_sample_predictions(splits[cfg.final_split], answers, cfg.logger.get("sample_predictions", 32))
        print_summary(run_dir, metrics, card)
        if cfg.get("report", True):
            # A sharded model would wait for the other ranks in its forward: the report then loads the checkpoint.
            model = None if trainer.is_fsdp_enabled else trainer.model
            report_at_the_end(run_dir, splits=splits, model=model, processor=processor)
    return validation_accuracy


def trained_model(path: str | Path) -> tuple[VQAModel, VQAProcessor]:
    """`init_from`: the model and processor of a finished run (its folder or its `checkpoint` folder), to train on.

    Raises:
        CheckpointError: not a run's checkpoint (one line, from `load_checkpoint`).
    """
    folder = Path(path)
    if (folder / "checkpoint").is_dir():
        folder = folder / "checkpoint"
    model, processor = load_checkpoint(folder, device="cpu")  # the Trainer moves it to its device
    return model.train(), processor


def global_step(checkpoint: Path) -> int:
    """The optimizer step a Trainer checkpoint was written at."""
    return TrainerState.load_from_json(str(checkpoint / "trainer_state.json")).global_step


def final_weights(checkpoint: Path, load_best_model_at_end: bool) -> Path:
    """The checkpoint whose weights a finished run ends with: the best one when the run selects it, else the last."""
    best = TrainerState.load_from_json(str(checkpoint / "trainer_state.json")).best_model_checkpoint
    if load_best_model_at_end and best and Path(best).is_dir():
        return Path(best)
    return checkpoint


def count_cut_questions(processor: VQAProcessor, split: Dataset) -> int:
    """How many distinct questions of `split` are longer than the processor's question length (and get cut)."""
    distinct = list(set(column(split, "question")))
    lengths = processor.question_tokenizer(distinct, add_special_tokens=True, return_length=True)["length"]
    return sum(length > processor.max_question_length for length in lengths)


def shuffled_check_applies(cfg: DictConfig, split: Dataset) -> bool:
    """Whether to run the shuffled-image check on `split`: asked for (runs saved before it existed did not), and the
    split has at least two images to swap (otherwise one line says so)."""
    if not cfg.get("shuffled_image_check", False):
        return False
    if len(set(column(split, "image_id"))) < 2:
        logger.warning("shuffled-image check skipped: the %s split has fewer than two images", cfg.final_split)
        return False
    return True


def run_prior(cfg: DictConfig, splits: dict[str, Dataset], run_dir: Path, start: float) -> float | None:
    """`baseline=prior`: the training split's most common answer per question type (or overall), no network.

    Writes the same run folder as a trained model: metrics.json (with the shuffled-image check, which a prior
    passes unchanged by construction), predictions.json, run_card.json.
    """
    prior = AnswerPrior.fit_split(splits["train"], cfg.prior.by)
    final_split = splits[cfg.final_split]
    answers, question_types, inferred = prior.answer_split(final_split)
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
    eval_split = splits[cfg.eval_split]
    validation_accuracy = score_split(eval_split, prior.answer_split(eval_split)[0]).get("vqa_accuracy")
    shuffled_accuracy = None
    if shuffled_check_applies(cfg, final_split) and scores:
        shuffled = shuffle_images(final_split, cfg.seed)
        shuffled_accuracy = score_split(shuffled, prior.answer_split(shuffled)[0]).get("vqa_accuracy")
    baseline = {
        "name": "prior",
        "by": cfg.prior.by,
        "question_types": len(prior.answers),
        "overall_answer": prior.overall,
        "questions_of_unseen_types": unseen,
        "question_types_read_from_text": inferred,
    }
    metrics = metrics_content(
        cfg.final_split,
        len(final_split),
        scores,
        shuffled_accuracy,
        seed=cfg.seed,
        validation=validation_block(cfg.eval_split, len(eval_split), validation_accuracy),
        baseline=baseline,
    )
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun: one writer
        return validation_accuracy
    write_json(run_dir / "metrics.json", metrics)
    write_json(run_dir / "predictions.json", official_results(final_split, answers))
    card = run_card(CODE_FOLDER, splits, time.perf_counter() - start, {}, world_size=1)
    write_json(run_dir / "run_card.json", card)
    print_summary(run_dir, metrics, card)
    if cfg.get("report", True):
        report_at_the_end(run_dir, splits=splits)
    return validation_accuracy


def sharded_parameters(model: torch.nn.Module) -> int:
    """How many of the model's parameter tensors are split across ranks (distributed=fsdp: FSDP2 makes each a DTensor
    sharded along its first dimension); 0 without FSDP."""
    return sum(isinstance(parameter, DTensor) for parameter in model.parameters())


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
    if metrics["vqa_accuracy"] is None and metrics["num_questions"]:  # a split released without answers
        scored = f"none: the {metrics['num_questions']} {metrics['split']} questions have no human answers here"
    else:
        scored = f"{metrics['vqa_accuracy']} on {metrics['num_questions']} {metrics['split']} questions"
    lines = [
        "",
        f"run folder        {run_dir}",
        f"seed              {metrics.get('seed')}",
        f"VQA accuracy      {scored}",
    ]
    validation = metrics.get("validation")
    if validation and validation["split"] != metrics["split"]:
        lines.insert(
            3,
            f"validation        {validation['vqa_accuracy']} on {validation['num_questions']} {validation['split']} "
            "questions (what searches maximise)",
        )
    lines += [f"  {name:<16}{value}" for name, value in metrics["per_answer_type"].items()]
    if metrics.get("vqa_accuracy_shuffled_images") is not None:
        lines.append(f"shuffled images   {metrics['vqa_accuracy_shuffled_images']} (each question on another image)")
    if "baseline" in metrics:
        lines.append(f"baseline          {metrics['baseline']['name']} by {metrics['baseline']['by']}, no training")
    lines += data_report_lines(metrics.get("data", {}))
    lines.append(f"wall time         {card['wall_seconds']:.0f} s (training {card['train_seconds']:.0f} s)")
    if card["train_samples_per_second"]:
        lines.append(f"throughput        {card['train_samples_per_second']} training samples/s on {card['device']}")
    lines += [
        f"feature cache     {component}: {cache['bytes'] / 2**20:.1f} MiB in {len(cache['folders'])} split folders"
        for component, cache in card.get("feature_cache", {}).items()
    ]
    print("\n".join(lines), flush=True)


def data_report_lines(report: dict[str, Any]) -> list[str]:
    """Summary lines for what the run did not use as given: dropped records, cut questions, undecodable images."""
    dropped = {reason: count for reason, count in report.get("dropped", {}).items() if count}
    cut = {split: count for split, count in report.get("questions_cut", {}).items() if count}
    lines = []
    if dropped:
        lines.append("data dropped      " + ", ".join(f"{count} {reason}" for reason, count in dropped.items()))
    if cut:
        lines.append("questions cut     " + ", ".join(f"{count} in {split}" for split, count in cut.items()))
    if report.get("undecodable_images"):
        lines.append(
            f"undecodable images {report['undecodable_images']} question rows without their image (files in train.log)"
        )
    return lines
