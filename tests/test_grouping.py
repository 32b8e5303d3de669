"""Image-grouped batches: the sampler's order, the collator's de-duplication and the model's shared encoding."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import make_batch
from vqa import VQACollator, VQAConfig, VQAModel, VQAProcessor
from vqa.data.sampling import ImageGroupedSampler

IMAGE_IDS = [3, 1, 3, 2, 1, 3, 2, 2, 1, 3]  # four questions on image 3, three on 1 and 2


def test_sampler_yields_each_row_once_in_image_groups() -> None:
    order = list(ImageGroupedSampler(IMAGE_IDS, seed=0))
    assert sorted(order) == list(range(len(IMAGE_IDS)))
    images = [IMAGE_IDS[row] for row in order]
    changes = sum(first != second for first, second in itertools.pairwise(images))
    assert changes == 2  # three groups, contiguous


def test_sampler_caps_group_size_and_reshuffles_per_epoch() -> None:
    sampler = ImageGroupedSampler(IMAGE_IDS, questions_per_image=2, seed=0)
    first = list(sampler)
    images = [IMAGE_IDS[row] for row in first]
    runs, run = [], 1
    for previous, current in itertools.pairwise(images):
        run = run + 1 if current == previous else 1
        runs.append(run)
    assert max(runs) <= 2 * 2  # two chunks of the same image may happen to meet; never more
    assert list(sampler) == first  # same epoch, same order (a resumed run replays it)
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert sorted(sampler) == list(range(len(IMAGE_IDS)))


def test_sampler_rejects_bad_group_size() -> None:
    with pytest.raises(ValueError, match="questions_per_image: got 0"):
        ImageGroupedSampler(IMAGE_IDS, questions_per_image=0)


@pytest.fixture(scope="module")
def processor() -> VQAProcessor:
    return VQAProcessor.train_tiny(["what color is it?", "is it red?"] * 10, ["red", "yes"] * 10)


def test_collator_encodes_each_distinct_image_and_question_once(processor: VQAProcessor, tmp_path: Path) -> None:
    paths = []
    for index, color in enumerate(((255, 0, 0), (0, 0, 255))):
        path = tmp_path / f"{index}.png"
        Image.new("RGB", (64, 64), color).save(path)
        paths.append(str(path))
    questions = ["what color is it?", "is it red?", "what color is it?", "is it red?", "is it red?"]
    rows = [
        {"question": question, "image": {"path": paths[i], "bytes": None}, "multiple_choice_answer": "red"}
        for question, i in zip(questions, (0, 1, 0, 0, 1), strict=True)
    ]
    batch = VQACollator(processor)(rows)
    assert batch["pixel_values"].shape[0] == 2 and batch["image_index"].tolist() == [0, 1, 0, 0, 1]
    assert batch["input_ids"].shape[0] == 2 and batch["question_index"].tolist() == [0, 1, 0, 1, 1]
    assert next(iter(batch)) == "question_index"  # the Trainer reads the batch size off the first tensor
    decoded = VQACollator(processor, distinct_questions=False)(
        [dict(row, image=Image.open(row["image"]["path"])) for row in rows]
    )
    assert "question_index" not in decoded and next(iter(decoded)) == "input_ids"
    torch.testing.assert_close(batch["pixel_values"][batch["image_index"]], decoded["pixel_values"])
    for name in ("input_ids", "attention_mask"):
        assert torch.equal(batch[name][batch["question_index"]], decoded[name])
    question_only = VQACollator(processor, inputs="question_only")(rows)
    assert not {"pixel_values", "image_index"} & question_only.keys()


@pytest.mark.parametrize("fusion", ["tokens", "pooled"])
def test_grouped_loss_equals_ungrouped(fusion: str) -> None:
    torch.manual_seed(0)
    model = VQAModel(VQAConfig.tiny(dropout=0.0, fusion=fusion, vision_conv_stem=True)).eval()
    batch = make_batch(batch_size=6)
    distinct = batch["pixel_values"][:2]
    image_index = torch.tensor([0, 1, 1, 0, 0, 1])
    question_ids, question_mask = batch["input_ids"][:3], batch["attention_mask"][:3]
    question_index = torch.tensor([0, 1, 2, 2, 0, 1])
    repeated = {
        "input_ids": question_ids[question_index],
        "attention_mask": question_mask[question_index],
        "pixel_values": distinct[image_index],
    }
    shared = {
        "input_ids": question_ids,
        "attention_mask": question_mask,
        "question_index": question_index,
        "pixel_values": distinct,
        "image_index": image_index,
    }
    ungrouped = model(**repeated, labels=batch["labels"])
    grouped = model(**shared, labels=batch["labels"])
    torch.testing.assert_close(grouped.loss, ungrouped.loss)
    torch.testing.assert_close(grouped.logits, ungrouped.logits)
    # The same gradients too: with tokens fusion the grouped path shares GPT-2's cross-attention keys and values.
    gradients = []
    for output in (ungrouped, grouped):
        model.zero_grad()
        output.loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys() and any("crossattention.c_attn" in name for name in gradients[0])
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, msg=name)
    assert torch.equal(model.generate(**shared), model.generate(**repeated))


def test_conv_stem_keeps_the_patch_grid_and_round_trips(tmp_path: Path) -> None:
    model = VQAModel(VQAConfig.tiny(vision_conv_stem=True)).eval()
    states = model.image_encoder(pixel_values=torch.randn(2, 3, 64, 64)).last_hidden_state
    assert states.shape == (2, 1 + 64, 128)
    model.save_pretrained(tmp_path)
    loaded = VQAModel.from_pretrained(tmp_path).eval()
    batch = make_batch()
    torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)


def test_generation_projects_each_distinct_image_once() -> None:
    """Greedy generation reads GPT-2's cross-attention keys and values from the shared rows (each distinct question
    and image projected once), and writes the answers of the ungrouped batch; beam search projects every row."""
    torch.manual_seed(0)
    model = VQAModel(VQAConfig.tiny(dropout=0.0)).eval()
    with torch.no_grad():  # larger weights than the init's, so that different inputs get different answers
        for parameter in model.parameters():
            parameter.normal_(0, 0.3)
    batch = make_batch(batch_size=6)
    image_index, question_index = torch.tensor([0, 1, 1, 0, 0, 1]), torch.tensor([0, 1, 2, 2, 0, 1])
    questions, question_mask, images = batch["input_ids"][:3], batch["attention_mask"][:3], batch["pixel_values"][:2]
    shared = {"input_ids": questions, "attention_mask": question_mask, "question_index": question_index}
    shared |= {"pixel_values": images, "image_index": image_index}
    repeated = {"input_ids": questions[question_index], "attention_mask": question_mask[question_index]}
    repeated |= {"pixel_values": images[image_index]}
    projected: list[int] = []  # positions each cross-attention key/value projection saw, per call
    hooks = [
        block.crossattention.c_attn.register_forward_hook(
            lambda module, args, out: projected.append(out.shape[:-1].numel())
        )
        for block in model.decoder.transformer.h
    ]
    answers = {}
    for name, inputs in (("shared", shared), ("repeated", repeated)):
        projected.clear()
        answers[name] = model.generate(**inputs)
        answers[name + " positions"] = sum(projected)
    assert torch.equal(answers["shared"], answers["repeated"])
    assert len({tuple(row) for row in answers["shared"].tolist()}) > 1  # not one answer for every question
    vision = model.config.vision_config
    layers, text_positions = len(hooks), questions.shape[1]
    image_positions = 1 + (vision.image_size // vision.patch_size) ** 2  # CLS and the patches
    assert answers["shared positions"] == layers * (3 * text_positions + 2 * image_positions)
    assert answers["repeated positions"] == layers * 6 * (text_positions + image_positions)
    projected.clear()
    model.generate(**shared, num_beams=2)
    assert sum(projected) == layers * 2 * 6 * (text_positions + image_positions)  # two beams per question
    for hook in hooks:
        hook.remove()
