"""Assembling VQAModel from DistilBERT, ViT and GPT-2 checkpoints in local folders (the real from_pretrained path)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import DistilBertModel, GPT2LMHeadModel, ViTModel

from tests.conftest import make_batch
from vqa import VQAConfig, VQAModel


@pytest.fixture(scope="module")
def component_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random-init encoders and decoder written with save_pretrained, as a hub download would leave them."""
    root = tmp_path_factory.mktemp("components")
    config = VQAConfig.tiny()
    torch.manual_seed(0)
    text_config = config.text_config
    vision_config = config.vision_config
    decoder_config = config.decoder_config
    decoder_config.add_cross_attention = False  # a plain GPT-2 checkpoint has no cross-attention
    folders = {"text": root / "distilbert", "image": root / "vit", "decoder": root / "gpt2"}
    DistilBertModel(text_config).save_pretrained(folders["text"])
    ViTModel(vision_config).save_pretrained(folders["image"])  # with its pooler, like facebook/dino-vitb16
    GPT2LMHeadModel(decoder_config).save_pretrained(folders["decoder"])
    return folders


def test_components_load_their_weights(component_folders: dict[str, Path]) -> None:
    model = VQAModel.from_pretrained_components(
        component_folders["text"], component_folders["image"], component_folders["decoder"], freeze="encoders"
    )
    reference_text = DistilBertModel.from_pretrained(component_folders["text"])
    reference_decoder = GPT2LMHeadModel.from_pretrained(component_folders["decoder"])
    for name, parameter in reference_text.named_parameters():
        assert torch.equal(model.text_encoder.get_parameter(name), parameter), name
    for name, parameter in reference_decoder.named_parameters():
        assert torch.equal(model.decoder.get_parameter(name), parameter), name
    assert model.image_encoder.pooler is None
    assert model.config.decoder_config.add_cross_attention
    assert hasattr(model.decoder.transformer.h[0], "crossattention")
    assert not any(p.requires_grad for p in model.image_encoder.parameters())
    output = model(**make_batch())
    assert output.logits.shape == (3, 4, 1000) and torch.isfinite(output.loss)


def test_assembled_model_round_trips(component_folders: dict[str, Path], tmp_path: Path) -> None:
    model = VQAModel.from_pretrained_components(
        component_folders["text"], component_folders["image"], component_folders["decoder"], fusion="pooled"
    ).eval()
    model.save_pretrained(tmp_path)
    loaded = VQAModel.from_pretrained(tmp_path).eval()
    batch = make_batch()
    torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)
    assert loaded.config.fusion == "pooled"


def test_adapters_go_onto_the_pretrained_weights(component_folders: dict[str, Path]) -> None:
    model = VQAModel.from_pretrained_components(
        component_folders["text"],
        component_folders["image"],
        component_folders["decoder"],
        lora={"targets": ["text_encoder", "decoder"], "r": 2},
        cross_attention_gate=True,
    )
    reference = DistilBertModel.from_pretrained(component_folders["text"])
    layer = model.text_encoder.transformer.layer[0].attention.q_lin
    assert torch.equal(layer.base_layer.weight, reference.transformer.layer[0].attention.q_lin.weight)
    assert not layer.base_layer.weight.requires_grad and layer.lora_A["default"].weight.requires_grad
    assert model.config.lora["targets"] == ["text_encoder", "decoder"] and hasattr(
        model.decoder.transformer.h[0].crossattention, "gate"
    )
    output = model(**make_batch())
    assert torch.isfinite(output.loss)
