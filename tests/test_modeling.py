"""Behaviour of VQAModel: shapes, loss, masking, fusion, attention outputs, generation, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from transformers import AutoModel

from tests.conftest import BOS, EOS, PAD, make_batch
from vqa import VQAConfig, VQAModel
from vqa.model.encoder_inputs import EncoderInputs

NUM_PATCHES = (64 // 8) ** 2


def memorise(model: VQAModel, batch: dict[str, torch.Tensor], steps: int = 60) -> VQAModel:
    """Train on one batch until its answers are memorised; returns the model in eval mode."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    return model.eval()


def greedy_without_cache(model: VQAModel, batch: dict[str, torch.Tensor], max_new_tokens: int) -> torch.Tensor:
    """Reference decoder: re-runs the whole model on the growing sequence at every step, no KV cache."""
    sequence = torch.full((batch["input_ids"].shape[0], 1), BOS)
    finished = torch.zeros(sequence.shape[0], dtype=torch.bool)
    for _ in range(max_new_tokens):
        logits = model(
            batch["input_ids"], batch["attention_mask"], batch["pixel_values"], decoder_input_ids=sequence
        ).logits
        next_token = logits[:, -1].argmax(-1)
        next_token = torch.where(finished, torch.full_like(next_token, PAD), next_token)
        sequence = torch.cat([sequence, next_token[:, None]], dim=1)
        finished |= next_token == EOS
        if finished.all():
            break
    return sequence[:, 1:]


def test_forward_shapes(tiny_model: VQAModel, batch: dict[str, torch.Tensor]) -> None:
    output = tiny_model(**batch)
    assert output.logits.shape == (3, 4, 1000)
    assert output.loss.ndim == 0 and torch.isfinite(output.loss)
    question_length = batch["input_ids"].shape[1]
    assert output.encoder_attention_mask.shape == (3, question_length + 1 + NUM_PATCHES)
    assert output.cross_attentions is None


def test_decoder_inputs_are_bos_then_answer(tiny_model: VQAModel, batch: dict[str, torch.Tensor]) -> None:
    decoder_input_ids, decoder_attention_mask = tiny_model.decoder_inputs_from_labels(batch["labels"])
    assert decoder_input_ids.tolist() == [[BOS, 5, 6, PAD], [BOS, 7, PAD, PAD], [BOS, 8, 9, 10]]
    assert decoder_attention_mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]


def test_loss_is_mean_over_answer_tokens_and_eos_only(tiny_model: VQAModel, batch: dict[str, torch.Tensor]) -> None:
    output = tiny_model(**batch)
    labels = batch["labels"]
    keep = labels != -100
    expected = F.cross_entropy(output.logits[keep], labels[keep])
    torch.testing.assert_close(output.loss, expected)
    # EOS positions are targets: 3 answers, 3 EOS tokens among the 9 label tokens.
    assert int(keep.sum()) == 9 and int((labels == EOS).sum()) == 3
    # With the Trainer's count, the loss becomes the token sum over that count.
    scaled = tiny_model(**batch, num_items_in_batch=torch.tensor(18)).loss
    torch.testing.assert_close(scaled, expected / 2)


def test_loss_ignores_decoder_padding(tiny_model: VQAModel, batch: dict[str, torch.Tensor]) -> None:
    decoder_input_ids, decoder_attention_mask = tiny_model.decoder_inputs_from_labels(batch["labels"])
    reference = tiny_model(**batch, decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask)
    garbage = decoder_input_ids.masked_fill(decoder_attention_mask == 0, 999)
    changed = tiny_model(**batch, decoder_input_ids=garbage, decoder_attention_mask=decoder_attention_mask)
    torch.testing.assert_close(changed.loss, reference.loss)


def test_eos_is_learned(tiny_model: VQAModel, batch: dict[str, torch.Tensor]) -> None:
    model = memorise(tiny_model, batch)
    predictions = model(**batch).logits.argmax(-1)
    keep = batch["labels"] != -100
    assert torch.equal(predictions[keep], batch["labels"][keep])


