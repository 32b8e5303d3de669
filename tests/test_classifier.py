"""head=classifier: the answer vocabulary, the classifier over GPT-2's BOS state, its objective (soft binary
cross-entropy on the official scores, or cross-entropy), coverage, the config checks, and train.py end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from tests.helpers.objective_setup import small_splits, training_rows
from tests.helpers.train_command import FAST, run_train
from tests.helpers.vqa_v2_fixture import write_vqa_v2
from tests.test_configs import composed
from vqa.config_checks import validate_config
from vqa.errors import ConfigError
from vqa.evaluation.answer_coverage import coverage, official_answer_scores
from vqa.inspection.attention import explain_batch
from vqa.model.builders import tiny_model_and_processor
from vqa.model.classifier import IGNORE, answer_vocabulary
from vqa.model.encoder_inputs import EncoderInputs
from vqa.model.modeling import VQAModel
from vqa.model.processing import VQACollator
from vqa.training.objectives import ANSWER_SCORES, SCORED_ROWS, AnswerClassification


def test_the_vocabulary_is_the_answers_given_often_enough_most_frequent_first() -> None:
    answers = ["yes"] * 5 + ["no"] * 5 + ["2"] * 3 + ["red"] * 2 + ["cat"]
    assert answer_vocabulary(answers, 3) == ["no", "yes", "2"]  # ties alphabetical
    assert answer_vocabulary(answers, 1) == ["no", "yes", "2", "red", "cat"]
    with pytest.raises(
        ValueError, match=r"answer_min_count: got 6, but no answer is that frequent \(the most common: 5\)"
    ):
        answer_vocabulary(answers, 6)


def test_official_scores_of_the_classes_a_human_gave() -> None:
    # "red": 2 of 10 -> (2 * 1/3 + 8 * 2/3) / 10 = 0.6; "blue" is not a class.
    assert official_answer_scores(["red"] * 2 + ["blue"] * 8, {"red": 0}) == pytest.approx({"red": 0.6})
    # The answers differ, so the metric compares normalised forms: "two" scores the class "2" (5 humans: 1.0).
    humans = ["two"] * 3 + ["2"] * 2 + ["3"] * 5
    assert official_answer_scores(humans, {"2": 0, "3": 1}) == pytest.approx({"2": 1.0, "3": 1.0})


def test_coverage_is_the_share_of_answers_held_and_the_best_possible_accuracy() -> None:
    split = Dataset.from_dict(
        {
            "answers": [["red"] * 10, ["blue"] * 10, ["red"] * 2 + ["green"] * 8],
            "multiple_choice_answer": ["red", "blue", "green"],
        }
    )
    # covered: only "red" of the three most common answers; ceiling: 1 + 0 + 0.6 over three questions.
    assert coverage(["red"], split) == {"questions": 3, "covered": 33.33, "accuracy_ceiling": 53.33}


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    splits = small_splits(tmp_path_factory.mktemp("cache"))
    torch.manual_seed(0)
    model, processor = tiny_model_and_processor(splits["train"], dropout=0.0, head="classifier", answer_min_count=1)
    return {"splits": splits, "model": model.train(), "processor": processor}


def test_the_classifier_scores_every_answer_from_the_bos_state(setting: dict[str, Any]) -> None:
    model, processor = setting["model"], setting["processor"]
    rows = training_rows(setting["splits"]["train"], 6)
    batch = VQACollator(processor)(rows)
    inputs = EncoderInputs.pick(batch).as_kwargs()
    output = model(**inputs, labels=batch["labels"])
    vocabulary = model.config.answer_vocabulary
    classes = torch.tensor([vocabulary.index(row["multiple_choice_answer"]) for row in rows])
    assert output.logits.shape == (6, len(vocabulary))
    assert torch.equal(model.answer_classifier.classes_of(batch["labels"]), classes)
    assert output.loss.item() == pytest.approx(F.cross_entropy(output.logits, classes).item(), rel=1e-6)
    unknown = processor.encode_answers(["not an answer"] * 6)  # no class: no loss, and not NaN
    assert torch.all(model.answer_classifier.classes_of(unknown) == IGNORE)
    assert model(**inputs, labels=unknown).loss.item() == 0.0


def test_generate_writes_the_top_answer_and_reloads_unchanged(setting: dict[str, Any], tmp_path: Path) -> None:
    model, processor = setting["model"].eval(), setting["processor"]
    batch = VQACollator(processor, with_labels=False)(training_rows(setting["splits"]["test"], 8))
    inputs = EncoderInputs.pick(batch).as_kwargs()
    with torch.no_grad():
        top = model(**inputs).logits.argmax(dim=1)
    answers = processor.decode_answers(model.generate(**inputs))
    assert answers == [model.config.answer_vocabulary[index] for index in top]
    model.save_pretrained(tmp_path)
    reloaded = VQAModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.head == "classifier" and reloaded.config.answer_vocabulary == model.config.answer_vocabulary
    assert processor.decode_answers(reloaded.generate(**inputs)) == answers
    setting["model"].train()


def test_soft_objective_is_the_binary_cross_entropy_on_the_official_scores(setting: dict[str, Any]) -> None:
    model, processor = setting["model"], setting["processor"]
    objective = AnswerClassification()
    objective.bind(model, processor)
    rows = training_rows(setting["splits"]["train"], 5)
    rows[1] = {**rows[1], "answers": ["red"] * 2 + ["not a class"] * 8}  # "red" scores 0.6, the rest no class
    batch = VQACollator(processor, batch_extras=objective.batch_extras)(rows)
    scores = batch[ANSWER_SCORES]
    vocabulary = model.config.answer_vocabulary
    assert scores[1, vocabulary.index("red")] == pytest.approx(0.6) and scores[1].sum() == pytest.approx(0.6)
    assert scores[0, vocabulary.index(rows[0]["multiple_choice_answer"])] == 1.0 and scores[0].sum() == 1.0
    loss, output = objective(model, batch)
    expected = F.binary_cross_entropy_with_logits(output.logits, scores, reduction="none").sum(dim=1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    batch[SCORED_ROWS][2] = 0.0  # a row whose image could not be decoded does not count
    kept = [0, 1, 3, 4]
    expected = F.binary_cross_entropy_with_logits(output.logits[kept], scores[kept], reduction="none").sum(1).mean()
    assert objective(model, batch)[0].item() == pytest.approx(expected.item(), rel=1e-6)
    cross_entropy = AnswerClassification(loss="cross_entropy")
    assert cross_entropy(model, batch)[0].item() == pytest.approx(
        model(**EncoderInputs.pick(batch).as_kwargs(), labels=batch["labels"]).loss.item()
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.head=classifier"], "AnswerCrossEntropy trains the generator head, but model.head is 'classifier'"),
        (["head=classifier", "objective=rl"], "PolicyGradient trains the generator head"),
        (["objective=classifier"], "AnswerClassification trains the classifier head, but model.head is 'generator'"),
        (
            ["head=classifier", "objective.loss=hinge"],
            "objective.loss: got 'hinge', expected soft_bce or cross_entropy",
        ),
    ],
)
def test_a_head_and_an_objective_that_do_not_go_together_are_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        validate_config(composed(*overrides))
    assert "\n" not in str(raised.value)


def test_head_classifier_picks_its_objective() -> None:
    cfg = composed("head=classifier")
    assert cfg.model.head == "classifier" and cfg.objective._target_.endswith("AnswerClassification")
    validate_config(cfg)


def test_train_py_trains_the_classifier_on_vqa_v2_with_frozen_encoders(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    """The VQA v2 fixture end to end with cached encoder features and the report: the run folder records the
    vocabulary's coverage of each split, and the saved checkpoint answers as predictions.json says."""
    root = write_vqa_v2(tmp_path / "vqa_v2")
    run_dir = tmp_path / "run"
    arguments = [
        "data=vqa_v2", f"data.root={root}", "data.minival_images=1", "head=classifier", "model.answer_min_count=1",
        "model.freeze=encoders", *FAST, "report=true", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    result = run_train(arguments, environment)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # train2014 minus one minival image: two images, answers "thing <image>"; val2014's answers are never in train.
    classifier = metrics["classifier"]
    assert classifier["answers"] == 2  # "thing 9", "thing 25", "thing 42" without the minival image's
    assert classifier["coverage"]["test"] == {"questions": 4, "covered": 0.0, "accuracy_ceiling": pytest.approx(0.0)}
    assert classifier["coverage"]["train"]["covered"] == 100.0
    assert "classifier        2 answers; 0.0% of the test questions' answers" in result.stdout
    assert (run_dir / "report.html").is_file() and metrics["vqa_accuracy"] is not None
    reloaded = VQAModel.from_pretrained(run_dir / "checkpoint")
    assert reloaded.config.head == "classifier" and reloaded.config.freeze == "encoders"


def test_attention_maps_of_the_classifier_are_its_one_query(setting: dict[str, Any]) -> None:
    """The classifier decides at GPT-2's BOS position: one map per layer and head over the fused sequence."""
    model, processor = setting["model"], setting["processor"]
    rows = [setting["splits"]["test"][index] for index in range(2)]
    items = explain_batch(model, processor, [row["image"] for row in rows], [row["question"] for row in rows])
    for item in items:
        layers, heads = model.config.decoder_config.n_layer, model.config.decoder_config.n_head
        assert item.weights.shape[:3] == (layers, heads, 1) and item.answer_tokens == [item.answer]
        assert torch.allclose(item.weights.sum(dim=-1), torch.ones(layers, heads, 1), atol=1e-5)
        assert item.answer in model.config.answer_vocabulary


def test_shared_cross_attention_keys_give_the_scores_of_one_row_per_example(setting: dict[str, Any]) -> None:
    """Image-grouped batches project each distinct image's and question's keys once (as the generator does): the
    scores equal those of a batch with one row per example."""
    model, processor = setting["model"].eval(), setting["processor"]
    rows = training_rows(setting["splits"]["train"], 12)  # easy-VQA's consecutive questions share images
    grouped = VQACollator(processor)(rows)
    assert len(grouped["pixel_values"]) < len(rows)
    decoded = [setting["splits"]["train"][index] for index in range(12)]  # decoded images: one per example
    one_per_row = VQACollator(processor, distinct_questions=False)(decoded)
    assert len(one_per_row["pixel_values"]) == len(rows) and "image_index" not in one_per_row
    with torch.no_grad():
        shared = model(**EncoderInputs.pick(grouped).as_kwargs()).logits
        plain = model(**EncoderInputs.pick(one_per_row).as_kwargs()).logits
    assert torch.allclose(shared, plain, atol=1e-5)
    setting["model"].train()


@pytest.mark.parametrize("fusion", ["pooled", "resampler"])
def test_the_classifier_reads_any_fusion(fusion: str, setting: dict[str, Any]) -> None:
    """The head sits after GPT-2, so every fusion feeds it: scores per answer, and a loss that trains."""
    torch.manual_seed(0)
    model, processor = tiny_model_and_processor(
        setting["splits"]["train"], dropout=0.0, head="classifier", answer_min_count=1, fusion=fusion
    )
    batch = VQACollator(processor)(training_rows(setting["splits"]["train"], 6))
    output = model(**EncoderInputs.pick(batch).as_kwargs(), labels=batch["labels"])
    output.loss.backward()
    assert output.logits.shape == (6, len(model.config.answer_vocabulary))
    assert model.answer_classifier.scores.weight.grad.abs().sum() > 0
