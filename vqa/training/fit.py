"""Fitting a network: the model (built from the config, or a finished run's with `init_from`), the Trainer, the
feature cache, training (or, for a resumed run that is over, its final weights), and what the evaluation and the run
folder need from it (`vqa.evaluation.answering.Fitted`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from omegaconf import DictConfig
from transformers import Trainer, TrainerState, TrainingArguments

from vqa.data.schema import TrainingSplits, column
from vqa.evaluation.answer_coverage import coverage
from vqa.evaluation.answering import Fitted
from vqa.instantiate import instantiate
from vqa.model.loading import model_card
from vqa.model.modeling import VQAModel
from vqa.model.processing import VQACollator, VQAProcessor
from vqa.retrieval.attach import Retrieval
from vqa.training.checkpoints import replace_folder
from vqa.training.distributed import ranks_agree_on_parameters, sharded_parameters
from vqa.training.feature_cache import FeatureLookup, build_lookups
from vqa.training.objectives import Objective
from vqa.training.resume import training_finished
from vqa.training.stopping import ACCURACY_KEY, StopAtAccuracy
from vqa.training.trainer import VQATrainer, load_checkpoint_weights, with_image_paths

logger = logging.getLogger(__name__)


def fit_model(
    cfg: DictConfig,
    splits: TrainingSplits,
    args: TrainingArguments,
    objective: Objective,
    trained: tuple[VQAModel, VQAProcessor] | None = None,
    checkpoint: Path | None = None,
    retrieval: Retrieval | None = None,
) -> Fitted:
    """Build the model (or take `trained`, from `init_from`) and its Trainer, then train from scratch or from the
    resumed `checkpoint`; a resumed run whose training is over takes its final weights instead.

    With `retrieval` (`vqa.retrieval.attach`), the splits carry each question's passage ids and the collator turns
    them into passage inputs; a tokenizer trained by the builder also learns the passages' words.
    """
    passages = retrieval.passages if retrieval is not None else None
    if trained is not None:  # init_from (vqa.training.init_from)
        model, processor = trained
    elif passages:
        model, processor = instantiate(cfg.model, train_split=splits["train"], passage_texts=list(passages.values()))
    else:
        model, processor = instantiate(cfg.model, train_split=splits["train"])
    logger.info("parameters:\n%s", model.parameter_table())
    questions_cut = {name: count_cut_questions(processor, splits[name], name) for name in splits_in_use(cfg)}
    classifier = classifier_report(model, splits, splits_in_use(cfg))
    # The batch keys the objective needs beyond the model inputs (soft targets, question and answer texts).
    collator = VQACollator(
        processor,
        inputs=model.config.inputs,
        batch_extras=getattr(objective, "batch_extras", None),
        passages=passages,
        max_passage_length=cfg.retrieval.max_passage_length if passages else 64,
    )
    trainer = VQATrainer(
        model=model,
        args=args,
        train_dataset=with_image_paths(splits["train"]),
        eval_dataset=with_image_paths(splits[cfg.eval_split]),
        data_collator=collator,
        processor=processor,
        objective=objective,
        group_by_image=cfg.trainer.group_by_image,
        questions_per_image=cfg.trainer.questions_per_image,
        num_beams=cfg.trainer.num_beams,
        learning_rate_scales=cfg.trainer.get("learning_rate_scales"),
        benchmark=splits.benchmark,
        callbacks=stopping_callbacks(cfg),
    )
    # After the Trainer has put the model on its device, so that the encoders run there once.
    collator.features = cached_features(cfg, trainer.model, processor, splits)
    trained_now = checkpoint is None or not training_finished(checkpoint, trainer)
    train_metrics: dict[str, float] = {}
    if trained_now:
        train_metrics = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None).metrics
        # trainer_state.json in the run folder: every logged loss and evaluation, unrounded (also without checkpoints).
        trainer.save_state()
    else:
        load_checkpoint_weights(trainer.model, final_weights(checkpoint, trainer.args.load_best_model_at_end))
    sharded = sharded_parameters(trainer.model)
    # A collective under DDP: every rank takes part. Under FSDP each rank holds its own shard of a weight, and
    # comparing them across ranks would say nothing.
    in_sync = None if sharded else ranks_agree_on_parameters(trainer.model)
    started_at = global_step(checkpoint) if checkpoint is not None else 0
    return Fitted(
        answer=trainer.answer_split,
        logged_validation=logged_accuracy_of_final_weights(trainer, started_at) if trained_now else None,
        train_metrics=train_metrics,
        world_size=trainer.args.world_size,
        card={
            "model": model_card(model.config),  # what trained, whatever the config said
            "parameters_identical_across_ranks": in_sync,
            "sharded_parameters": sharded,
            "feature_cache": {
                component: {"bytes": lookup.size_bytes, "folders": [str(store.folder) for store in lookup.stores]}
                for component, lookup in (collator.features or {}).items()
            },
        },
        # Read when the run folder is written, so that images undecodable in the final evaluation count too.
        metrics=lambda: {
            "data": {
                "dropped": splits.dropped,
                "questions_cut": questions_cut,
                "undecodable_images": trainer.undecodable_images,
            },
            **({"classifier": classifier} if classifier else {}),
            **({"retrieval": retrieval.report} if retrieval is not None else {}),
        },
        # A sharded model would wait for the other ranks in its forward: the report then loads the checkpoint.
        report_parts={"model": None if trainer.is_fsdp_enabled else trainer.model, "processor": processor},
        write_checkpoint=checkpoint_writer(trainer, processor),
        writes_run_folder=trainer.is_world_process_zero(),
    )


def classifier_report(model: VQAModel, splits: TrainingSplits, names: list[str]) -> dict[str, Any] | None:
    """For the classifier head: its number of answers and, per split read, how much of the split they cover
    (`vqa.evaluation.answer_coverage.coverage`: the covered share and the accuracy ceiling); None for the generator."""
    if model.answer_classifier is None:
        return None
    vocabulary = model.config.answer_vocabulary
    report = {"answers": len(vocabulary), "coverage": {name: coverage(vocabulary, splits[name]) for name in names}}
    for name, covered in report["coverage"].items():
        if covered is not None:
            logger.info(
                "classifier: %d answers cover %s%% of the %s questions; accuracy ceiling %s",
                len(vocabulary),
                covered["covered"],
                name,
                covered["accuracy_ceiling"],
            )
    return report


def stopping_callbacks(cfg: DictConfig) -> list[StopAtAccuracy]:
    """`trainer.stop_at`: a callback that ends training once validation holds the target; none without a target."""
    stop_at = cfg.trainer.get("stop_at")
    if stop_at is None or stop_at.get("vqa_accuracy") is None:
        return []
    return [StopAtAccuracy(stop_at.vqa_accuracy, stop_at.get("evaluations", 1))]


def checkpoint_writer(trainer: Trainer, processor: VQAProcessor) -> Callable[[Path], None]:
    """A function that writes the final model and processor into a folder (`checkpoint/`), to be called by every
    rank after the final evaluation.

    Under FSDP it first gathers the whole weights from every rank's shard (a collective: every rank must call it);
    rank 0 alone then writes them (trainer.save_model would gather again, waiting for ranks that have moved on).
    Written from the accelerate and transformers sources; not yet run on GPUs.
    """

    def gather_then_write(folder: Path) -> None:
        full_weights = trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
        if not trainer.is_world_process_zero():
            return

        def write_checkpoint(staged: Path) -> None:
            if full_weights is None:
                trainer.save_model(str(staged))
            else:
                trainer.model.save_pretrained(staged, state_dict=full_weights)
            processor.save_pretrained(staged)

        replace_folder(folder, write_checkpoint)

    return gather_then_write


def cached_features(
    cfg: DictConfig, model: torch.nn.Module, processor: VQAProcessor, splits: dict[str, Dataset]
) -> dict[str, FeatureLookup] | None:
    """Feature stores for the frozen encoders over the splits the run reads, when `feature_cache.enabled`; None when
    nothing is cached (no encoder that runs is frozen)."""
    if not cfg.feature_cache.enabled:
        return None
    lookups = build_lookups(
        model, processor, [splits[name] for name in splits_in_use(cfg)], cfg.feature_cache.dir, cfg.feature_cache.dtype
    )
    for component, lookup in lookups.items():
        logger.info("feature cache: %s, %.1f MiB in %s", component, lookup.size_bytes / 2**20, cfg.feature_cache.dir)
    return lookups or None


def splits_in_use(cfg: DictConfig) -> list[str]:
    """The splits a run reads, each once: train, the eval split, and the final split when it is evaluated."""
    return list(dict.fromkeys(["train", cfg.eval_split, *([cfg.final_split] if cfg.final_evaluation else [])]))


def count_cut_questions(processor: VQAProcessor, split: Dataset, name: str = "") -> int:
    """How many distinct questions of `split` are longer than the processor's question length (and get cut); a
    warning says so when there are any."""
    distinct = list(set(column(split, "question")))
    lengths = processor.question_tokenizer(distinct, add_special_tokens=True, return_length=True)["length"]
    count = sum(length > processor.max_question_length for length in lengths)
    if count and name:
        logger.warning(
            "%s split: %d distinct questions are longer than %d tokens and are cut to it (model.max_question_length)",
            name,
            count,
            processor.max_question_length,
        )
    return count


def global_step(checkpoint: Path) -> int:
    """The optimizer step a Trainer checkpoint was written at."""
    return TrainerState.load_from_json(str(checkpoint / "trainer_state.json")).global_step


def final_weights(checkpoint: Path, load_best_model_at_end: bool) -> Path:
    """The checkpoint whose weights a finished run ends with: the best one when the run selects it, else the last."""
    best = TrainerState.load_from_json(str(checkpoint / "trainer_state.json")).best_model_checkpoint
    if load_best_model_at_end and best and Path(best).is_dir():
        return Path(best)
    return checkpoint


def logged_accuracy_of_final_weights(trainer: Trainer, after_step: int = 0) -> float | None:
    """The eval split's VQA accuracy that the Trainer logged, in this process, for the weights it ended with; None
    when no such evaluation was logged (evaluation off, its last one before the last step, or one logged before a
    resume, possibly with other settings).

    With `load_best_model_at_end` the run ends with the best checkpoint's weights: its evaluation is the one at that
    checkpoint's step (`best_global_step`). Otherwise it is an evaluation at the last step.

    Args:
        after_step: the step a resumed run started from; evaluations at or before it are not reused.
    """
    state = trainer.state
    evaluations = {entry["step"]: entry[ACCURACY_KEY] for entry in state.log_history if ACCURACY_KEY in entry}
    step = state.best_global_step if trainer.args.load_best_model_at_end else state.global_step
    return evaluations.get(step) if step and step > after_step else None