@pytest.mark.parametrize("fusion", ["tokens", "pooled"])
def test_question_padding_does_not_change_logits(fusion: str) -> None:
    torch.manual_seed(0)
    model = VQAModel(VQAConfig.tiny(dropout=0.0, fusion=fusion)).eval()
    batch = make_batch()
    padded = dict(batch)
    padded["input_ids"] = F.pad(batch["input_ids"], (0, 5), value=PAD)
    padded["attention_mask"] = F.pad(batch["attention_mask"], (0, 5), value=0)
    torch.testing.assert_close(model(**padded).logits, model(**batch).logits, atol=1e-5, rtol=1e-5)
    # The padded question tokens are really there and masked: changing their ids changes nothing either.
    padded["input_ids"] = padded["input_ids"].masked_fill(padded["attention_mask"] == 0, 123)
    torch.testing.assert_close(model(**padded).logits, model(**batch).logits, atol=1e-5, rtol=1e-5)


def test_image_changes_the_answer_distribution(tiny_model: VQAModel, batch: dict[str, torch.Tensor]) -> None:
    other_images = dict(batch, pixel_values=torch.randn_like(batch["pixel_values"]))
    assert not torch.allclose(tiny_model(**other_images).logits, tiny_model(**batch).logits)


def test_pooled_fusion_gives_one_key(batch: dict[str, torch.Tensor]) -> None:
    model = VQAModel(VQAConfig.tiny(fusion="pooled")).eval()
    fused = model.encode(EncoderInputs.pick(batch))
    assert fused.hidden_states.shape == (3, 1, 128) and fused.attention_mask.tolist() == [[1], [1], [1]]
    assert fused.segments == [("fused", 1)]


def test_cross_attentions_with_eager_attention(tiny_model: VQAModel, batch: dict[str, torch.Tensor]) -> None:
    tiny_model.set_attn_implementation("eager")
    output = tiny_model(**batch, output_attentions=True)
    question_length = batch["input_ids"].shape[1]
    assert len(output.cross_attentions) == 2
    for layer in output.cross_attentions:
        assert layer.shape == (3, 4, 4, question_length + 1 + NUM_PATCHES)
        torch.testing.assert_close(layer.sum(-1), torch.ones(3, 4, 4))
        # The first question's two padded tokens receive no attention at all.
        assert torch.all(layer[0, :, :, question_length - 2 : question_length] == 0)


def test_cross_attentions_with_sdpa_raise_clearly(tiny_model: VQAModel, batch: dict[str, torch.Tensor]) -> None:
    assert tiny_model.decoder.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="eager attention"):
        tiny_model(**batch, output_attentions=True)


def test_generate_with_cache_equals_greedy_loop_and_stops_at_eos(
    tiny_model: VQAModel, batch: dict[str, torch.Tensor]
) -> None:
    model = memorise(tiny_model, batch)
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values")}
    generated = model.generate(**inputs, max_new_tokens=8)
    reference = greedy_without_cache(model, batch, max_new_tokens=8)
    assert torch.equal(generated, reference)
    # Memorised answers come back and decoding stops once every row has written EOS.
    assert generated.tolist() == [[5, 6, EOS, PAD], [7, EOS, PAD, PAD], [8, 9, 10, EOS]]


def test_generate_untrained_model_runs_to_the_limit(tiny_model: VQAModel, batch: dict[str, torch.Tensor]) -> None:
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values")}
    generated = tiny_model.generate(**inputs, max_new_tokens=5)
    assert torch.equal(generated, greedy_without_cache(tiny_model, batch, max_new_tokens=5))
    assert generated.shape[0] == 3 and generated.shape[1] <= 5


def test_beam_search_finds_memorised_answers(tiny_model: VQAModel, batch: dict[str, torch.Tensor]) -> None:
    model = memorise(tiny_model, batch)
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values")}
    generated = model.generate(**inputs, max_new_tokens=6, num_beams=3)
    assert generated.tolist() == [[5, 6, EOS, PAD], [7, EOS, PAD, PAD], [8, 9, 10, EOS]]


def test_save_and_load_round_trip(tiny_model: VQAModel, batch: dict[str, torch.Tensor], tmp_path: Path) -> None:
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = VQAModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded(**batch).logits, tiny_model(**batch).logits, atol=0, rtol=0)
    assert loaded.config.fusion == "tokens" and loaded.config.decoder_config.add_cross_attention
    # Registered with the Auto classes.
    auto_loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(auto_loaded, VQAModel)
    # GPT-2's LM head stays tied to its token embeddings after loading.
    assert loaded.decoder.lm_head.weight.data_ptr() == loaded.decoder.transformer.wte.weight.data_ptr()


