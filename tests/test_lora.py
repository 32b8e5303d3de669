"""LoRA through peft: which parameters train, saving and loading with adapters, merging, freezing, the cache."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.conftest import make_batch
from vqa import VQAConfig, VQAModel
from vqa.config_checks import validate_config
from vqa.errors import ConfigError
from vqa.model.encoder_inputs import EncoderInputs
from vqa.model.freezing import component_of
from vqa.training.feature_cache import build_lookups

CONF = Path(__file__).resolve().parents[1] / "conf"
DECODER_LORA = {"targets": ["decoder"], "r": 4, "alpha": 8}


def lora_model(lora: dict, **options: object) -> VQAModel:
    torch.manual_seed(0)
    return VQAModel(VQAConfig.tiny(dropout=0.0, lora=lora, **options))


def adapters(model: VQAModel) -> dict[str, torch.nn.Parameter]:
    return {name: parameter for name, parameter in model.named_parameters() if ".lora_" in name}


def test_adapters_on_the_decoder_with_frozen_encoders_train_what_they_should() -> None:
    model = lora_model(DECODER_LORA, freeze="encoders")
    names = adapters(model)
    # GPT-2's self-attention and MLP layers (c_attn, c_proj, c_fc, c_proj per block), not its cross-attention.
    assert len(names) == 2 * 2 * 4 and {component_of(name) for name in names} == {"decoder"}
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    components = {component_of(name) for name in trainable - set(names)}
    assert components == {"projections", "cross_attention"}  # the decoder's own weights and the encoders freeze
    width, r = 128, 4
    # Per block: c_attn (128 -> 384), attn.c_proj (128 -> 128), c_fc (128 -> 512), mlp.c_proj (512 -> 128).
    expected = 2 * r * ((width + 3 * width) + (width + width) + (width + 4 * width) + (4 * width + width))
    assert sum(parameter.numel() for parameter in names.values()) == expected
    row = next(line for line in model.parameter_table().splitlines() if "of which LoRA" in line)
    assert row.split()[-2:] == [f"{expected:,}", f"{expected:,}"]  # trainable, total
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    model.train()
    model(**make_batch()).loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    moved = {name for name, parameter in model.named_parameters() if not torch.equal(parameter, before[name])}
    assert {name for name in moved if "lora_B" in name} == {name for name in names if "lora_B" in name}
    assert moved <= trainable


def test_adapters_save_reload_and_merge(tmp_path: Path) -> None:
    model = lora_model({"targets": ["decoder", "cross_attention", "image_encoder"], "r": 2}).train()
    batch = make_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    model.eval().save_pretrained(tmp_path / "adapted")
    loaded = VQAModel.from_pretrained(tmp_path / "adapted").eval()
    assert loaded.config.lora["targets"] == ["decoder", "cross_attention", "image_encoder"]
    with torch.no_grad():
        adapted_logits = model(**batch).logits
        torch.testing.assert_close(loaded(**batch).logits, adapted_logits, atol=0, rtol=0)
        assert loaded.merge_lora() == len(adapters(model)) // 2  # one A and one B per layer
        assert adapters(loaded) == {} and loaded.config.lora is None
        merged_logits = loaded(**batch).logits
    torch.testing.assert_close(merged_logits, adapted_logits, atol=1e-5, rtol=1e-5)
    loaded.save_pretrained(tmp_path / "merged")
    plain = VQAModel.from_pretrained(tmp_path / "merged").eval()
    assert adapters(plain) == {} and all(parameter.requires_grad for parameter in plain.parameters())
    with torch.no_grad():
        torch.testing.assert_close(plain(**batch).logits, merged_logits, atol=0, rtol=0)


def test_a_frozen_encoder_with_adapters_trains_them_and_is_not_cached(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = lora_model({"targets": ["text_encoder", "image_encoder"]}, freeze="encoders").train()
    fused = model.encode(EncoderInputs.pick(make_batch()))
    fused.hidden_states.sum().backward()
    text_adapters = [parameter for name, parameter in adapters(model).items() if name.startswith("text_encoder.")]
    assert text_adapters and all(parameter.grad is not None for parameter in text_adapters)
    assert model.text_encoder.training  # adapter dropout is live; a frozen encoder without adapters stays in eval
    with caplog.at_level(logging.INFO, logger="vqa.training.feature_cache"):
        assert build_lookups(model, processor=None, splits=[], cache_dir=tmp_path) == {}
    assert "feature cache: not used for image_encoder, which has LoRA adapters (model.lora.targets)" in caplog.text
    assert "feature cache: not used for text_encoder, which has LoRA adapters" in caplog.text


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.lora.targets=[encoder]", "model.lora.targets: unknown component 'encoder'; expected some of decoder"),
        ("model.lora.r=0", "model.lora.r: got 0, expected a positive integer"),
        ("+model.lora.rank=4", "model.lora: unknown key 'rank'; expected targets, r, alpha, dropout"),
    ],
)
def test_wrong_lora_settings_fail_in_one_line(override: str, message: str) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=[override])
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)
