"""FLOPs by component: they add up to torch's own total, and backward follows the trainable components."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.conftest import make_batch
from vqa import VQAConfig, VQAModel
from vqa.model.flops import COMPONENTS, component_of_module, flops_by_component


def test_module_names_map_to_components() -> None:
    assert component_of_module("VQAModel.text_encoder.transformer.layer.0.attention.q_lin") == "text_encoder"
    assert component_of_module("VQAModel.decoder.transformer.h.1.crossattention.c_attn") == "cross_attention"
    assert component_of_module("VQAModel.decoder.transformer.h.1.ln_cross_attn") == "cross_attention"
    assert component_of_module("VQAModel.decoder.transformer.h.1.attn.c_attn") == "decoder"
    assert component_of_module("VQAModel.decoder.lm_head") == "lm_head"
    assert component_of_module("VQAModel.fusion.image_projection.linear") == "fusion"
    assert component_of_module("VQAModel") == "other"


def training_step(model: VQAModel, batch: dict[str, torch.Tensor]) -> None:
    model(**batch).loss.backward()


def loss(model: VQAModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).loss


def test_components_add_up_to_the_flop_counters_total() -> None:
    torch.manual_seed(0)
    model, batch = VQAModel(VQAConfig.tiny(dropout=0.0)).train(), make_batch()
    counts = flops_by_component(lambda: loss(model, batch))
    reference = FlopCounterMode(display=False)
    with reference:
        training_step(model, batch)
    assert set(counts) == set(COMPONENTS)
    assert sum(sum(phases.values()) for phases in counts.values()) == reference.get_total_flops()
    for component in ("text_encoder", "image_encoder", "fusion", "decoder", "cross_attention", "lm_head"):
        # Matmuls cost about twice their forward FLOPs in backward (input and weight gradients).
        assert counts[component]["forward"] > 0, component
        assert 0.9 * counts[component]["forward"] <= counts[component]["backward"], component


def test_frozen_encoders_cost_no_backward() -> None:
    torch.manual_seed(0)
    model, batch = VQAModel(VQAConfig.tiny(dropout=0.0, freeze="encoders")).train(), make_batch()
    counts = flops_by_component(lambda: loss(model, batch))
    assert counts["text_encoder"]["backward"] == counts["image_encoder"]["backward"] == 0
    assert counts["image_encoder"]["forward"] > 0 and counts["decoder"]["backward"] > 0
