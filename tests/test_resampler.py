"""fusion=resampler: K latent image keys, shared rows, attention maps traced back to the patches, save and reload."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.conftest import make_batch
from tests.test_attention import QUESTIONS, shape_image, tiny
from vqa import VQAConfig, VQAModel
from vqa.config_checks import validate_config
from vqa.errors import ConfigError
from vqa.inspection.attention import explain
from vqa.model.encoder_inputs import EncoderInputs

CONF = Path(__file__).resolve().parents[1] / "conf"
LATENTS = 8


def resampler_model(**options: object) -> VQAModel:
    torch.manual_seed(0)
    config = VQAConfig.tiny(dropout=0.0, fusion="resampler", resampler={"latents": LATENTS, "layers": 2}, **options)
    return VQAModel(config).eval()


def test_the_decoder_reads_question_tokens_and_k_latents() -> None:
    model = resampler_model()
    batch = make_batch()
    output = model(**batch)
    assert output.encoder_segments == [("question", 7), ("image", LATENTS)]
    fused = model.encode(EncoderInputs.pick(batch))
    assert fused.hidden_states.shape == (3, 7 + LATENTS, 128)
    # Each latent's rollout is a distribution over the 1 + 64 encoder positions of its image.
    assert fused.image_sources.shape == (3, LATENTS, 65)
    torch.testing.assert_close(fused.image_sources.sum(dim=-1), torch.ones(3, LATENTS))
    assert (fused.image_sources >= 0).all()


def test_shared_images_give_the_loss_and_gradients_of_repeated_ones() -> None:
    model = resampler_model().train()
    batch = make_batch(batch_size=6)
    images, image_index = batch["pixel_values"][:2], torch.tensor([0, 1, 1, 0, 0, 1])
    shared = model(**{**batch, "pixel_values": images, "image_index": image_index})
    shared.loss.backward()
    shared_gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    repeated = model(**{**batch, "pixel_values": images[image_index]})
    repeated.loss.backward()
    torch.testing.assert_close(shared.logits, repeated.logits, atol=1e-5, rtol=1e-5)
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            torch.testing.assert_close(shared_gradients[name], parameter.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_trains_a_step_saves_and_reloads(tmp_path: Path) -> None:
    model = resampler_model().train()
    batch = make_batch()
    model(**batch).loss.backward()
    resampler = model.fusion.resampler
    assert resampler.latents.grad is not None and resampler.layers[0].attention.in_proj_weight.grad is not None
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.eval().save_pretrained(tmp_path)
    loaded = VQAModel.from_pretrained(tmp_path).eval()
    assert loaded.config.resampler == {"latents": LATENTS, "layers": 2, "heads": 4}
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)


@pytest.mark.parametrize("inputs", ["question_only", "image_only"])
def test_blind_models_with_a_resampler(inputs: str) -> None:
    model = resampler_model(inputs=inputs).train()
    output = model(**make_batch())
    assert [name for name, _ in output.encoder_segments] == ["question" if inputs == "question_only" else "image"]
    # What DDP needs: every trainable parameter gets a gradient (the resampler is untrained without images).
    output.loss.backward()
    assert [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_attention_maps_trace_through_the_latents_to_the_patches() -> None:
    model, processor = tiny(fusion="resampler", resampler={"latents": LATENTS})
    maps = explain(model, processor, shape_image(), QUESTIONS[0])
    steps = len(maps.answer_tokens)
    assert maps.grid == (8, 8) and maps.image_prefix == 1
    assert maps.weights.shape[-1] == len(maps.question_tokens) + 1 + 64  # over encoder positions, not latents
    torch.testing.assert_close(maps.weights.sum(dim=-1), torch.ones(maps.weights.shape[:-1]))
    torch.testing.assert_close(maps.rollout.sum(dim=-1), torch.ones(steps))
    assert maps.patch_attention("rollout").shape == (steps, 8, 8)
    assert maps.patch_attention(0).sum() > 0


def test_wrong_resampler_settings_fail_in_one_line() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=["model.fusion=resampler", "model.resampler.latents=0"])
    with pytest.raises(ConfigError, match=r"model\.resampler\.latents: got 0, expected a positive integer"):
        validate_config(cfg)
