"""Every option is checked before anything is built: the objective's and its reward's options against their targets'
signatures and annotations, the model's (LoRA, resampler, gates, dropout) by type, range and whether they would have
any effect, encoder families from their configs; and what a reward returns is checked at every step."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from transformers import SwinConfig, T5Config

from tests.helpers.objective_setup import small_splits, tiny_setup, training_rows
from tests.test_configs import composed
from vqa.config_checks import validate_config
from vqa.errors import CheckpointError, ConfigError, DivergenceError
from vqa.model.configuration import VQAConfig
from vqa.model.encoders import load_encoder
from vqa.model.processing import VQACollator
from vqa.training.policy_gradient import PolicyGradient
from vqa.training.rewards import PipelineReward

RL = "objective=rl"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # The objective: types, ranges, unknown and missing keys, from PolicyGradient's own signature.
        ([RL, "objective.samples=two"], "objective.samples: got 'two' (str), expected int"),
        ([RL, "objective.temperature=hot"], "objective.temperature: got 'hot' (str), expected float"),
        ([RL, "objective.temperature=0"], "objective.temperature: got 0, expected a number > 0"),
        ([RL, "objective.top_p=1.5"], "objective.top_p: got 1.5, expected a number in (0, 1]"),
        ([RL, "objective.top_k=-1"], "objective.top_k: got -1, expected an integer >= 0"),
        ([RL, "objective.beta=-0.1"], "objective.beta: got -0.1, expected a number >= 0"),
        ([RL, "objective.scale_rewards=true"], "objective.scale_rewards: got True (bool), expected one of none"),
        ([RL, "objective.loss_type=ppo"], "objective.loss_type: got 'ppo', expected one of dapo, grpo, dr_grpo"),
        ([RL, "objective.samples=1"], "objective.samples: got 1, expected an integer >= 2 with baseline group"),
        (
            [RL, "+objective.sample=2"],
            "objective.sample: not an option of vqa.training.policy_gradient.PolicyGradient; did you mean samples? "
            "accepted: reward, samples, temperature, top_k, top_p, baseline, scale_rewards, beta, loss_type",
        ),
        (
            ["+objective.samples=4"],
            "objective.samples: not an option of vqa.training.objectives.AnswerCrossEntropy; "
            "accepted: answer_type_weights",
        ),
        # The reward: its own keys, what it needs, and the keywords every reward is called with.
        (
            [RL, "+objective.reward.scale=2"],
            "objective.reward.scale: not an option of vqa.training.rewards.vqa_accuracy_reward; accepted: questions, "
            "images, answers, human_answers",
        ),
        (
            [RL, "objective.reward._target_=vqa.training.rewards.PipelineReward", "~objective.reward._partial_"],
            "objective.reward.model: required by vqa.training.rewards.PipelineReward and not set",
        ),
        (
            [
                RL,
                "objective.reward._target_=vqa.training.rewards.PipelineReward",
                "~objective.reward._partial_",
                "+objective.reward.model=x",
                "+objective.reward.batch_size=0",
            ],
            "objective.reward.batch_size: got 0, expected a positive integer",
        ),
        (
            [RL, "objective.reward._target_=vqa.evaluation.metrics.question_accuracy"],
            "objective.reward: vqa.evaluation.metrics.question_accuracy does not take questions, images, answers; a "
            "vqa.training.rewards.Reward is called with the keyword arguments questions, images, answers, "
            "human_answers",
        ),
        ([RL, "objective.reward._target_=vqa.training.rewards.nope"], "objective.reward._target_: cannot be imported"),
        # The model: types and ranges from the builder's and VQAConfig's annotations.
        (["model.cross_attention_gate=maybe"], "model.cross_attention_gate: got 'maybe' (str), expected bool"),
        (["model.dropout=1.5"], "model.dropout: got 1.5, expected a number in [0, 1)"),
        (["model=base", "model.dropout=-0.1"], "model.dropout: got -0.1, expected a number in [0, 1)"),
        (["model.hidden_size=0"], "model.hidden_size: got 0, expected a positive integer"),
        (["model.max_answer_length=eight"], "model.max_answer_length: got 'eight' (str), expected int"),
        (["model.lora.targets=[decoder]", "model.lora.alpha=0"], "model.lora.alpha: got 0, expected a number > 0"),
        (["model.lora.targets=[decoder]", "model.lora.r=-2"], "model.lora.r: got -2, expected a positive integer"),
        (["model.lora.targets=[decoder]", "model.lora.dropout=1"], "model.lora.dropout: got 1, expected a number in"),
        (["model.lora.targets=[decoder]", "model.lora.dropout=high"], "model.lora.dropout: got 'high' (str)"),
        (["model.fusion=resampler", "model.resampler.heads=two"], "model.resampler.heads: got 'two' (str), expected"),
        (
            ["model.fusion=resampler", "model.resampler.heads=3"],
            "model.resampler.heads: got 3, which does not divide the decoder width 128",
        ),
        # Settings the model would ignore, or that would defeat themselves.
        (
            ["model.resampler.latents=16"],
            "model.resampler.latents: set to 16, but fusion 'tokens' has no resampler, so it would have no effect",
        ),
        (
            ["model.lora.r=16"],
            "model.lora.r: set to 16, but lora.targets is empty (no adapters), so it would have no effect",
        ),
        (
            ["model.cross_attention_gate=true", "model.freeze=[cross_attention]"],
            "model.cross_attention_gate: true, but model.freeze freezes the cross_attention component",
        ),
        (
            ["model.cross_attention_gate=true", "model.lora.targets=[cross_attention]"],
            "model.cross_attention_gate: true, but LoRA (model.lora.targets) freezes the cross_attention component",
        ),
    ],
)
def test_wrong_options_are_one_line_before_anything_is_built(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate_config(composed(*overrides))
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "overrides",
    [
        [RL],
        [RL, "objective.baseline=greedy", "objective.samples=1", "objective.scale_rewards=none"],
        [RL, "objective.reward._target_=tests.test_option_checks.length_reward"],
        ["objective=soft"],
        ["model.fusion=resampler", "model.resampler.latents=16"],
        ["model.lora.targets=[decoder]", "model.lora.alpha=32", "model.lora.dropout=0.1"],
        ["model.cross_attention_gate=true", "model.freeze=encoders"],
        ["model=base", "model.dropout=0.2"],
    ],
)
def test_right_options_pass(overrides: list[str]) -> None:
    validate_config(composed(*overrides))


def test_vqa_config_checks_the_same_types_in_code() -> None:
    with pytest.raises(ValueError, match=r"^VQAConfig\.cross_attention_gate: got 'maybe' \(str\), expected bool$"):
        VQAConfig.tiny(cross_attention_gate="maybe")
    with pytest.raises(ValueError, match=r"^VQAConfig\.lora\.alpha: got 0, expected a number > 0$"):
        VQAConfig.tiny(lora={"targets": ["decoder"], "alpha": 0})
    with pytest.raises(ConfigError, match=r"^objective\.temperature: got 0, expected a number > 0$"):
        PolicyGradient(temperature=0)


@pytest.fixture(scope="module")
def foreign_encoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoint folders (config.json; no weights are read before the family is refused) of a T5, an
    encoder-decoder, and a Swin, whose tokens are a merged grid: tiny random-init configs."""
    root = tmp_path_factory.mktemp("foreign")
    configs = {
        "t5": T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2),
        "swin": SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=2),
    }
    for name, config in configs.items():
        config.save_pretrained(root / name)
    return {name: root / name for name in configs}


