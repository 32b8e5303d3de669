"""objective.answer_type_weights: each question's loss is multiplied by its answer type's weight."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import make_batch
from vqa import VQAConfig, VQAModel
from vqa.errors import ConfigError
from vqa.model.loss import answer_cross_entropy, sequence_cross_entropy
from vqa.training.objectives import LOSS_WEIGHTS, AnswerCrossEntropy

ANSWER_TYPES = ["yes/no", "other", "number", "yes/no", "other", "number"]


def weighted_batch(objective: AnswerCrossEntropy) -> dict[str, torch.Tensor]:
    """Six examples (answers of 1, 2 and 3 tokens) with the weights the objective's collator hook gives them."""
    batch = make_batch(batch_size=6, seed=3)
    rows = [{"answer_type": answer_type} for answer_type in ANSWER_TYPES]
    return {**batch, **objective.batch_extras(None, rows, batch, [])}


@pytest.fixture(scope="module")
def model() -> VQAModel:
    torch.manual_seed(0)
    return VQAModel(VQAConfig.tiny(dropout=0.0)).eval()


def test_each_example_gets_its_answer_types_weight_and_unnamed_types_weigh_one() -> None:
    batch = weighted_batch(AnswerCrossEntropy({"yes/no": 0.25, "number": 2}))
    assert batch[LOSS_WEIGHTS].tolist() == [0.25, 1.0, 2.0, 0.25, 1.0, 2.0]


def test_no_weights_adds_nothing_to_the_batch() -> None:
    assert LOSS_WEIGHTS not in weighted_batch(AnswerCrossEntropy())


def test_unit_weights_give_the_unweighted_loss(model: VQAModel) -> None:
    batch = weighted_batch(AnswerCrossEntropy({"yes/no": 1.0, "other": 1.0}))
    weighted, _ = AnswerCrossEntropy({"yes/no": 1.0})(model, batch, num_items_in_batch=None)
    plain, _ = AnswerCrossEntropy()(model, {k: v for k, v in batch.items() if k != LOSS_WEIGHTS})
    torch.testing.assert_close(weighted, plain)


def test_the_loss_is_the_weighted_token_sum_over_all_label_tokens(model: VQAModel) -> None:
    objective = AnswerCrossEntropy({"yes/no": 0.0, "number": 3.0})
    batch = weighted_batch(objective)
    loss, outputs = objective(model, batch, num_items_in_batch=None)
    per_example = sequence_cross_entropy(outputs.logits, batch["labels"])  # (6,)
    label_tokens = (batch["labels"] != -100).sum()
    expected = (per_example[[1, 4]].sum() + 3.0 * per_example[[2, 5]].sum()) / label_tokens
    torch.testing.assert_close(loss, expected)
    # The per-example sums add up to the plain loss: the weighting is the only difference.
    plain = answer_cross_entropy(outputs.logits, batch["labels"])
    torch.testing.assert_close(per_example.sum() / label_tokens, plain)


def test_a_zero_weight_gives_its_examples_no_gradient(model: VQAModel) -> None:
    objective = AnswerCrossEntropy({"yes/no": 0.0})
    batch = weighted_batch(objective)
    pixels = batch["pixel_values"].clone().requires_grad_(True)
    loss, _ = objective(model, {**batch, "pixel_values": pixels})
    loss.backward()
    image_gradient = pixels.grad.flatten(1).abs().sum(dim=1)  # (6,): one image per example
    assert image_gradient[[0, 3]].tolist() == [0.0, 0.0]
    assert (image_gradient[[1, 2, 4, 5]] > 0).all()


@pytest.mark.parametrize("weight", [-0.5, float("inf"), "high", True])
def test_a_weight_that_is_not_a_number_at_least_zero_is_one_line(weight: object) -> None:
    with pytest.raises(ConfigError, match=r"objective\.answer_type_weights\.yes/no: got .*expected a number >= 0"):
        AnswerCrossEntropy({"yes/no": weight})