def test_frozen_setting_survives_save_and_load(tmp_path: Path) -> None:
    VQAModel(VQAConfig.tiny(freeze="encoders")).save_pretrained(tmp_path)
    loaded = VQAModel.from_pretrained(tmp_path)
    assert not any(p.requires_grad for p in loaded.text_encoder.parameters())
    assert all(p.requires_grad for p in loaded.decoder.parameters())


def test_unknown_fusion_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="fusion: got 'concat', expected one of tokens, pooled"):
        VQAConfig.tiny(fusion="concat")


def test_forward_without_decoder_inputs_or_labels_is_a_clear_error(
    tiny_model: VQAModel, batch: dict[str, torch.Tensor]
) -> None:
    with pytest.raises(ValueError, match="decoder_input_ids or labels"):
        tiny_model(batch["input_ids"], batch["attention_mask"], batch["pixel_values"])


def test_gradient_checkpointing_gives_the_same_gradients(batch: dict[str, torch.Tensor]) -> None:
    gradients = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = VQAModel(VQAConfig.tiny(dropout=0.0)).train()
        if checkpointing:
            # transformers 5.23 renamed the method; 5.17 (the GPU image) has only the old name.
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
            assert model.decoder.transformer.gradient_checkpointing
        model(**batch).loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, msg=name)


def test_conditioned_bos_starts_as_plain_bos_and_learns(batch: dict[str, torch.Tensor]) -> None:
    torch.manual_seed(0)
    plain = VQAModel(VQAConfig.tiny(dropout=0.0)).eval()
    conditioned = VQAModel(VQAConfig.tiny(dropout=0.0, conditioned_bos=True)).eval()
    conditioned.load_state_dict(plain.state_dict(), strict=False)  # the new map stays at its zero init
    torch.testing.assert_close(conditioned(**batch).logits, plain(**batch).logits)
    conditioned.train()
    conditioned(**batch).loss.backward()
    assert conditioned.bos_conditioning.weight.grad.abs().sum() > 0


def test_generate_with_conditioned_bos_equals_greedy_loop(batch: dict[str, torch.Tensor]) -> None:
    torch.manual_seed(0)
    model = memorise(VQAModel(VQAConfig.tiny(dropout=0.0, conditioned_bos=True)), batch)
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values")}
    generated = model.generate(**inputs, max_new_tokens=6)
    assert torch.equal(generated, greedy_without_cache(model, batch, max_new_tokens=6))
    assert generated.tolist() == [[5, 6, EOS, PAD], [7, EOS, PAD, PAD], [8, 9, 10, EOS]]


def test_checkpoint_of_the_earlier_layout_loads_and_saves_in_todays(tmp_path: Path) -> None:
    """tests/fixtures/legacy_checkpoint was written by the code before `vqa.model.fusion` (commit f280535: projections
    and modality embeddings at the top level), with the logits it gave on a fixed batch."""
    folder = Path(__file__).parent / "fixtures" / "legacy_checkpoint"
    expected = torch.load(folder / "expected.pt")
    model = VQAModel.from_pretrained(folder).eval()
    # The stored logits came from another CPU, whose kernels round differently (6.7e-8 apart on an AMD EPYC against
    # the Xeon that wrote them); a weight loaded into the wrong place moves logits by far more than this tolerance.
    same_weights = {"atol": 1e-6, "rtol": 1e-5}
    with torch.no_grad():
        torch.testing.assert_close(model(**expected["batch"]).logits, expected["logits"], **same_weights)
    model.save_pretrained(tmp_path)
    saved = safetensors.torch.load_file(tmp_path / "model.safetensors")
    assert "fusion.text_projection.linear.weight" in saved and "text_projection.linear.weight" not in saved
    with torch.no_grad():
        reloaded = VQAModel.from_pretrained(tmp_path).eval()(**expected["batch"]).logits
    torch.testing.assert_close(reloaded, expected["logits"], **same_weights)
