"""objective=rl: advantages, the REINFORCE gradient, a rising reward, KL to the starting model, learned rewards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from transformers import BertConfig, BertForSequenceClassification

from tests.helpers.objective_setup import small_splits, tiny_setup, training_rows
from vqa.errors import ConfigError
from vqa.model.encoder_inputs import EncoderInputs
from vqa.model.processing import VQACollator
from vqa.training.objectives import AnswerCrossEntropy
from vqa.training.policy_gradient import PolicyGradient, advantages_from_rewards
from vqa.training.rewards import PipelineReward, vqa_accuracy_reward

CONF = Path(__file__).resolve().parents[1] / "conf"


def answer_length_reward(*, questions: Any, images: Any, answers: list[str], human_answers: Any) -> list[float]:
    """A reward that differs between samples whatever the model: the answer's length in characters."""
    return [float(len(answer)) for answer in answers]


def test_group_advantages_subtract_the_mean_and_may_divide_by_the_spread() -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.3, 0.3, 0.3, 0.3]])
    centred = advantages_from_rewards(rewards, scale="none")
    assert torch.equal(centred, torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.0, 0.0, 0.0, 0.0]]))
    scaled = advantages_from_rewards(rewards, scale="group")
    spread = rewards[0].std()  # unbiased, as TRL
    torch.testing.assert_close(scaled[0], centred[0] / (spread + 1e-4))
    assert torch.equal(scaled[1], torch.zeros(4))  # equal rewards: no signal, no division by zero
    greedy = advantages_from_rewards(rewards, baseline_rewards=torch.tensor([1.0, 0.0]), scale="none")
    torch.testing.assert_close(greedy, torch.tensor([[0.0, -1.0, -1.0, 0.0], [0.3, 0.3, 0.3, 0.3]]))


def test_options_are_checked_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"objective\.baseline: got 'mean'"):
        PolicyGradient(baseline="mean")
    with pytest.raises(ConfigError, match=r"objective\.samples: got 1"):
        PolicyGradient(samples=1)
    PolicyGradient(samples=1, baseline="greedy", scale_rewards="none")  # SCST with one sample is allowed


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return small_splits(tmp_path_factory.mktemp("cache"))


