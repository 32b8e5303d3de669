"""The answer classifier (`VQAConfig.head="classifier"`): the field's discriminative baseline beside the generator.

The standard VQA v2 recipe (bottom-up top-down, Pythia, VisualBERT, ViLT) classifies over a fixed answer vocabulary.
Here the classifier reads the same encoders, fusion and GPT-2 blocks as the generator: GPT-2 runs on its BOS token
alone, and the BOS position's final state (B, Hd), which has cross-attended to every fused question token and image
patch in every block, goes through one linear layer to a score per answer (B, A). The pooling is therefore a learned
query (BOS, conditioned on the fused mean with `conditioned_bos`) attending over the fused sequence, and the
cross-attention maps stay defined: one query row per layer.

The vocabulary is built from the training split's most common answers (`answer_vocabulary`); each answer's tokens
(`answer EOS`, as labels are) are kept in the model, so that `generate` returns the chosen answer's tokens and every
consumer of generated ids (evaluation, predict, the demo, the report) works unchanged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import nn

IGNORE = -100  # label padding, and the class of an answer outside the vocabulary


def answer_vocabulary(answers: Sequence[str], min_count: int) -> list[str]:
    """The answers given at least `min_count` times, most frequent first (ties alphabetical): the classes.

    Args:
        answers: one answer per training question (its `multiple_choice_answer`, the most common human answer), as
            the standard recipe counts them (3,129 answers at min_count 9 on VQA v2 train and val).

    Raises:
        ValueError: no answer is that frequent.
    """
    counts = Counter(answer for answer in answers if answer is not None)
    vocabulary = sorted(
        (answer for answer, count in counts.items() if count >= min_count), key=lambda a: (-counts[a], a)
    )
    if not vocabulary:
        most = counts.most_common(1)[0][1] if counts else 0
        raise ValueError(f"answer_min_count: got {min_count}, but no answer is that frequent (the most common: {most})")
    return vocabulary


class AnswerClassifier(nn.Module):
    """A linear layer from the decoder's BOS state to one score per answer, and the answers' tokens.

    Args:
        width: the decoder width Hd.
        classes: the number of answers A.
        answer_length: the longest answer, EOS included, in tokens (the rows of `answer_token_ids`).
    """

    def __init__(self, width: int, classes: int, answer_length: int) -> None:
        super().__init__()
        self.scores = nn.Linear(width, classes)
        # (A, L) `answer EOS` per class, IGNORE after: filled by `set_answer_tokens`, saved with the weights.
        self.register_buffer("answer_token_ids", torch.full((classes, answer_length), IGNORE, dtype=torch.long))

    def forward(self, bos_state: torch.Tensor) -> torch.Tensor:
        """(B, Hd) -> (B, A) answer scores (logits)."""
        return self.scores(bos_state)

    def set_answer_tokens(self, labels: torch.LongTensor) -> None:
        """Keep each class's tokens: (A, T) labels as `VQAProcessor.encode_answers` gives them (T <= L)."""
        if labels.shape[0] != self.answer_token_ids.shape[0] or labels.shape[1] > self.answer_token_ids.shape[1]:
            raise ValueError(
                f"answer tokens: got {tuple(labels.shape)}, expected ({self.answer_token_ids.shape[0]}, <= "
                f"{self.answer_token_ids.shape[1]})"
            )
        self.answer_token_ids.fill_(IGNORE)
        self.answer_token_ids[:, : labels.shape[1]] = labels.to(self.answer_token_ids.device)

    def classes_of(self, labels: torch.LongTensor) -> torch.LongTensor:
        """(B, T) labels `answer EOS` -> (B,) the class whose tokens they are, IGNORE for an answer outside the
        vocabulary (or a row without an answer)."""
        length = self.answer_token_ids.shape[1]
        if labels.shape[1] < length:
            labels = nn.functional.pad(labels, (0, length - labels.shape[1]), value=IGNORE)
        matches = (labels[:, None, :length] == self.answer_token_ids[None]).all(dim=2)  # (B, A)
        found = matches.any(dim=1)
        return torch.where(found, matches.long().argmax(dim=1), torch.full_like(found, IGNORE, dtype=torch.long))

    def answer_tokens(self, classes: torch.LongTensor, pad_token_id: int) -> torch.LongTensor:
        """(B,) classes -> (B, L) their tokens `answer EOS pad...`, as `generate` returns answers."""
        tokens = self.answer_token_ids[classes]
        return tokens.masked_fill(tokens == IGNORE, pad_token_id)
