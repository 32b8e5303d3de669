"""Freezing from config: presets, component lists, optimizer steps, eval mode and the parameter table."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import make_batch
from vqa import VQAConfig, VQAModel
from vqa.model.encoder_inputs import EncoderInputs
from vqa.model.freezing import COMPONENTS, FREEZE_PRESETS, component_of, parameter_counts, resolve_freeze


def snapshot(model: VQAModel) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in model.named_parameters()}


@pytest.mark.parametrize("preset", sorted(FREEZE_PRESETS))
def test_optimizer_step_moves_only_trainable_parameters(preset: str) -> None:
    torch.manual_seed(0)
    model = VQAModel(VQAConfig.tiny(freeze=preset)).train()
    before = snapshot(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(**make_batch()).loss.backward()
    optimizer.step()
    frozen = FREEZE_PRESETS[preset]
    for name, parameter in model.named_parameters():
        if component_of(name) in frozen:
            assert not parameter.requires_grad and parameter.grad is None, name
            assert torch.equal(parameter, before[name]), name
        elif parameter.grad is not None and parameter.grad.abs().sum() > 0:
            assert not torch.equal(parameter, before[name]), name
    # Every component that trains received some gradient.
    for component in set(COMPONENTS) - set(frozen):
        grads = [p.grad for n, p in model.named_parameters() if component_of(n) == component]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), component


def test_decoder_preset_keeps_cross_attention_trainable() -> None:
    model = VQAModel(VQAConfig.tiny(freeze="decoder"))
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert "decoder.transformer.h.0.crossattention.c_attn.weight" in trainable
    assert "decoder.transformer.h.1.ln_cross_attn.weight" in trainable
    assert "decoder.transformer.h.0.attn.c_attn.weight" not in trainable
    assert "decoder.transformer.wte.weight" not in trainable
    assert "fusion.text_projection.linear.weight" in trainable


def test_all_preset_trains_only_projections_and_cross_attention() -> None:
    counts = parameter_counts(VQAModel(VQAConfig.tiny(freeze="all")))
    assert {name for name, (trainable, _) in counts.items() if trainable} == {"projections", "cross_attention"}
    assert all(total > 0 for _, total in counts.values())


def test_component_list_is_accepted() -> None:
    model = VQAModel(VQAConfig.tiny(freeze=["image_encoder", "projections"]))
    counts = parameter_counts(model)
    assert counts["image_encoder"][0] == 0 and counts["projections"][0] == 0
    assert counts["text_encoder"][0] == counts["text_encoder"][1]


def test_frozen_encoders_stay_in_eval_mode() -> None:
    model = VQAModel(VQAConfig.tiny(freeze="encoders")).train()
    assert not model.text_encoder.training and not model.image_encoder.training
    assert model.decoder.training and model.fusion.training
    fully_frozen = VQAModel(VQAConfig.tiny(freeze=["decoder", "cross_attention"])).train()
    assert not fully_frozen.decoder.training


@pytest.mark.parametrize("freeze", ["encoders", "nothing"])
def test_frozen_encoders_run_without_autograd(freeze: str) -> None:
    model = VQAModel(VQAConfig.tiny(freeze=freeze)).train()
    grad_enabled: dict[str, bool] = {}
    for name in ("text_encoder", "image_encoder"):
        getattr(model, name).register_forward_hook(
            lambda module, args, output, name=name: grad_enabled.__setitem__(name, torch.is_grad_enabled())
        )
    batch = make_batch()
    fused = model.encode(EncoderInputs.pick(batch))
    expected = freeze == "nothing"
    assert grad_enabled == {"text_encoder": expected, "image_encoder": expected}
    assert fused.hidden_states.requires_grad  # the projections train either way


@pytest.mark.parametrize("spec", ["encoder", ["text_encoder", "vision"]])
def test_unknown_freeze_name_is_a_clear_error(spec: str | list[str]) -> None:
    with pytest.raises(ValueError, match="freeze: unknown"):
        VQAConfig.tiny(freeze=spec)


def test_resolve_freeze_accepts_single_component() -> None:
    assert resolve_freeze("cross_attention") == frozenset({"cross_attention"})


def test_parameter_table_totals_match_model() -> None:
    model = VQAModel(VQAConfig.tiny(freeze="encoders"))
    table = model.parameter_table()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert table.splitlines()[-1].split() == ["total", f"{trainable:,}", f"{total:,}"]
    assert [line.split()[0] for line in table.splitlines()[1:-1]] == list(COMPONENTS)
