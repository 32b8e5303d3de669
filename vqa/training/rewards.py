"""Rewards for `objective=rl`: functions of (questions, images, answers, human answers) that score sampled answers.

A reward is any callable with the keyword arguments

    questions: list[str]              the question of each sampled answer
    images: list[str | None]          its image file (None for an image the batch held decoded)
    answers: list[str]                the sampled answers, decoded
    human_answers: list[list[str]]    the human answers of its question

returning one score per answer (a list of floats or a 1-D tensor). The config names it with a Hydra `_target_`
(`objective.reward._target_=my_package.my_reward`, with `_partial_: true` for a plain function).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from transformers import pipeline

from vqa.errors import ConfigError
from vqa.evaluation.metrics import question_accuracy


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
        batch_size: int = 64,
    ) -> None:
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
