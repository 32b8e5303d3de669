"""One run as a pipeline of stages: config checks -> preparation -> data -> fit (a network, or an answer prior) ->
final evaluation -> run folder -> report. `train.py` calls `run` (or `run_in_sweep` in a multirun)."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import transformers
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from transformers import TrainingArguments

from vqa.config_checks import validate_config
from vqa.errors import FAILURE_FILE, DivergenceError, UserError, one_line
from vqa.evaluation.baselines import fit_prior
from vqa.evaluation.final import evaluate_final
from vqa.inspection.report import report_at_the_end
from vqa.instantiate import instantiate
from vqa.model.modeling import VQAModel
from vqa.model.processing import VQAProcessor
from vqa.retrieval.attach import data_cache_dir, retrieval_stage
from vqa.run_folder import LOCK_FILE
from vqa.run_outputs import data_caveat_lines, print_summary, write_json, write_run_folder
from vqa.training.arguments import training_arguments
from vqa.training.checkpoints import discard_incomplete, latest_complete_checkpoint
from vqa.training.cluster import process_rank
from vqa.training.distributed import leave_process_group
from vqa.training.fit import fit_model
from vqa.training.init_from import model_changes, start_from_trained
from vqa.training.loggers import configure_wandb, log_sample_predictions
from vqa.training.objectives import AnswerCrossEntropy, Objective
from vqa.training.resume import override_key, record_overrides, resumed_config

logger = logging.getLogger("vqa")
# What a run folder holds before training starts: Hydra's files and the resolved config.
UNSTARTED_RUN_FILES = {".hydra", "train.log", "config.yaml", LOCK_FILE}


@dataclass
class Prepared:
    """What the checks leave for fitting: a network's training arguments, objective, starting model and the
    checkpoint a resumed run continues from (all None or unused for an answer prior)."""

    cfg: DictConfig
    args: TrainingArguments | None
    objective: Objective
    trained: tuple[VQAModel, VQAProcessor] | None
    checkpoint: Path | None


def run(cfg: DictConfig) -> float | None:
    """Train and evaluate as configured; returns the eval (validation) split's VQA accuracy of the final weights,
    what sweeps and optimisers maximise (the final split's accuracy is recorded in metrics.json, never returned).

    Raises:
        UserError: a wrong setting, file or checkpoint (one line; `train.py` prints it and exits with status 2). A
            run folder that this call created and that holds nothing of a run yet is removed first, except in a
            multirun, where the folder keeps the failure (`run_in_sweep`).
        DivergenceError: training produced a non-finite number (`vqa.training.divergence`); the folder is kept, with
            the reason in `error.json`.
    """
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    created_here = not cfg.get("resume") or not (run_dir / "config.yaml").is_file()
    try:
        accuracy = train_and_evaluate(cfg, run_dir)
    except DivergenceError as error:  # the folder keeps the run so far: its log, checkpoints and why it stopped
        if not in_multirun() and process_rank() == 0:  # run_in_sweep records a job's failure
            write_json(run_dir / FAILURE_FILE, {"error": one_line(str(error)), "user_error": True})
        raise
    except UserError:
        if created_here and not in_multirun():
            remove_unstarted_run_folder(run_dir)
        raise
    leave_process_group()
    return accuracy


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
    """`run` inside its error handling: the stages in order. Returns the eval split's accuracy of the final weights."""
    start = time.perf_counter()
    prepared = prepare(cfg, run_dir)
    cfg = prepared.cfg
    splits = instantiate(cfg.data)
    for line in data_caveat_lines({"dropped": splits.dropped}):
        logger.warning(line)
    retrieval = None
    if cfg.get("retrieval") and not cfg.get("prior"):
        retrieval = retrieval_stage(cfg.retrieval, splits, data_cache_dir(cfg.data))
        splits = retrieval.splits
    if cfg.get("prior"):
        fitted = fit_prior(splits, cfg.prior.by, cfg.final_split, cfg.eval_split)
    else:
        fitted = fit_model(
            cfg, splits, prepared.args, prepared.objective, prepared.trained, prepared.checkpoint, retrieval
        )
    evaluation = evaluate_final(
        fitted.answer,
        splits,
        cfg.final_split,
        cfg.eval_split,
        final_evaluation=cfg.final_evaluation,
        shuffled_image_check=cfg.get("shuffled_image_check", False),
        seed=cfg.seed,
        logged_validation=fitted.logged_validation,
        benchmark=splits.benchmark,
    )
    if fitted.write_checkpoint is not None:  # every rank calls it: under FSDP it gathers the shards of all ranks
        fitted.write_checkpoint(run_dir / "checkpoint")
    if not fitted.writes_run_folder:  # under DDP or FSDP, rank 0 writes the run folder
        return evaluation.validation_accuracy
    metrics, card = write_run_folder(run_dir, evaluation, fitted, splits, cfg.seed, time.perf_counter() - start)
    if evaluation.answers and "wandb" in cfg.logger.report_to:
        log_sample_predictions(splits[cfg.final_split], evaluation.answers, cfg.logger.get("sample_predictions", 32))
    print_summary(run_dir, metrics, card)
    if cfg.get("report", True):
        report_at_the_end(run_dir, splits=splits, **fitted.report_parts)
    return evaluation.validation_accuracy


def composed_without(command_line: list[str]) -> DictConfig:
    """The config this app composes from its defaults with only the command line's `init_from` (to tell which model
    settings the rest of the command line changed, directly or through a group such as `variant=`)."""
    kept = [override for override in command_line if override_key(override) == "init_from"]
    return compose(config_name=HydraConfig.get().job.config_name, overrides=kept)


def prepare(cfg: DictConfig, run_dir: Path) -> Prepared:
    """Every check before anything is built (a resumed run's own config, the settings, `trainer.args`, the objective,
    `init_from`), then the seed, the loggers and the run folder's config.yaml."""
    applied: list[str] = []
    if cfg.get("resume"):
        cfg, applied = resumed_config(cfg, list(HydraConfig.get().overrides.task))
    validate_config(cfg)
    network = not cfg.get("prior")
    # Built now so that a wrong trainer.args value stops the run before any data or model is built.
    args = training_arguments(cfg, str(run_dir)) if network else None
    objective = instantiate(cfg.objective) if cfg.get("objective") and network else AnswerCrossEntropy()
    trained = None
    if cfg.get("init_from") and network:  # a resumed run's model settings are those its config.yaml recorded
        command_line = list(HydraConfig.get().overrides.task)
        changes = None if cfg.get("resume") else model_changes(cfg.model, composed_without(command_line).model)
        trained, cfg = start_from_trained(cfg, changes, command_line)
    checkpoint = latest_complete_checkpoint(run_dir) if cfg.get("resume") else None
    transformers.set_seed(cfg.seed)
    configure_wandb(cfg, run_dir)
    datasets.disable_progress_bars()  # library internals ("Flattening the indices") are not progress a user follows
    if process_rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        record_overrides(run_dir, applied)
        if checkpoint is not None:
            discard_incomplete(run_dir, checkpoint)
            (run_dir / FAILURE_FILE).unlink(missing_ok=True)  # why it stopped before: no longer so once it goes on
    return Prepared(cfg, args, objective, trained, checkpoint)
