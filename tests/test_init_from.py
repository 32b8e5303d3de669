"""`init_from` records what trains: model settings apply to the loaded model (`model.freeze`) or are refused in one
line, and config.yaml's `model` node is the checkpoint's own (vqa/training/init_from.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from tests.helpers.objective_setup import small_splits, tiny_setup
from vqa.config_checks import validate_config
from vqa.errors import ConfigError
from vqa.model.loading import model_card
from vqa.training.init_from import FROM_CHECKPOINT, model_changes, start_from_trained

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder whose checkpoint/ holds a tiny model (fusion tokens, nothing frozen) and its processor."""
    run_dir = tmp_path_factory.mktemp("run")
    model, processor = tiny_setup(small_splits(tmp_path_factory.mktemp("cache"), max_questions=32)["train"])
    model.save_pretrained(run_dir / "checkpoint")
    processor.save_pretrained(run_dir / "checkpoint")
    return run_dir


def command_line(run_dir: Path, *overrides: str) -> tuple[DictConfig, dict[str, Any], list[str]]:
    """The config train.py composes for these overrides, the model settings they change (as vqa.run.prepare finds
    them: against the config composed with init_from alone), and the overrides as Hydra records them."""
    arguments = [f"init_from={run_dir}", *overrides]
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=arguments)
        default = compose(config_name="config", overrides=arguments[:1])
    return cfg, model_changes(cfg.model, default.model), arguments


@pytest.mark.parametrize(
    ("override", "refusal"),
    [
        (
            "model.fusion=pooled",
            "model.fusion: 'pooled' from the command line ({cli}), but init_from={run} trains that "
            "checkpoint's model as it is (its model.fusion is 'tokens'); only model.freeze can change with init_from",
        ),
        (
            "model.cross_attention_gate=true",
            "model.cross_attention_gate: True from the command line ({cli}), but "
            "init_from={run} trains that checkpoint's model as it is (its model.cross_attention_gate is False)",
        ),
        # Through a group: variant=lora_decoder sets model.lora.targets (and freezes nothing it could apply).
        (
            "variant=lora_decoder",
            "model.lora.targets: ['decoder'] from the command line ({cli}), but init_from={run} "
            "trains that checkpoint's model as it is (its model.lora is None)",
        ),
        (
            "model.hidden_size=64",
            "model.hidden_size: 64 from the command line ({cli}), but init_from={run} trains that "
            "checkpoint's model as it is (model.hidden_size is a setting for building a new model)",
        ),
        (
            "model=base",
            "model._target_: 'vqa.model.builders.pretrained_model_and_processor' from the command line "
            "({cli}), but init_from={run} trains that checkpoint's model as it is (model._target_ is a setting for "
            "building a new model)",
        ),
    ],
)
def test_a_model_setting_that_would_change_the_checkpoints_model_is_refused_in_one_line(
    finished_run: Path, override: str, refusal: str
) -> None:
    cfg, changes, overrides = command_line(finished_run, override)
    with pytest.raises(ConfigError) as raised:
        start_from_trained(cfg, changes, overrides)
    assert str(raised.value).startswith(refusal.format(run=finished_run, cli=override)), str(raised.value)
    assert "\n" not in str(raised.value)


def test_settings_equal_to_the_default_or_the_checkpoints_own_are_no_change(finished_run: Path) -> None:
    cfg, changes, overrides = command_line(finished_run, "model.lora.targets=[]", "debug=overfit", "objective=rl")
    assert changes == {}
    (model, _), _ = start_from_trained(cfg, changes, overrides)
    assert model.config.lora is None


def test_model_freeze_applies_and_config_yaml_records_the_checkpoints_model(finished_run: Path) -> None:
    cfg, changes, overrides = command_line(
        finished_run, "model.freeze=encoders", "model.fusion=tokens"
    )  # the same fusion
    (model, _), cfg = start_from_trained(cfg, changes, overrides)
    assert model.config.freeze == "encoders"
    trainable = {name.split(".")[0] for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert "text_encoder" not in trainable and "image_encoder" not in trainable and "decoder" in trainable
    recorded = OmegaConf.to_container(OmegaConf.create(OmegaConf.to_yaml(cfg, resolve=True)).model)
    assert recorded == {FROM_CHECKPOINT: str(finished_run / "checkpoint"), **model_card(model.config)}
    assert recorded["freeze"] == "encoders" and recorded["decoder"]["family"] == "gpt2"

    # A resumed run reads its recorded model node back (no command-line overrides) and trains the same model.
    resumed = OmegaConf.create(OmegaConf.to_yaml(cfg, resolve=True))
    validate_config(resumed)  # the recorded node builds nothing, so it passes the model checks
    (model_again, _), _ = start_from_trained(resumed, None)
    assert model_again.config.freeze == "encoders"
    assert [p.requires_grad for p in model_again.parameters()] == [p.requires_grad for p in model.parameters()]


def test_without_model_settings_the_checkpoints_own_are_kept(finished_run: Path) -> None:
    cfg, changes, overrides = command_line(finished_run, "objective=rl")
    (model, _), cfg = start_from_trained(cfg, changes, overrides)
    assert model.config.freeze == "nothing" and cfg.model.fusion == "tokens"
    assert all(parameter.requires_grad for parameter in model.parameters())


def test_an_unknown_freeze_name_is_one_line(finished_run: Path) -> None:
    cfg, changes, overrides = command_line(finished_run, "model.freeze=[wheels]")
    with pytest.raises(ConfigError, match=r"^model\.freeze: unknown component 'wheels'"):
        start_from_trained(cfg, changes, overrides)