def test_encoder_families_are_refused_from_their_folders_before_the_data(foreign_encoders: dict[str, Path]) -> None:
    t5, swin = foreign_encoders["t5"], foreign_encoders["swin"]
    with pytest.raises(ConfigError, match=r"^model\.text_encoder \(.*t5\): a 't5' model is an encoder-decoder"):
        validate_config(composed("model=base", f"model.text_encoder={t5}"))
    expected = r"^model\.image_encoder \(.*swin\): a 'swin' model returns 16 states for a 32x32 image .* merged"
    with pytest.raises(ConfigError, match=expected):
        validate_config(composed("model=base", f"model.image_encoder={swin}"))
    # The model build refuses them the same way (a hub name is read only there).
    with pytest.raises(ConfigError, match=expected):
        load_encoder(swin, "image")
    with pytest.raises(
        CheckpointError, match=r"^model\.image_encoder \(/no/such/vit\): folder /no/such/vit does not exist"
    ):
        validate_config(composed("model=base", "model.image_encoder=/no/such/vit"))
    with pytest.raises(CheckpointError, match=r"^objective\.reward\.model: folder /no/such/classifier does not exist"):
        PipelineReward(model="/no/such/classifier")


def length_reward(*, questions: Any, images: Any, answers: list[str], human_answers: Any) -> list[float]:
    """Differs between answers whatever the model: each answer's length."""
    return [float(len(answer)) for answer in answers]


