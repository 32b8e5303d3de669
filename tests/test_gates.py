"""Gated cross-attention: the decoder starts as its own language model, the gates learn, save, decode and log."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.conftest import make_batch, one_sgd_step_arguments
from tests.test_modeling import greedy_without_cache, memorise
from vqa import VQAConfig, VQAModel
from vqa.model.freezing import component_of
from vqa.model.gates import gate_values
from vqa.training.trainer import VQATrainer


def gated_model() -> VQAModel:
    torch.manual_seed(0)
    return VQAModel(VQAConfig.tiny(dropout=0.0, cross_attention_gate=True, conditioned_bos=True)).eval()


def test_at_init_the_logits_are_the_decoders_own_without_encoder_input() -> None:
    model = gated_model()
    batch = make_batch()
    decoder_input_ids, decoder_attention_mask = model.decoder_inputs_from_labels(batch["labels"])
    with torch.no_grad():
        fused = model(**batch).logits
        alone = model.decoder(input_ids=decoder_input_ids, attention_mask=decoder_attention_mask).logits
        # Without the gates the same weights do read the question and image.
        ungated = VQAModel(VQAConfig.tiny(dropout=0.0, conditioned_bos=True)).eval()
        ungated.load_state_dict({k: v for k, v in model.state_dict().items() if not k.endswith(".gate")})
        reading = ungated(**batch).logits
    torch.testing.assert_close(fused, alone, atol=0, rtol=0)
    assert not torch.allclose(reading, alone)
    assert gate_values(model.decoder) == {"cross_attention_gate/0": 0.0, "cross_attention_gate/1": 0.0}
    assert component_of("decoder.transformer.h.0.crossattention.gate") == "cross_attention"


def test_gates_open_with_training_and_survive_a_round_trip(tmp_path: Path) -> None:
    batch = make_batch()
    model = memorise(gated_model(), batch, steps=30)
    assert all(value != 0.0 for value in gate_values(model.decoder).values())
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "pixel_values")}
    # The KV-cache generation path goes through the gates too.
    assert torch.equal(model.generate(**inputs, max_new_tokens=6), greedy_without_cache(model, batch, 6))
    model.save_pretrained(tmp_path)
    loaded = VQAModel.from_pretrained(tmp_path).eval()
    assert gate_values(loaded.decoder) == gate_values(model.decoder)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)


def test_gate_values_are_logged_during_training(tmp_path: Path) -> None:
    batch = make_batch(batch_size=6, seed=1)
    rows = [{key: value[row] for key, value in batch.items()} for row in range(6)]
    arguments = one_sgd_step_arguments(str(tmp_path), per_device_batch=3, accumulation=1)
    arguments.max_steps, arguments.logging_steps = 2, 1
    trainer = VQATrainer(
        model=gated_model().train(), args=arguments, train_dataset=rows, processor=None, group_by_image=False
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2 and logged[0]["cross_attention_gate/0"] != 0.0
    assert logged[-1]["cross_attention_gate/1"] == gate_values(trainer.model.decoder)["cross_attention_gate/1"]
