"""Attention inspection: weights, grids, rollout, plots, the predict CLI and the grounding check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image, ImageDraw

from vqa.data import EasyVQAOptions, build_easy_vqa
from vqa.inspection.attention import AnswerAttention, decoder_rollout, eager_attention, explain, explain_batch, select
from vqa.inspection.attention_plots import plot_answer_attention, plot_layer_grid, save_figure
from vqa.inspection.grounding import attention_on_shape, grounding_report, patch_coverage, shape_mask
from vqa.inspection.predict import main as predict
from vqa.inspection.predict import top_answers
from vqa.model.builders import tiny_model_and_processor
from vqa.model.modeling import VQAModel
from vqa.model.processing import VQAProcessor

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["what shape is in the image?", "is there a red circle in the picture?", "what color is it?"]
ANSWERS = ["circle", "yes", "red"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny(**options: object) -> tuple[VQAModel, VQAProcessor]:
    torch.manual_seed(0)
    split = Dataset.from_dict({"question": QUESTIONS * 4, "multiple_choice_answer": ANSWERS * 4})
    return tiny_model_and_processor(split, dropout=0.1, **options)


def shape_image(box: tuple[int, int, int, int] = (8, 16, 23, 31), size: int = 64) -> Image.Image:
    """A flat off-white background with one flat blue rectangle, like an easy-VQA image."""
    image = Image.new("RGB", (size, size), (248, 234, 230))
    ImageDraw.Draw(image).rectangle(box, fill=(0, 0, 255))
    return image


@pytest.fixture(scope="module")
def model_and_processor() -> tuple[VQAModel, VQAProcessor]:
    return tiny()


@pytest.fixture(scope="module")
def explained(model_and_processor: tuple[VQAModel, VQAProcessor]) -> list[AnswerAttention]:
    model, processor = model_and_processor
    images = [shape_image(), shape_image((40, 40, 60, 60)), shape_image((0, 0, 10, 10))]
    return explain_batch(model, processor, images, QUESTIONS)


def test_cross_attention_sums_to_one_and_padding_gets_zero(
    model_and_processor: tuple[VQAModel, VQAProcessor],
) -> None:
    model, processor = model_and_processor
    batch = processor(QUESTIONS, [shape_image()] * 3, ANSWERS)
    mask = batch["attention_mask"]
    assert (mask == 0).any(), "the questions should differ in length, so that some are padded"
    model.eval()
    with eager_attention(model):
        output = model(**batch, output_attentions=True)
    assert len(output.cross_attentions) == model.config.decoder_config.n_layer
    real_steps = batch["labels"] != -100  # (B, T)
    for weights in output.cross_attentions:  # (B, H, T, S)
        sums = weights.sum(dim=-1)
        torch.testing.assert_close(sums[real_steps[:, None].expand_as(sums)], torch.ones(int(real_steps.sum()) * 4))
        padded = (mask == 0)[:, None, None, :].expand(-1, weights.shape[1], weights.shape[2], -1)
        assert torch.equal(weights[..., : mask.shape[1]][padded], torch.zeros(int(padded.sum())))


def test_explain_splits_question_cls_and_patch_grid(explained: list[AnswerAttention]) -> None:
    layers, heads = 2, 4
    for maps, question in zip(explained, QUESTIONS, strict=True):
        steps, num_tokens = len(maps.answer_tokens), len(maps.question_tokens)
        assert maps.question == question and maps.question_tokens[0] == "[CLS]" and maps.question_tokens[-1] == "[SEP]"
        assert "[PAD]" not in maps.question_tokens
        assert maps.weights.shape == (layers, heads, steps, num_tokens + 1 + 64)
        torch.testing.assert_close(maps.weights.sum(dim=-1), torch.ones(layers, heads, steps))
        assert maps.patch_attention(0, 1).shape == (steps, 8, 8)
        assert maps.question_attention().shape == (steps, num_tokens) and maps.cls_attention(1).shape == (steps,)
        question, cls, patches = maps.question_attention(1, 2), maps.cls_attention(1, 2), maps.patch_attention(1, 2)
        torch.testing.assert_close(question.sum(-1) + cls + patches.sum((1, 2)), torch.ones(steps))
        torch.testing.assert_close(maps.fused("mean", "mean"), maps.weights.mean(dim=(0, 1)))
        torch.testing.assert_close(maps.fused(1, "mean"), maps.weights[1].mean(dim=0))
        torch.testing.assert_close(maps.fused("mean", 3), maps.weights[:, 3].mean(dim=0))
        torch.testing.assert_close(maps.rollout.sum(dim=-1), torch.ones(steps))
        assert (maps.rollout >= 0).all()


def test_explained_answer_is_the_generated_one(
    model_and_processor: tuple[VQAModel, VQAProcessor], explained: list[AnswerAttention]
) -> None:
    model, processor = model_and_processor
    batch = processor(QUESTIONS, [shape_image(), shape_image((40, 40, 60, 60)), shape_image((0, 0, 10, 10))])
    expected = processor.decode_answers(model.eval().generate(**batch))
    assert [maps.answer for maps in explained] == expected
    assert all(maps.answer_tokens[-1] == "</s>" or len(maps.answer_tokens) == 8 for maps in explained)


def test_attention_settings_are_restored(model_and_processor: tuple[VQAModel, VQAProcessor]) -> None:
    model, processor = model_and_processor
    model.train()
    before = [m.config._attn_implementation for m in (model, model.text_encoder, model.image_encoder, model.decoder)]
    explain(model, processor, shape_image(), QUESTIONS[0])
    after = [m.config._attn_implementation for m in (model, model.text_encoder, model.image_encoder, model.decoder)]
    assert before == after == ["sdpa"] * 4
    assert model.training and model.decoder.training
    model.eval()


@pytest.mark.parametrize(("image_size", "patch_size", "grid"), [(64, 8, (8, 8)), (32, 16, (2, 2)), (48, 8, (6, 6))])
def test_patch_grid_follows_the_vit_config(image_size: int, patch_size: int, grid: tuple[int, int]) -> None:
    model, processor = tiny(image_size=image_size, patch_size=patch_size, vision_conv_stem=False)
    maps = explain(model, processor, shape_image(), QUESTIONS[1])
    assert maps.grid == grid and maps.patch_attention("rollout").shape == (len(maps.answer_tokens), *grid)


def test_pooled_fusion_is_refused() -> None:
    model, processor = tiny(fusion="pooled")
    with pytest.raises(ValueError, match="fusion='tokens'"):
        explain(model, processor, shape_image(), QUESTIONS[0])


def test_bad_layer_or_head_names_the_range(explained: list[AnswerAttention]) -> None:
    with pytest.raises(ValueError, match="layer index below 2"):
        explained[0].patch_attention(2)
    with pytest.raises(ValueError, match="head index below 4"):
        select(explained[0].weights, 0, 4)
    with pytest.raises(ValueError, match="rollout combines all heads"):
        explained[0].fused("rollout", 0)


def test_decoder_rollout_of_one_layer_is_its_cross_attention() -> None:
    generator = torch.Generator().manual_seed(0)
    cross = torch.rand(1, 3, 4, 10, generator=generator).softmax(dim=-1)  # (L, H, T, S)
    causal = torch.rand(1, 3, 4, 4, generator=generator).tril().clamp(min=1e-3).tril()
    causal = causal / causal.sum(dim=-1, keepdim=True)
    torch.testing.assert_close(decoder_rollout(causal, cross), cross[0].mean(dim=0))
    two_layers = decoder_rollout(causal.repeat(2, 1, 1, 1), torch.cat([cross, cross.flip(-1)]))
    torch.testing.assert_close(two_layers.sum(dim=-1), torch.ones(4))
    assert not torch.allclose(two_layers, cross[0].mean(dim=0))


def test_plots_are_written_as_png(explained: list[AnswerAttention], tmp_path: Path) -> None:
    for name, figure in [
        ("answer.png", plot_answer_attention(explained[0])),
        ("rollout.png", plot_answer_attention(explained[1], "rollout")),
        ("grid.png", plot_layer_grid(explained[2], head=1)),
    ]:
        path = save_figure(figure, tmp_path / "plots" / name)
        content = path.read_bytes()
        assert content.startswith(PNG_SIGNATURE) and len(content) > 5000, name


def test_top_answers_are_ranked_probabilities(model_and_processor: tuple[VQAModel, VQAProcessor]) -> None:
    model, processor = model_and_processor
    ((greedy, greedy_probability),) = top_answers(model, processor, shape_image(), QUESTIONS[0], k=1)
    assert greedy == explain(model, processor, shape_image(), QUESTIONS[0]).answer
    ranked = top_answers(model, processor, shape_image(), QUESTIONS[0], k=3)
    probabilities = [probability for _, probability in ranked]
    assert len(ranked) == 3 and probabilities == sorted(probabilities, reverse=True)
    assert all(0 < probability <= 1 for probability in probabilities) and sum(probabilities) <= 1 + 1e-5
    # The greedy answer is among the candidates, so the best one is at least as probable.
    assert probabilities[0] >= greedy_probability - 1e-6


def test_predict_cli_prints_answers_and_writes_the_map(
    model_and_processor: tuple[VQAModel, VQAProcessor], tmp_path: Path
) -> None:
    model, processor = model_and_processor
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    image_path = tmp_path / "shape.png"
    shape_image().save(image_path)
    out = tmp_path / "maps" / "attention.png"
    arguments = ["--checkpoint", str(checkpoint), "--image", str(image_path), "--question", QUESTIONS[0]]
    arguments += ["--top-k", "3", "--attention-map", str(out), "--layer", "1"]
    result = subprocess.run(
        [sys.executable, "-m", "vqa.inspection.predict", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == f"question  {QUESTIONS[0]}" and lines[1].startswith("answer")
    assert lines[2] == "top 3" and "attention on the image" in result.stdout
    assert out.read_bytes().startswith(PNG_SIGNATURE)


def test_predict_cli_rejects_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    with pytest.raises(SystemExit):
        predict(["--checkpoint", str(tmp_path), "--image", str(not_an_image), "--question", "what?"])
    assert f"--image: cannot read {not_an_image}" in capsys.readouterr().err
    shape_image().save(tmp_path / "shape.png")
    with pytest.raises(SystemExit):
        predict(["--checkpoint", str(tmp_path), "--image", str(tmp_path / "shape.png"), "--question", "what?"])
    error = capsys.readouterr().err
    assert error.startswith(f"error: checkpoint {tmp_path}: no config.json, ") and len(error.splitlines()) == 1
    assert "expected the `checkpoint` folder of a run" in error


def test_shape_mask_and_patch_coverage() -> None:
    mask = shape_mask(shape_image((8, 16, 23, 31)))  # 16 x 16 pixels, PIL boxes include both corners
    assert mask.shape == (64, 64) and int(mask.sum()) == 256 and mask[16:32, 8:24].all()
    coverage = patch_coverage(mask, (8, 8))
    assert coverage[2:4, 1:3].eq(1).all() and coverage.sum() == 4
    half = patch_coverage(shape_mask(shape_image((0, 0, 3, 7))), (8, 8))  # half of the top-left patch
    assert half[0, 0] == 0.5 and half.sum() == 0.5


def test_attention_on_shape_is_the_area_for_even_attention() -> None:
    coverage = patch_coverage(shape_mask(shape_image((8, 16, 23, 31))), (8, 8))  # 4 of 64 patches
    weights = torch.full((1, 1, 2, 3 + 1 + 64), 1 / 68)
    maps = AnswerAttention("q", "a", ["[CLS]", "q", "[SEP]"], ["a", "</s>"], None, weights, weights[0, 0], (8, 8))
    assert attention_on_shape(maps, coverage, "mean") == pytest.approx(4 / 64)
    focused = torch.zeros(1, 1, 2, 68)
    focused[..., 4 + 2 * 8 + 1] = 1.0  # patch (2, 1), inside the shape
    focused[:, :, 1] = 1 / 68  # the EOS step, which the score leaves out
    maps.weights = focused
    assert attention_on_shape(maps, coverage, 0) == pytest.approx(1.0)


def test_grounding_report_on_easy_vqa(model_and_processor: tuple[VQAModel, VQAProcessor], tmp_path: Path) -> None:
    splits = build_easy_vqa(tmp_path / "cache", EasyVQAOptions(max_questions=40, validation_images=0.25))
    model, processor = model_and_processor
    report = grounding_report(model, processor, splits["validation"], batch_size=8, progress=False)
    assert report["questions"] == len(splits["validation"])
    assert 0.01 < report["shape_area"] < 0.5  # easy-VQA shapes cover a few percent of the image
    assert list(report["views"]) == ["layer 0", "layer 1", "mean", "rollout"]
    for row in report["views"].values():
        assert 0 <= row["attention_on_shape"] <= 1
        assert row["ratio"] == pytest.approx(row["attention_on_shape"] / report["shape_area"])
        assert {"ratio_yes_no", "ratio_other"} <= set(row)
    assert np.isfinite([row["ratio"] for row in report["views"].values()]).all()