def test_the_gradient_is_the_hand_computed_reinforce_gradient(splits: Any) -> None:
    model, processor = tiny_setup(splits["train"])
    objective = PolicyGradient(
        reward=answer_length_reward, samples=3, temperature=1.5, top_k=0, scale_rewards="none", loss_type="dapo"
    )
    objective.bind(model, processor)
    batch = VQACollator(processor, batch_extras=objective.batch_extras)(training_rows(splits["train"], 2))
    torch.manual_seed(0)
    loss, sampled = objective(model, batch)
    assert sampled.labels.shape[0] == 6 and sampled.advantages.abs().sum() > 0
    loss.backward()
    objective_gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    # REINFORCE by hand: -(1 / all answer tokens) * sum_i A_i * grad log pi(answer_i), one answer at a time.
    total_tokens = (sampled.labels != -100).sum()
    inputs = EncoderInputs.pick(batch)
    for index in range(6):
        labels = sampled.labels[index : index + 1]
        one = inputs.select_examples(torch.tensor([index // 3]))
        decoder_input_ids, decoder_attention_mask = model.decoder_inputs_from_labels(labels)
        logits = model(
            **one.as_kwargs(), decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask
        ).logits
        log_probs = F.log_softmax(logits / 1.5, dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        log_likelihood = (log_probs * (labels != -100)).sum()
        (-sampled.advantages[index] * log_likelihood / total_tokens).backward()
    assert objective_gradients.keys() == {name for name, p in model.named_parameters() if p.grad is not None}
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            torch.testing.assert_close(objective_gradients[name], parameter.grad, rtol=1e-4, atol=1e-7, msg=name)
    model.zero_grad()


def test_scst_advantage_is_the_reward_minus_the_greedy_answers_reward(splits: Any) -> None:
    model, processor = tiny_setup(splits["train"])
    objective = PolicyGradient(reward=answer_length_reward, samples=2, baseline="greedy", scale_rewards="none")
    objective.bind(model, processor)
    batch = VQACollator(processor, batch_extras=objective.batch_extras)(training_rows(splits["train"], 3))
    _, sampled = objective(model, batch)
    greedy = processor.decode_answers(model.generate(**EncoderInputs.pick(batch).as_kwargs()))
    greedy_rewards = torch.tensor([float(len(answer)) for answer in greedy]).repeat_interleave(2)
    torch.testing.assert_close(sampled.advantages, sampled.rewards - greedy_rewards)


def test_the_vqa_reward_is_the_official_accuracy() -> None:
    humans = [["2"] * 3 + ["two", "3", "3", "3", "4", "4", "4"], ["red"] * 10]
    scores = vqa_accuracy_reward(
        questions=["q", "q"], images=[None, None], answers=["two", "Red"], human_answers=humans
    )
    assert scores == [1.0, 0.0]  # "two" normalises to "2" among disagreeing humans; "Red" is not "red" otherwise


def test_mean_reward_rises_on_a_handful_of_questions(splits: Any) -> None:
    model, processor = tiny_setup(splits["train"], seed=1)
    rows = training_rows(splits["train"], 8)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    supervised = VQACollator(processor)(rows)
    for _ in range(12):  # a weak start: some answers right, most not yet
        loss, _ = AnswerCrossEntropy()(model, supervised)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    objective = PolicyGradient(samples=8)
    objective.bind(model, processor)
    batch = VQACollator(processor, batch_extras=objective.batch_extras)(rows)
    torch.manual_seed(0)
    rewards = []
    for _ in range(30):
        loss, sampled = objective(model, batch)
        rewards.append(float(sampled.rewards.mean()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.2, rewards
    logged = objective.log_values()
    assert logged["reward"] == pytest.approx(sum(rewards) / 30, abs=1e-3)
    assert {"reward_std", "advantage_std", "entropy", "answer_tokens", "zero_std_questions"} <= logged.keys()
    assert objective.log_values() == {}  # a mean since the previous call


def test_kl_penalty_starts_at_zero_and_grows_as_the_policy_moves(splits: Any) -> None:
    model, processor = tiny_setup(splits["train"])
    objective = PolicyGradient(reward=answer_length_reward, samples=4, beta=0.1)
    objective.bind(model, processor)
    batch = VQACollator(processor, batch_extras=objective.batch_extras)(training_rows(splits["train"], 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    kls = []
    for _ in range(3):
        loss, _ = objective(model, batch)
        kls.append(objective.log_values()["kl"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert kls[0] == pytest.approx(0.0, abs=1e-7) and kls[2] > 1e-4
    assert all(not parameter.requires_grad for parameter in objective.reference.parameters())


def test_a_learned_reward_model_through_a_pipeline_plugs_in_by_target(splits: Any, tmp_path: Path) -> None:
    model, processor = tiny_setup(splits["train"])
    classifier_dir = tmp_path / "reward_model"
    config = BertConfig(
        vocab_size=processor.question_vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=2,
    )  # fmt: skip
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(classifier_dir)
    processor.question_tokenizer.save_pretrained(classifier_dir)

    node = OmegaConf.load(CONF / "objective" / "rl.yaml")
    node.reward = {"_target_": "vqa.training.rewards.PipelineReward", "model": str(classifier_dir), "device": -1}
    objective = instantiate(node)
    assert isinstance(objective.reward, PipelineReward)
    texts = {"questions": ["what color is the shape?"] * 2, "images": [None, None], "human_answers": [["red"]] * 2}
    scores = objective.reward(answers=["red", "circle"], **texts)
    classifier = BertForSequenceClassification.from_pretrained(classifier_dir).eval()
    encoded = processor.question_tokenizer(
        ["what color is the shape? red", "what color is the shape? circle"], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        expected = classifier(**encoded).logits.softmax(dim=-1)[:, 1]
    torch.testing.assert_close(torch.tensor(scores), expected, rtol=1e-4, atol=1e-5)

    objective.bind(model, processor)
    batch = VQACollator(processor, batch_extras=objective.batch_extras)(training_rows(splits["train"], 2))
    loss, sampled = objective(model, batch)
    assert torch.isfinite(loss) and sampled.rewards.shape == (8,)
    assert torch.all((sampled.rewards >= 0) & (sampled.rewards <= 1))


def test_the_default_reward_comes_from_the_config() -> None:
    objective = instantiate(OmegaConf.load(CONF / "objective" / "rl.yaml"))
    assert objective.reward.func is vqa_accuracy_reward and objective.samples == 4 and objective.loss_type == "dapo"
