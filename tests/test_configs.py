"""Hydra composition: every preset composes and validates; wrong settings fail early with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import DictConfig

from vqa.config_checks import validate_config
from vqa.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"


def composed(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


# What a GPU preset sets that a host without CUDA refuses, in the order the checks run, with the refusal.
GPU_ONLY_ARGUMENTS = {
    "fsdp": r"trainer\.args\.fsdp: FSDP shards only across GPUs",
    "tf32": r"trainer\.args\.tf32: true needs an NVIDIA GPU",
}


def validated_on_this_host(*overrides: str) -> DictConfig:
    """The composed config, validated; a GPU preset on a host without CUDA must first fail in one line for each
    GPU-only setting, then pass without them."""
    cfg = composed(*overrides)
    turned_off: list[str] = []
    for name, refusal in GPU_ONLY_ARGUMENTS.items():
        if cfg.trainer.args.get(name) and not torch.cuda.is_available():
            with pytest.raises(ConfigError, match=refusal):
                validate_config(cfg)
            turned_off.append(f"trainer.args.{name}=null")
            cfg = composed(*overrides, *turned_off)
    validate_config(cfg)
    return cfg


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


def test_default_is_tiny_easy_vqa_on_cpu() -> None:
    cfg = composed()
    assert cfg.model._target_ == "vqa.model.builders.tiny_model_and_processor"
    assert cfg.data._target_ == "vqa.data.easy_vqa.training_splits"
    assert list(cfg.logger.report_to) == []
    validate_config(cfg)


@pytest.mark.parametrize("experiment", sorted(set(options("experiment")) - {"baseline_ladder", "variants"}))
def test_every_experiment_composes_and_validates(experiment: str) -> None:
    cfg = validated_on_this_host(f"experiment={experiment}", "data.root=/data/vqa")
    assert cfg.model._target_ == "vqa.model.builders.pretrained_model_and_processor"


def test_baselines_are_one_override_and_the_ladder_sweeps_them() -> None:
    assert composed("baseline=prior").prior.by == "question_type"
    assert composed("baseline=global_prior").prior.by == "global"
    assert composed("baseline=question_only").model.inputs == "question_only"
    assert composed().prior is None and composed().model.inputs == "both" and composed().shuffled_image_check
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=["experiment=baseline_ladder"], return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    rungs = cfg.hydra.sweeper.params["baseline"].split(",")
    assert rungs == ["global_prior", "prior", "question_only", "image_only", "none"]
    assert set(rungs) == set(options("baseline"))


def test_the_variants_experiment_sweeps_every_variant_and_each_is_one_override() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=["experiment=variants"], return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    variants = cfg.hydra.sweeper.params["variant"].split(",")
    assert set(variants) == set(options("variant")) and variants[0] == "tokens"
    assert composed("variant=tokens").model == composed().model  # the default, named
    assert composed("variant=resampler8").model.resampler.latents == 8
    assert composed("variant=gated").model.cross_attention_gate is True
    lora = composed("variant=lora_decoder").model
    assert list(lora.lora.targets) == ["decoder"] and lora.lora.r == 8 and lora.freeze == "encoders"
    for variant in variants:
        validate_config(composed(f"variant={variant}"))


def test_book_experiment_is_the_textbook_setup() -> None:
    cfg = composed("experiment=book", "data.root=/data/vqa")
    assert cfg.model.fusion == "pooled" and cfg.model.freeze == "nothing"
    assert cfg.trainer.args.learning_rate == 2e-5 and cfg.trainer.args.lr_scheduler_type == "cosine"
    assert cfg.trainer.args.per_device_train_batch_size * cfg.trainer.args.gradient_accumulation_steps == 64
    assert cfg.trainer.args.num_train_epochs == 3 and cfg.data.min_agreement == 9


@pytest.mark.parametrize(
    ("group", "option"),
    [
        (group, option)
        for group in (
            "model",
            "data",
            "retrieval",
            "trainer",
            "distributed",
            "logger",
            "debug",
            "hparams_search",
            "baseline",
        )
        for option in options(group)
    ],
)
def test_every_group_option_composes(group: str, option: str) -> None:
    # Every official release is read from a folder; easy-VQA and the task built on it come with the package.
    needs_root = group == "data" and option not in ("easy_vqa", "easy_vqa_facts")
    validated_on_this_host(f"{group}={option}", "data.root=/data/vqa" if needs_root else "seed=0")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.freeze=encoder"], "model.freeze: unknown name 'encoder'"),
        (["model.freeze=[text_encoder,vision]"], "model.freeze: unknown component 'vision'"),
        (["model.fusion=concat"], "model.fusion: got 'concat', expected one of tokens, pooled"),
        (["model.inputs=text"], "model.inputs: got 'text', expected one of both, question_only, image_only"),
        (["baseline=prior", "prior.by=answer_type"], "prior.by: got 'answer_type', expected one of question_type"),
        (["data=vqa_v2"], "data.root: not set"),
        (["trainer.args.per_device_train_batch_size=0"], "per_device_train_batch_size: got 0, expected a positive"),
        (["trainer.args.per_device_eval_batch_size=-4"], "per_device_eval_batch_size: got -4"),
        (["trainer.args.learning_rate=0"], "learning_rate: got 0"),
        (["eval_split=dev"], "eval_split: got 'dev'"),
        (["+model.cross_atention_gate=true"], "model.cross_atention_gate: not a setting of the model builder"),
        (["eval_split=test"], "eval_split: got 'test'; model selection reads the validation split only"),
        (["feature_cache.dtype=int8"], "feature_cache.dtype: got 'int8', expected float16 or float32"),
    ],
)
def test_wrong_settings_fail_with_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate_config(composed(*overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("distributed", ["ddp", "fsdp"])
def test_a_distributed_choice_keeps_the_experiments_gpu_recipe(distributed: str) -> None:
    """`distributed=` is orthogonal to the device preset: the experiment's bf16, TF32, loader and learning-rate
    settings stay, and full determinism (CUDA_LAUNCH_BLOCKING=1 on a GPU) stays off."""
    alone = composed("experiment=vqa_v2_base", "data.root=/data/vqa")
    cfg = composed("experiment=vqa_v2_base", f"distributed={distributed}", "data.root=/data/vqa")
    args = cfg.trainer.args
    assert args.bf16 is True and args.tf32 is True and args.full_determinism is False
    assert args.dataloader_num_workers == 8 and args.ddp_find_unused_parameters is False
    assert {
        key: value for key, value in args.items() if key not in ("fsdp", "fsdp_config", "ddp_find_unused_parameters")
    } == {key: value for key, value in alone.trainer.args.items() if key != "ddp_find_unused_parameters"}
    assert bool(args.get("fsdp")) == (distributed == "fsdp")


def test_hparams_search_is_a_multirun_grid() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=["hparams_search=lr_grid"], return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.hydra.sweeper.params["trainer.args.learning_rate"] == "1.0e-4,3.0e-4,5.0e-4"


def test_unknown_experiment_is_a_composition_error() -> None:
    with pytest.raises(MissingConfigException, match="experiment/imagenet"):
        composed("experiment=imagenet")
