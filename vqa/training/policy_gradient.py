"""`objective=rl`: policy-gradient fine-tuning against a reward (GRPO or SCST), for a model that already answers.

Each step, for every question of the batch: sample G answers from the model (temperature, top-k, top-p), score
them with the reward (`vqa.training.rewards`; the official VQA accuracy by default), and turn the scores into
advantages:
the reward minus the mean of the question's G rewards (GRPO; optionally divided by their standard deviation) or
minus the reward of the model's greedy answer (SCST, self-critical sequence training). The loss, as TRL's GRPO
documents it for one update per generation:

    per token:  l = -(pi / [pi]_no_grad) * A  +  beta * (pi_ref / pi - log(pi_ref / pi) - 1)

whose gradient is REINFORCE's, -A * grad log pi, plus the KL penalty to the starting model (Schulman's k3
estimator, only with beta > 0). `loss_type` sums it over tokens as TRL does: `dapo` (over all tokens of the batch),
`grpo` (per answer, then over answers), `dr_grpo` (over a constant: answers x max answer length).

Log-probabilities are of the tempered distribution (logits / temperature), the one the answers were sampled from.
Shapes: B questions in the batch, G samples each, S = B * G sampled answers of up to T tokens (EOS included).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel
from torch import nn

from vqa.errors import ConfigError
from vqa.model.encoder_inputs import EncoderInputs
from vqa.model.modeling import VQAModel, labels_from_answers
from vqa.model.processing import VQAProcessor
from vqa.training.objectives import teacher_forced
from vqa.training.rewards import Reward, vqa_accuracy_reward

BASELINES = ("group", "greedy")
QUESTIONS, HUMAN_ANSWERS, IMAGE_PATHS = "questions", "human_answers", "image_paths"  # keys of batch_extras
REWARD_SCALES = ("none", "group", "batch")
LOSS_TYPES = ("dapo", "grpo", "dr_grpo")
STD_EPSILON = 1e-4  # added to a standard deviation before dividing by it (as TRL)


@dataclass
class PolicyGradientOutput:
    """What one step sampled and how it was scored (the objective's `outputs`).

    Attributes:
        labels: (S, T) the sampled answers `answer EOS`, -100 after EOS; rows of one question are consecutive.
        answers: the S decoded answers.
        rewards: (S,) their rewards.
        advantages: (S,) their advantages.
        logits: (S, T, V) the policy's logits over them (untempered).
    """

    labels: torch.LongTensor
    answers: list[str]
    rewards: torch.Tensor
    advantages: torch.Tensor
    logits: torch.FloatTensor


def advantages_from_rewards(
    rewards: torch.Tensor, baseline_rewards: torch.Tensor | None = None, scale: str = "group"
) -> torch.Tensor:
    """(B, G) rewards -> (B, G) advantages.

    Args:
        baseline_rewards: (B,) the greedy answers' rewards (SCST); None: each question's mean reward (GRPO).
        scale: `none`, `group` (divide by each question's reward standard deviation) or `batch` (by the whole
            batch's).
    """
    centre = rewards.mean(dim=1, keepdim=True) if baseline_rewards is None else baseline_rewards.unsqueeze(1)
    advantages = rewards - centre
    if scale == "group":
        advantages = advantages / (rewards.std(dim=1, keepdim=True) + STD_EPSILON)
    elif scale == "batch":
        advantages = advantages / (rewards.std() + STD_EPSILON)
    return advantages


def policy_gradient_loss(
    logits: torch.FloatTensor,
    labels: torch.LongTensor,
    advantages: torch.Tensor,
    loss_type: str = "dapo",
    max_length: int | None = None,
    reference_logits: torch.FloatTensor | None = None,
    beta: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The policy-gradient loss over sampled answers and what to log about it.

    Args:
        logits: (S, T, V) the policy's logits at the answers' positions (already divided by the temperature).
        labels: (S, T) the sampled tokens, -100 after each answer's EOS.
        advantages: (S,) one per answer, the same for all its tokens.
        max_length: T for `dr_grpo`'s constant (the answer length limit).
        reference_logits: (S, T, V) the starting model's (tempered) logits, for the KL penalty.
        beta: the KL penalty's weight.

    Returns:
        (loss, {"entropy": mean token entropy, "kl": mean token KL (with a reference)}).
    """
    mask = (labels != -100).float()  # (S, T)
    log_probs = F.log_softmax(logits.float(), dim=-1)  # (S, T, V)
    tokens = labels.clamp(min=0).unsqueeze(-1)
    token_log_probs = log_probs.gather(-1, tokens).squeeze(-1)  # (S, T)
    # exp(x - x.detach()) is 1 in value and has the gradient of x: REINFORCE's -A * grad log pi per token.
    per_token = -torch.exp(token_log_probs - token_log_probs.detach()) * advantages.unsqueeze(1)
    stats: dict[str, float] = {}
    if reference_logits is not None:
        reference = F.log_softmax(reference_logits.float(), dim=-1).gather(-1, tokens).squeeze(-1)
        kl = torch.exp(reference - token_log_probs) - (reference - token_log_probs) - 1  # (S, T), >= 0
        per_token = per_token + beta * kl
        stats["kl"] = float((kl * mask).sum() / mask.sum().clamp(min=1))
    per_token = per_token * mask
    if loss_type == "dapo":
        loss = per_token.sum() / mask.sum().clamp(min=1)
    elif loss_type == "grpo":
        loss = (per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()
    elif loss_type == "dr_grpo":
        loss = per_token.sum() / (labels.shape[0] * (max_length or labels.shape[1]))
    else:
        raise ValueError(f"loss_type: got {loss_type!r}, expected one of {', '.join(LOSS_TYPES)}")
    with torch.no_grad():
        entropy = -(log_probs.exp() * log_probs).sum(dim=-1)  # (S, T)
        stats["entropy"] = float((entropy * mask).sum() / mask.sum().clamp(min=1))
    return loss, stats


class PolicyGradient:
    """The `objective=rl` objective: sample, score, and follow the reward's policy gradient (module docstring).

    Args:
        reward: scores sampled answers (`vqa.training.rewards.Reward`); default the official VQA accuracy.
        samples: G, answers sampled per question (at least 2 for the group baseline).
        temperature, top_k, top_p: the sampling distribution (top_k 0 and top_p 1 turn those filters off).
        baseline: `group` (GRPO: the question's mean reward) or `greedy` (SCST: the greedy answer's reward).
        scale_rewards: `group` divides advantages by the question's reward standard deviation (TRL's default),
            `batch` by the batch's, `none` not at all.
        beta: weight of the KL penalty to the starting model (0: no penalty and no reference model kept).
        loss_type: `dapo`, `grpo` or `dr_grpo` (module docstring).
    """

    @staticmethod
    def batch_extras(
        processor: VQAProcessor, rows: list[dict[str, Any]], batch: dict[str, Any], undecodable: list[int]
    ) -> dict[str, Any]:
        """The examples' texts, which the sampled answers are scored against: questions, human answers, image paths
        (None for an image given decoded)."""
        del processor, batch, undecodable  # the texts as the rows have them
        return {
            QUESTIONS: [row["question"] for row in rows],
            HUMAN_ANSWERS: [list(row["answers"]) for row in rows],
            IMAGE_PATHS: [row["image"].get("path") if isinstance(row["image"], dict) else None for row in rows],
        }

    averages_own_batch: ClassVar[bool] = True

    def __init__(
        self,
        reward: Reward | None = None,
        samples: int = 4,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        baseline: str = "group",
        scale_rewards: str = "group",
        beta: float = 0.0,
        loss_type: str = "dapo",
    ) -> None:
        for name, value, options in (
            ("baseline", baseline, BASELINES),
            ("scale_rewards", scale_rewards, REWARD_SCALES),
            ("loss_type", loss_type, LOSS_TYPES),
        ):
            if value not in options:
                raise ConfigError(f"objective.{name}: got {value!r}, expected one of {', '.join(options)}")
        # One sample is its own group mean (every advantage 0) and has no standard deviation.
        minimum = 2 if baseline == "group" or scale_rewards == "group" else 1
        if not isinstance(samples, int) or samples < minimum:
            raise ConfigError(
                f"objective.samples: got {samples!r}, expected an integer >= {minimum} with baseline {baseline} "
                f"and scale_rewards {scale_rewards}"
            )
        if temperature <= 0 or not 0 < top_p <= 1 or top_k < 0 or beta < 0:
            raise ConfigError(
                f"objective: temperature {temperature}, top_k {top_k}, top_p {top_p}, beta {beta}; expected "
                "temperature > 0, top_k >= 0, 0 < top_p <= 1, beta >= 0"
            )
        self.reward = reward or vqa_accuracy_reward
        self.samples = samples
        self.sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
        self.baseline = baseline
        self.scale_rewards = scale_rewards
        self.beta = beta
        self.loss_type = loss_type
        self.processor: VQAProcessor | None = None
        self.reference: VQAModel | None = None
        self._logged: dict[str, list[float]] = {}

    def bind(self, model: nn.Module, processor: VQAProcessor) -> None:
        """Keep the processor (to decode samples) and, with a KL penalty, a frozen copy of the starting model."""
        self.processor = processor
        if self.beta > 0:
            self.reference = copy.deepcopy(extract_model_from_parallel(model)).eval().requires_grad_(False)

    def log_values(self) -> dict[str, float]:
        """Means since the previous call: reward, reward_std (within questions), advantage_std, entropy, kl,
        answer_tokens (EOS included), zero_std_questions (share of questions whose G rewards were all equal)."""
        values = {name: round(sum(entries) / len(entries), 4) for name, entries in self._logged.items() if entries}
        self._logged = {}
        return values

    def __call__(
        self,
        model: nn.Module,
        batch: Mapping[str, Any],
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, PolicyGradientOutput]:
        del num_items_in_batch  # a mean over this micro-batch (averages_own_batch)
        if self.processor is None or QUESTIONS not in batch:
            raise ValueError(
                "objective=rl: call bind(model, processor) first and build the collator with "
                "VQACollator(..., batch_extras=objective.batch_extras)"
            )
        inner: VQAModel = extract_model_from_parallel(model)
        inputs = EncoderInputs.pick(batch)
        num_questions = len(batch[QUESTIONS])
        examples = torch.arange(num_questions, device=inner.device).repeat_interleave(self.samples)  # (S,)
        sampled_inputs = inputs.select_examples(examples)
        eos = inner.config.decoder_config.eos_token_id
        sampled = inner.generate(**sampled_inputs.as_kwargs(), do_sample=True, **self.sampling)  # (S, T)
        answers = self.processor.decode_answers(sampled)
        rewards = self.score(batch, examples.tolist(), answers, inner.device).view(num_questions, self.samples)
        baseline_rewards = None
        if self.baseline == "greedy":
            greedy = self.processor.decode_answers(inner.generate(**inputs.as_kwargs()))
            baseline_rewards = self.score(batch, list(range(num_questions)), greedy, inner.device)
        advantages = advantages_from_rewards(rewards, baseline_rewards, self.scale_rewards).flatten()
        # A question whose image could not be decoded (its reference labels are all -100) teaches nothing.
        if "labels" in batch:
            advantages = advantages * (batch["labels"] != -100).any(dim=1).float()[examples]

        labels = labels_from_answers(sampled, eos)
        logits = teacher_forced(model, sampled_inputs, labels).logits
        temperature = self.sampling["temperature"]
        reference_logits = None
        if self.reference is not None:
            with torch.no_grad():
                reference_logits = teacher_forced(self.reference, sampled_inputs, labels).logits / temperature
        loss, stats = policy_gradient_loss(
            logits / temperature,
            labels,
            advantages,
            self.loss_type,
            inner.config.max_answer_tokens,
            reference_logits,
            self.beta,
        )
        self._record(rewards, advantages, labels, stats)
        return loss, PolicyGradientOutput(labels, answers, rewards.flatten(), advantages, logits)

    def score(
        self, batch: Mapping[str, Any], examples: list[int], answers: list[str], device: torch.device
    ) -> torch.Tensor:
        """(len(answers),) float32 rewards of `answers` on `device`, answer i belonging to the batch's example
        `examples[i]`."""
        scores = self.reward(
            questions=[batch[QUESTIONS][example] for example in examples],
            images=[batch[IMAGE_PATHS][example] for example in examples],
            answers=answers,
            human_answers=[batch[HUMAN_ANSWERS][example] for example in examples],
        )
        scores = torch.as_tensor(scores, dtype=torch.float32, device=device).flatten()
        if scores.shape[0] != len(answers):
            raise ValueError(f"reward {self.reward!r}: returned {scores.shape[0]} scores for {len(answers)} answers")
        return scores

    def _record(
        self, rewards: torch.Tensor, advantages: torch.Tensor, labels: torch.LongTensor, stats: dict[str, float]
    ) -> None:
        spread = rewards.std(dim=1) if rewards.shape[1] > 1 else torch.zeros(rewards.shape[0])  # (B,)
        values = {
            "reward": float(rewards.mean()),
            "reward_std": float(spread.mean()),
            "advantage_std": float(advantages.std()) if advantages.numel() > 1 else 0.0,
            "answer_tokens": float((labels != -100).sum(dim=1).float().mean()),
            "zero_std_questions": float((spread == 0).float().mean()),
            **stats,
        }
        for name, value in values.items():
            self._logged.setdefault(name, []).append(value)
