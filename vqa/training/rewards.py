"""Rewards for `objective=rl`: functions of (questions, images, answers, human answers) that score sampled answers.

A reward is any callable with the keyword arguments

    questions: list[str]              the question of each sampled answer
    images: list[str | None]          its image file (None for an image the batch held decoded)
    answers: list[str]                the sampled answers, decoded
    human_answers: list[list[str]]    the human answers of its question

returning one finite score per answer (a list of numbers or a 1-D tensor or array). The config names it with a Hydra
`_target_` (`objective.reward._target_=my_package.my_reward`, with `_partial_: true` for a plain function). What it
returns is checked at every step (`checked_scores`): a wrong type or count is one line naming the reward
(ConfigError), a NaN or infinite score stops the run (DivergenceError).
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from transformers import pipeline

from vqa.errors import ConfigError, DivergenceError
from vqa.evaluation.metrics import question_accuracy
from vqa.model.encoders import checkpoint_location
from vqa.model.settings import PositiveInt


class Reward(Protocol):
    def __call__(
        self,
        *,
        questions: Sequence[str],
        images: Sequence[str | None],
        answers: Sequence[str],
        human_answers: Sequence[Sequence[str]],
    ) -> Sequence[float] | torch.Tensor: ...


def vqa_accuracy_reward(
    *,
    questions: Sequence[str],
    images: Sequence[str | None],
    answers: Sequence[str],
    human_answers: Sequence[Sequence[str]],
) -> list[float]:
    """The official VQA accuracy (0 to 1) of each answer against its human answers: the evaluation's own code,
    normalisation included."""
    del questions, images
    return [question_accuracy(answer, humans) for answer, humans in zip(answers, human_answers, strict=True)]


class PipelineReward:
    """A learned reward model through a transformers `pipeline` (the RLHF setup): the probability that a text
    classifier gives `label` for each `template`-formatted (question, answer) text.

    Args:
        model: the classifier's hub name or folder (any `text-classification` model).
        label: the label whose probability is the reward (e.g. `LABEL_1`, `POSITIVE`, `acceptable`).
        template: the classifier's input, from `{question}` and `{answer}`.
        device: the pipeline's device (-1: CPU; None: the pipeline's choice).
        batch_size: texts per classifier call.
    """

    def __init__(
        self,
        model: str,
        label: str = "LABEL_1",
        template: str = "{question} {answer}",
        device: int | str | None = None,
        batch_size: PositiveInt = 64,
    ) -> None:
        # A missing folder would otherwise be reported by transformers as a malformed hub repo id.
        model = checkpoint_location(model, "objective.reward.model")
        self.classifier = pipeline("text-classification", model=model, device=device)
        labels = list(self.classifier.model.config.id2label.values())
        if label not in labels:
            raise ConfigError(f"reward label {label!r}: not a label of {model}; its labels: {', '.join(labels)}")
        self.label = label
        self.template = template
        self.batch_size = batch_size

    def __call__(
        self,
        *,
        questions: Sequence[str],
        images: Sequence[str | None],
        answers: Sequence[str],
        human_answers: Sequence[Sequence[str]],
    ) -> list[float]:
        del images, human_answers  # a text classifier reads neither
        texts = [self.template.format(question=q, answer=a) for q, a in zip(questions, answers, strict=True)]
        scored: list[list[dict[str, Any]]] = self.classifier(texts, top_k=None, batch_size=self.batch_size)
        return [next(entry["score"] for entry in scores if entry["label"] == self.label) for scores in scored]


def reward_name(reward: Any) -> str:
    """The qualified name of a reward (`my_package.rewards.length_reward`), through a `functools.partial` (how Hydra
    gives a `_partial_` function), or of its class for a callable object."""
    target = reward.func if isinstance(reward, functools.partial) else reward
    if not (inspect.isfunction(target) or inspect.ismethod(target) or isinstance(target, type)):
        target = type(target)  # a callable object: its class
    return f"{target.__module__}.{target.__qualname__}"


def checked_scores(reward: Any, scores: Any, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """What `reward` returned for `count` answers, as a (count,) float32 tensor on `device`.

    Raises:
        ConfigError: not one number per answer (a string, a dict, None, nested lists, another count or shape),
            naming the reward.
        DivergenceError: a NaN or infinite score, naming the reward and how many.
    """
    name = reward_name(reward)
    expected = f"expected a list of numbers or a 1-D tensor, one score per answer ({count})"
    if isinstance(scores, torch.Tensor | np.ndarray):
        # bool, integer and floating dtypes (NumPy kinds b, i, u, f); not complex numbers, strings or objects.
        real = not scores.dtype.is_complex if isinstance(scores, torch.Tensor) else scores.dtype.kind in "biuf"
        if not real:
            raise ConfigError(f"reward {name}: returned a {type(scores).__name__} of {scores.dtype}; {expected}")
        if tuple(scores.shape) != (count,):
            shape = tuple(scores.shape)
            raise ConfigError(f"reward {name}: returned a {type(scores).__name__} of shape {shape}; {expected}")
        values = torch.as_tensor(scores)
    elif isinstance(scores, list | tuple):
        wrong = next((score for score in scores if not _is_number(score)), None)
        if wrong is not None:
            held = f"{_short(wrong)} ({type(wrong).__name__})"
            raise ConfigError(f"reward {name}: returned a {type(scores).__name__} holding {held}; {expected}")
        if len(scores) != count:
            raise ConfigError(f"reward {name}: returned {len(scores)} scores for {count} answers; {expected}")
        values = torch.tensor([float(score) for score in scores])
    else:
        raise ConfigError(f"reward {name}: returned {_short(scores)} ({type(scores).__name__}); {expected}")
    values = values.detach().to(device=device, dtype=torch.float32)  # a score is a constant to the policy
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        bad = values[~finite]
        found = {"nan": bad.isnan(), "inf": bad == float("inf"), "-inf": bad == -float("inf")}
        kinds = ", ".join(kind for kind, where in found.items() if bool(where.any()))
        raise DivergenceError(f"reward {name}: {bad.numel()} of {count} scores are not finite ({kinds})")
    return values


def _is_number(value: Any) -> bool:
    """A real number: a Python or NumPy number (bool counts as 0 or 1), or a one-element real tensor."""
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and not value.dtype.is_complex
    return isinstance(value, numbers.Real)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
