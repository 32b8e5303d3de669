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
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, get_args

import torch
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel
from torch import nn

from vqa.errors import ConfigError
from vqa.model.encoder_inputs import EncoderInputs
from vqa.model.modeling import VQAModel, labels_from_answers
from vqa.model.processing import VQAProcessor
from vqa.model.settings import (
    NonNegativeInt,
    NonNegativeNumber,
    PositiveInt,
    PositiveNumber,
    Range,
    annotations_of,
    check_values,
)
from vqa.training.objectives import teacher_forced
from vqa.training.rewards import Reward, checked_scores, vqa_accuracy_reward

logger = logging.getLogger(__name__)

Baseline = Literal["group", "greedy"]
RewardScale = Literal["none", "group", "batch"]
LossType = Literal["dapo", "grpo", "dr_grpo"]
TopP = Annotated[float, Range(low=0, high=1, low_open=True)]
BASELINES, REWARD_SCALES, LOSS_TYPES = get_args(Baseline), get_args(RewardScale), get_args(LossType)
QUESTIONS, HUMAN_ANSWERS, IMAGE_PATHS = "questions", "human_answers", "image_paths"  # keys of batch_extras
# Steps after which a run whose every advantage so far was 0 is warned about, if no training log came first.
NO_SIGNAL_WARNING_STEPS = 10
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
        stats["kl"] = float((kl.detach() * mask).sum() / mask.sum().clamp(min=1))
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
        samples: PositiveInt = 4,
        temperature: PositiveNumber = 1.0,
        top_k: NonNegativeInt = 0,
        top_p: TopP = 1.0,
        baseline: Baseline = "group",
        scale_rewards: RewardScale = "group",
        beta: NonNegativeNumber = 0.0,
        loss_type: LossType = "dapo",
    ) -> None:
        self.check_options(
            {
                "samples": samples,
                "temperature": temperature,
                "top_k": top_k,
                "top_p": top_p,
                "baseline": baseline,
                "scale_rewards": scale_rewards,
                "beta": beta,
                "loss_type": loss_type,
            }
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
        # Steps so far, those whose every advantage was 0 and their rewards' sum: for the no-signal warning.
        self._steps, self._steps_without_signal, self._reward_sum, self._rewards_seen = 0, 0, 0.0, 0
        self._warned_no_signal = False

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Refuse, in one line (ConfigError), an option of the wrong type or out of range: the types and ranges of
        `__init__`'s annotations, the choices of the named options, and the samples a baseline needs. The run's
        checks call it with the config's options (defaults filled in) before anything is built; `__init__` too.
        """
        try:
            check_values(options, annotations_of(cls), prefix="objective.")
        except ValueError as error:
            raise ConfigError(str(error)) from None
        for name, choices in (("baseline", BASELINES), ("scale_rewards", REWARD_SCALES), ("loss_type", LOSS_TYPES)):
            if options[name] not in choices:
                raise ConfigError(f"objective.{name}: got {options[name]!r}, expected one of {', '.join(choices)}")
        # One sample is its own group mean (every advantage 0) and has no standard deviation.
        minimum = 2 if "group" in (options["baseline"], options["scale_rewards"]) else 1
        if options["samples"] < minimum:
            raise ConfigError(
                f"objective.samples: got {options['samples']!r}, expected an integer >= {minimum} with baseline "
                f"{options['baseline']} and scale_rewards {options['scale_rewards']}"
            )

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
        if self._steps and self._steps_without_signal == self._steps:
            self._warn_no_signal()  # at the first training log, so that a short run hears of it too
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
        self._note_signal(rewards, advantages)
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
        return checked_scores(self.reward, scores, len(answers), device)

    def _note_signal(self, rewards: torch.Tensor, advantages: torch.Tensor) -> None:
        """Count the steps whose every advantage was 0 (no gradient but the KL penalty's); warn once when every step
        so far was one, after NO_SIGNAL_WARNING_STEPS steps (or at the first training log, `log_values`)."""
        self._steps += 1
        self._steps_without_signal += int(not bool(advantages.abs().gt(0).any()))
        self._reward_sum += float(rewards.sum())
        self._rewards_seen += rewards.numel()
        if self._steps_without_signal == self._steps >= NO_SIGNAL_WARNING_STEPS:
            self._warn_no_signal()

    def _warn_no_signal(self) -> None:
        if self._warned_no_signal:
            return
        self._warned_no_signal = True
        logger.warning(
            "objective=rl: no learning signal in the first %d steps: every advantage was 0 (each question's sampled "
            "answers scored alike against the %s baseline; mean reward %.3g), so the policy gets no gradient. A "
            "random model's answers all score 0: start from a trained run (init_from=<run folder>), or use a reward "
            "that tells the sampled answers apart",
            self._steps,
            self.baseline,
            self._reward_sum / max(self._rewards_seen, 1),
        )

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
