"""Blind baselines: question-only and image-only models, answer priors, and the shuffled-image pairing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset

from tests.conftest import make_batch
from vqa import VQAConfig, VQAModel
from vqa.evaluation.baselines import AnswerPrior, shuffle_images
from vqa.evaluation.scoring import score_split


def blind_model(inputs: str, fusion: str = "tokens") -> VQAModel:
    torch.manual_seed(0)
    return VQAModel(VQAConfig.tiny(dropout=0.0, inputs=inputs, fusion=fusion))


def count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("fusion", ["tokens", "pooled"])
def test_question_only_model_never_reads_the_image(fusion: str) -> None:
    model = blind_model("question_only", fusion).eval()
    image_calls = count_calls(model.image_encoder)
    batch = make_batch()
    with_images = model(**batch)
    other_images = model(**dict(batch, pixel_values=torch.randn_like(batch["pixel_values"])))
    without_images = model(**{key: value for key, value in batch.items() if key != "pixel_values"})
    torch.testing.assert_close(other_images.logits, with_images.logits, atol=0, rtol=0)
    torch.testing.assert_close(without_images.logits, with_images.logits, atol=0, rtol=0)
    assert image_calls == [0]
    expected_keys = batch["input_ids"].shape[1] if fusion == "tokens" else 1
    assert with_images.encoder_attention_mask.shape == (3, expected_keys)  # no image key in the cross-attention
    # ... while the question still matters.
    other_question = model(**dict(batch, input_ids=batch["input_ids"].flip(0)))
    assert not torch.allclose(other_question.logits, with_images.logits)


def test_image_only_model_never_reads_the_question() -> None:
    model = blind_model("image_only").eval()
    text_calls = count_calls(model.text_encoder)
    batch = make_batch()
    output = model(**batch)
    other_question = model(**dict(batch, input_ids=batch["input_ids"].flip(0)))
    torch.testing.assert_close(other_question.logits, output.logits, atol=0, rtol=0)
    assert text_calls == [0] and output.encoder_attention_mask.shape == (3, 1 + 64)
    other_images = model(**dict(batch, pixel_values=batch["pixel_values"].flip(0)))
    assert not torch.allclose(other_images.logits, output.logits)
    answers = model.generate(pixel_values=batch["pixel_values"], max_new_tokens=3)  # no question at all
    assert answers.shape[0] == 3


@pytest.mark.parametrize(("inputs", "left_out"), [("question_only", "image"), ("image_only", "text")])
def test_every_trainable_parameter_gets_a_gradient_and_no_other(inputs: str, left_out: str) -> None:
    # What DDP needs (find_unused_parameters off): trainable <=> used, with shared rows and cross-attention caches.
    model = blind_model(inputs).train()
    batch = make_batch(batch_size=6)
    model(
        input_ids=batch["input_ids"][:3],
        attention_mask=batch["attention_mask"][:3],
        question_index=torch.tensor([0, 1, 2, 2, 1, 0]),
        pixel_values=batch["pixel_values"][:2],
        image_index=torch.tensor([0, 0, 1, 1, 0, 1]),
        labels=batch["labels"],
    ).loss.backward()
    for name, parameter in model.named_parameters():
        unused = name.startswith((f"{left_out}_encoder.", f"fusion.{left_out}_projection."))
        assert parameter.requires_grad != unused, name
        assert (parameter.grad is not None) == parameter.requires_grad, name


@pytest.mark.parametrize("inputs", ["question_only", "image_only"])
def test_blind_model_with_shared_rows_equals_repeated_rows(inputs: str) -> None:
    model = blind_model(inputs).eval()
    batch = make_batch(batch_size=6)
    question_index, image_index = torch.tensor([0, 1, 2, 2, 1, 0]), torch.tensor([1, 0, 0, 1, 1, 0])
    questions, masks, images = batch["input_ids"][:3], batch["attention_mask"][:3], batch["pixel_values"][:2]
    shared = model(
        input_ids=questions,
        attention_mask=masks,
        question_index=question_index,
        pixel_values=images,
        image_index=image_index,
        labels=batch["labels"],
    )
    repeated = model(
        input_ids=questions[question_index],
        attention_mask=masks[question_index],
        pixel_values=images[image_index],
        labels=batch["labels"],
    )
    torch.testing.assert_close(shared.logits, repeated.logits)


def test_left_out_encoder_is_not_trained_and_survives_a_round_trip(tmp_path: Path) -> None:
    model = blind_model("question_only")
    table = dict(line.split()[:2] for line in model.parameter_table().splitlines()[1:])
    assert table["image_encoder"] == "0"
    model.save_pretrained(tmp_path)
    loaded = VQAModel.from_pretrained(tmp_path)
    assert loaded.config.inputs == "question_only" and not loaded.image_encoder.embeddings.cls_token.requires_grad
    assert loaded.active_encoders == ("text_encoder",)
    # The same weights read by a full model: the checkpoint is complete.
    full = VQAModel.from_pretrained(tmp_path, inputs="both")
    assert full.config.inputs == "both" and full.image_encoder.embeddings.cls_token.requires_grad


def test_unknown_inputs_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"VQAConfig\.inputs: got 'text', expected one of both, question_only"):
        VQAConfig.tiny(inputs="text")
    blind_model("both").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"VQAConfig\.inputs: got 'text'"):
        VQAModel.from_pretrained(tmp_path, inputs="text")


def test_prior_answers_the_most_common_training_answer_per_question_type() -> None:
    answers = ["red", "blue", "blue", "yes", "no", "no", "yes", "yes", "green", "red"]
    types = ["what color", "what color", "what color", "is there", "is there", "is there", "does", "does", "c", "c"]
    prior = AnswerPrior.fit(answers, types, by="question_type")
    # "c" ties green and red: the alphabetically first wins, whatever the row order.
    assert prior.answers == {"what color": "blue", "is there": "no", "does": "yes", "c": "green"}
    assert prior.overall == "yes"
    assert prior.predict(["is there", "what color", "never seen"]) == ["no", "blue", "yes"]
    assert prior.count_unseen(["is there", "never seen", "also new"]) == 2
    overall = AnswerPrior.fit(answers, types, by="global")
    assert overall.predict(["is there", "what color"]) == ["yes", "yes"] and overall.count_unseen(["x"]) == 0
    with pytest.raises(ValueError, match=r"prior\.by: got 'answer_type'"):
        AnswerPrior.fit(answers, types, by="answer_type")  # type: ignore[arg-type]


def test_prior_types_unannotated_questions_from_their_text() -> None:
    prior = AnswerPrior.fit(["2", "red", "yes"], ["how many", "what color is the", "is the"], by="question_type")
    questions = ["How many dogs?", "What color is the car?", "what color are they?", "is the sky blue?"]
    types, inferred = prior.question_types([None, None, None, "is the"], questions)
    assert types == ["how many", "what color is the", None, "is the"] and inferred == 3
    assert prior.predict(types) == ["2", "red", prior.overall, "yes"] and prior.count_unseen(types) == 1


def split(image_ids: list[int]) -> Dataset:
    return Dataset.from_dict(
        {
            "question_id": list(range(len(image_ids))),
            "image_id": image_ids,
            "question": [f"question {row}" for row in range(len(image_ids))],
            "image": [f"/images/{image_id}.png" for image_id in image_ids],
        }
    )


def test_shuffled_images_pair_each_question_with_another_image_of_the_split() -> None:
    original = split([1, 1, 1, 2, 2, 3, 4, 4, 4, 4] * 20)
    shuffled = shuffle_images(original, seed=0)
    # Every question once, with its own text; the rows come grouped by their new image (evaluation batches share it).
    assert sorted(shuffled["question_id"]) == original["question_id"]
    assert all(
        text == f"question {row}" for row, text in zip(shuffled["question_id"], shuffled["question"], strict=True)
    )
    assert shuffled["image_id"] == sorted(shuffled["image_id"])
    own_image = dict(zip(original["question_id"], original["image_id"], strict=True))
    pairs = [
        (own_image[row], new, path)
        for row, new, path in zip(shuffled["question_id"], shuffled["image_id"], shuffled["image"], strict=True)
    ]
    assert all(new != own and path == f"/images/{new}.png" for own, new, path in pairs)
    assert {new for _, new, _ in pairs} == {1, 2, 3, 4}
    # Questions of one image are spread over several others, not moved together.
    assert len({new for own, new, _ in pairs if own == 4}) == 3
    assert shuffle_images(original, seed=0)["image_id"] == shuffled["image_id"]
    assert shuffle_images(original, seed=1)["image_id"] != shuffled["image_id"]
    with pytest.raises(ValueError, match="the split has 1 image"):
        shuffle_images(split([5, 5]), seed=0)


def test_score_split_uses_the_official_accuracy() -> None:
    dataset = Dataset.from_dict(
        {
            "question_id": [0, 1],
            "answers": [["yes"] * 10, ["red"] * 2 + ["blue"] * 8],
            "answer_type": ["yes/no", "other"],
            "question_type": ["is there", "what color"],
        }
    )
    scores = score_split(dataset, ["yes", "red"])
    # "red" matches 2 of 10 humans: min(1, 2 / 3) averaged over the ten leave-one-out subsets = 0.6.
    assert scores == {"vqa_accuracy": 80.0, "vqa_accuracy_yes_no": 100.0, "vqa_accuracy_other": 60.0}