def returning(value: Any) -> Any:
    """A reward function that returns `value` whatever it is asked."""

    def reward(*, questions: Any, images: Any, answers: list[str], human_answers: Any) -> Any:
        return value

    return reward


TEXTS = {"questions": ["what shape?"] * 2, "image_paths": [None, None], "human_answers": [["circle"], ["red"]]}
EXAMPLES, ANSWERS = [0, 0, 1, 1], ["circle", "square", "red", "blue"]


@pytest.mark.parametrize(
    ("returned", "error", "message"),
    [
        (
            "0.5",
            ConfigError,
            "returned '0.5' (str); expected a list of numbers or a 1-D tensor, one score per answer (4)",
        ),
        ({"score": 1.0}, ConfigError, "returned {'score': 1.0} (dict); expected a list of numbers"),
        (None, ConfigError, "returned None (NoneType); expected"),
        ([1.0, 0.0, "1", 0.0], ConfigError, "returned a list holding '1' (str); expected"),
        ([1.0, 0.0], ConfigError, "returned 2 scores for 4 answers; expected"),
        (torch.ones(2, 2), ConfigError, "returned a Tensor of shape (2, 2); expected"),
        (np.array(["a"] * 4), ConfigError, "returned a ndarray of <U1; expected"),
        ([1.0, math.nan, 0.0, math.nan], DivergenceError, "2 of 4 scores are not finite (nan)"),
        (torch.tensor([1.0, math.inf, -math.inf, 0.0]), DivergenceError, "2 of 4 scores are not finite (inf, -inf)"),
    ],
)
def test_a_rewards_wrong_return_is_one_line_naming_it(returned: Any, error: type, message: str) -> None:
    objective = PolicyGradient(reward=returning(returned))
    with pytest.raises(error) as raised:
        objective.score(TEXTS, EXAMPLES, ANSWERS, torch.device("cpu"))
    expected = f"reward tests.test_option_checks.returning.<locals>.reward: {message}"
    assert str(raised.value).startswith(expected), str(raised.value)
    assert "\n" not in str(raised.value)


def nan_scores(*, questions: Any, images: Any, answers: list[str], human_answers: Any) -> list[float]:
    return [math.nan] * len(answers)


def test_a_reward_from_the_config_is_named_by_its_function() -> None:
    """Hydra gives a `_partial_` function as a functools.partial: the line names the function itself."""
    node = {"_target_": "tests.test_option_checks.nan_scores", "_partial_": True}
    config = {"_target_": "vqa.training.policy_gradient.PolicyGradient", "reward": node}
    objective = instantiate(OmegaConf.create(config))
    expected = r"^reward tests\.test_option_checks\.nan_scores: 4 of 4 scores are not finite \(nan\)$"
    with pytest.raises(DivergenceError, match=expected):
        objective.score(TEXTS, EXAMPLES, ANSWERS, torch.device("cpu"))


def test_good_returns_become_a_float_tensor() -> None:
    for returned in ([1, 0, True, 0.5], np.array([1.0, 0.0, 1.0, 0.5]), torch.tensor([1, 0, 1, 0])):
        scores = PolicyGradient(reward=returning(returned)).score(TEXTS, EXAMPLES, ANSWERS, torch.device("cpu"))
        assert scores.dtype == torch.float32 and scores.shape == (4,)


def test_rl_from_a_random_model_warns_once_that_the_policy_gets_no_gradient(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A random model's sampled answers all score 0 against the VQA reward: every advantage is 0."""
    splits = small_splits(tmp_path, max_questions=16)
    model, processor = tiny_setup(splits["train"])
    rows = training_rows(splits["train"], 1)
    no_signal, signal = PolicyGradient(samples=2), PolicyGradient(reward=length_reward, samples=2, temperature=2.0)
    with caplog.at_level(logging.WARNING, logger="vqa.training.policy_gradient"):
        for objective in (no_signal, signal):
            objective.bind(model, processor)
            objective(model, VQACollator(processor, batch_extras=objective.batch_extras)(rows))
        assert not caplog.records  # not before the first training log (or NO_SIGNAL_WARNING_STEPS steps)
        for objective in (no_signal, no_signal, signal):  # the trainer's logs
            objective.log_values()
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1, warnings  # once, and none for answers of different lengths (a signal)
    assert "no learning signal in the first 1 steps" in warnings[0] and "mean reward 0" in warnings[0]
    assert "policy gets no gradient" in warnings[0] and "init_from=" in warnings[0]
