"""`EncoderInputs`: everything the encoders read for one batch, as one typed bundle.

A batch reaches the model as keyword arguments (the Trainer calls `model(**batch)`); `VQAModel.forward` and
`generate` pack them into this bundle once, and every function after that takes the bundle, so no two of these
tensors can be swapped by position.

Shapes: B examples; M distinct questions and N distinct images when a batch shares them (image-grouped batches,
a question asked of several images), otherwise M = N = B; Lq question tokens; I image-encoder positions (its CLS
or other prefix tokens, then the patches); Ht and Hv the encoders' widths.
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
        question_features: (M, Lq, Ht) the text encoder's cached `last_hidden_state` (`vqa.feature_cache`).
        image_features: (N, I, Hv) the image encoder's cached `last_hidden_state`.
        question_index: (B,) the row of the question inputs for each example; None when M = B, one per example.
        image_index: (B,) the row of the image inputs for each example; None when N = B.
    """

    input_ids: torch.LongTensor | None = None
    attention_mask: torch.LongTensor | None = None
    pixel_values: torch.FloatTensor | None = None
    question_features: torch.FloatTensor | None = None
    image_features: torch.FloatTensor | None = None
    question_index: torch.LongTensor | None = None
    image_index: torch.LongTensor | None = None

    @classmethod
    def pick(cls, mapping: Mapping[str, Any]) -> EncoderInputs:
        """The bundle's fields out of a mapping (a batch, a function's arguments); other keys are left out."""
        return cls(**{name: mapping.get(name) for name in ENCODER_INPUT_NAMES})


ENCODER_INPUT_NAMES: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(EncoderInputs))
