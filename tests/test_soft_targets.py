"""objective=soft: every distinct human answer, weighted by its official VQA score, the encoders run once."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from tests.helpers.objective_setup import small_splits, tiny_setup, training_rows
from vqa.evaluation.metrics import question_accuracy
from vqa.model.encoder_inputs import EncoderInputs
from vqa.model.processing import VQACollator
from vqa.training.objectives import AnswerCrossEntropy, SoftAnswerCrossEntropy
from vqa.training.soft_targets import ANSWER_EXAMPLE, ANSWER_LABELS, ANSWER_WEIGHTS, answer_targets


def test_unanimous_humans_give_one_target_of_weight_one() -> None:
    assert answer_targets(["red"] * 10) == [("red", 1.0)]
    assert answer_targets([" red\t"] * 10) == [("red", 1.0)]  # whitespace is normalised always


def test_weights_are_the_official_scores_normalised_per_question() -> None:
    humans = ["yes"] * 9 + ["no"]
    targets = dict(answer_targets(humans))
    # "yes": 9 matches, min(1, 8/3 or 9/3) = 1; "no": one match, 9 of 10 subsets hold it: 0.3.
    assert targets == pytest.approx({"yes": 1 / 1.3, "no": 0.3 / 1.3})
    assert question_accuracy("no", humans) == pytest.approx(0.3)


def test_answers_the_normalisation_makes_equal_are_one_target_spelled_by_the_majority() -> None:
    humans = ["2"] * 3 + ["two"] + ["Two"] + ["3", "three", "the 3", "4", "4"]
    targets = answer_targets(humans)
    assert [answer for answer, _ in targets] == ["2", "3", "4"]
    weights = dict(targets)
    scores = {answer: question_accuracy(answer, humans) for answer in weights}
    assert scores == pytest.approx({"2": 1.0, "3": 0.9, "4": 0.6})  # 5, 3 and 2 humans
    assert weights == pytest.approx({answer: score / 2.5 for answer, score in scores.items()})
    assert sum(weights.values()) == pytest.approx(1.0)


def test_a_row_without_human_answers_is_refused() -> None:
    with pytest.raises(ValueError, match="human answers"):
        answer_targets([])


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    splits = small_splits(tmp_path_factory.mktemp("cache"))
    model, processor = tiny_setup(splits["train"])
    return {"splits": splits, "model": model, "processor": processor}


def test_soft_objective_equals_the_answer_objective_when_the_humans_agree(setting: dict[str, Any]) -> None:
    rows = training_rows(setting["splits"]["train"], 12)  # easy-VQA: the ten answers are one answer
    batch = VQACollator(setting["processor"], batch_extras=SoftAnswerCrossEntropy.batch_extras)(rows)
    assert torch.equal(batch[ANSWER_LABELS], batch["labels"]) and torch.all(batch[ANSWER_WEIGHTS] == 1)
    model = setting["model"]
    soft, _ = SoftAnswerCrossEntropy()(model, batch)
    answer, _ = AnswerCrossEntropy()(model, batch)
    torch.testing.assert_close(soft, answer, rtol=1e-6, atol=1e-7)
    soft.backward()
    soft_gradients = [parameter.grad.clone() for parameter in model.parameters() if parameter.grad is not None]
    model.zero_grad()
    answer.backward()
    answer_gradients = [parameter.grad.clone() for parameter in model.parameters() if parameter.grad is not None]
    model.zero_grad()
    for soft_gradient, answer_gradient in zip(soft_gradients, answer_gradients, strict=True):
        torch.testing.assert_close(soft_gradient, answer_gradient, rtol=1e-5, atol=1e-7)


def test_soft_loss_is_the_weighted_sum_of_each_answers_cross_entropy(setting: dict[str, Any]) -> None:
    rows = training_rows(setting["splits"]["train"], 3)
    human_answers = [["yes"] * 9 + ["no"], ["circle"] * 4 + ["Circle"] + ["rectangle"] * 5, ["red"] * 10]
    rows = [{**row, "answers": answers} for row, answers in zip(rows, human_answers, strict=True)]
    processor, model = setting["processor"], setting["model"]
    batch = VQACollator(processor, batch_extras=SoftAnswerCrossEntropy.batch_extras)(rows)
    assert batch[ANSWER_EXAMPLE].tolist() == [0, 0, 1, 1, 2]
    loss, _ = SoftAnswerCrossEntropy()(model, batch)

    expected = torch.zeros(())
    inputs = EncoderInputs.pick(batch)
    for example, answers in enumerate(human_answers):
        for answer, weight in answer_targets(answers):
            labels = processor.encode_answers([answer])
            one = inputs.select_examples(torch.tensor([example]))
            logits = model(**one.as_kwargs(), labels=labels).logits
            expected = expected + weight * F.cross_entropy(logits[0], labels[0], ignore_index=-100, reduction="sum")
    reference_tokens = (batch["labels"] != -100).sum()
    torch.testing.assert_close(loss, expected / reference_tokens, rtol=1e-5, atol=1e-6)


def test_encoders_run_once_per_question_however_many_answers(setting: dict[str, Any]) -> None:
    rows = training_rows(setting["splits"]["train"], 4)
    rows = [{**row, "answers": ["a", "b", "c", "d", "e"] * 2} for row in rows]  # 5 targets per question
    model = setting["model"]
    batch = VQACollator(setting["processor"], batch_extras=SoftAnswerCrossEntropy.batch_extras)(rows)
    encoded_rows: dict[str, int] = {}

    def count(name: str) -> Any:
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            encoded_rows[name] = encoded_rows.get(name, 0) + output.last_hidden_state.shape[0]

        return hook

    handles = [
        model.text_encoder.register_forward_hook(count("text"), with_kwargs=True),
        model.image_encoder.register_forward_hook(count("image"), with_kwargs=True),
    ]
    try:
        _, outputs = SoftAnswerCrossEntropy()(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    assert outputs.logits.shape[0] == 20  # the decoder: one row per target answer
    assert encoded_rows == {"text": batch["input_ids"].shape[0], "image": batch["pixel_values"].shape[0]}
    assert encoded_rows["text"] <= 4 and encoded_rows["image"] <= 4
