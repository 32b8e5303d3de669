"""`EncoderInputs`: everything the encoders read for one batch, as one typed bundle.

A batch reaches the model as keyword arguments (the Trainer calls `model(**batch)`); `VQAModel.forward` and
`generate` pack them into this bundle once, and every function after that takes the bundle, so no two of these
tensors can be swapped by position.

Shapes: B examples; M distinct questions and N distinct images when a batch shares them (image-grouped batches,
a question asked of several images), otherwise M = N = B; Lq question tokens; I image-encoder positions (its CLS
or other prefix tokens, then the patches); Ht and Hv the encoders' widths; P distinct retrieved passages of Lp
tokens, K of them per example.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class EncoderInputs:
    """The question and image inputs of one batch; absent ones are None.

    Attributes:
        input_ids: (M, Lq) question token ids; None when `question_features` replace them.
        attention_mask: (M, Lq) 1 for question tokens, 0 for padding (needed with ids and with features).
        pixel_values: (N, 3, H, W) preprocessed images; None when `image_features` replace them.
        question_features: (M, Lq, Ht) the text encoder's cached `last_hidden_state` (`vqa.training.feature_cache`).
        image_features: (N, I, Hv) the image encoder's cached `last_hidden_state`.
        question_index: (B,) the row of the question inputs for each example; None when M = B, one per example.
        image_index: (B,) the row of the image inputs for each example; None when N = B.
        passage_input_ids: (P, Lp) token ids of the batch's P distinct retrieved passages (question tokenizer).
        passage_attention_mask: (P, Lp) 1 for passage tokens, 0 for padding.
        passage_index: (B, K) the rows of each example's K passages, in retrieval order.
    """

    input_ids: torch.LongTensor | None = None
    attention_mask: torch.LongTensor | None = None
    pixel_values: torch.FloatTensor | None = None
    question_features: torch.FloatTensor | None = None
    image_features: torch.FloatTensor | None = None
    question_index: torch.LongTensor | None = None
    image_index: torch.LongTensor | None = None
    passage_input_ids: torch.LongTensor | None = None
    passage_attention_mask: torch.LongTensor | None = None
    passage_index: torch.LongTensor | None = None

    @classmethod
    def pick(cls, mapping: Mapping[str, Any]) -> EncoderInputs:
        """The bundle's fields out of a mapping (a batch, a function's arguments); other keys are left out."""
        return cls(**{name: mapping.get(name) for name in ENCODER_INPUT_NAMES})

    def as_kwargs(self) -> dict[str, Any]:
        """{name: tensor} of the fields that are set, for `model(**inputs.as_kwargs(), ...)`."""
        return {name: getattr(self, name) for name in ENCODER_INPUT_NAMES if getattr(self, name) is not None}

    def select_examples(self, examples: torch.LongTensor) -> EncoderInputs:
        """The inputs of a batch whose examples are `examples` (E,), indices of this batch's examples, repeats
        allowed: only the two index tensors change, so each distinct question and image is still encoded once.
        """
        has_questions = self.input_ids is not None or self.question_features is not None
        has_images = self.pixel_values is not None or self.image_features is not None
        return dataclasses.replace(
            self,
            question_index=_compose(self.question_index, examples) if has_questions else None,
            image_index=_compose(self.image_index, examples) if has_images else None,
            passage_index=None if self.passage_index is None else self.passage_index.index_select(0, examples),
        )


def _compose(index: torch.LongTensor | None, examples: torch.LongTensor) -> torch.LongTensor:
    """The input row of each selected example; `index` None means one input row per example."""
    return examples if index is None else index.index_select(0, examples)


ENCODER_INPUT_NAMES: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(EncoderInputs))
