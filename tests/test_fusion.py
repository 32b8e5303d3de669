"""Fusion as modules: the built-in fusions' segments, and a new fusion added as one class plus one config value,
without touching modeling.py, training.py or attention.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from hydra import compose, initialize_config_dir
from torch import nn

from tests.conftest import make_batch
from vqa import VQAConfig, VQAModel
from vqa.config_checks import validate_config
from vqa.errors import ConfigError
from vqa.inspection.attention import map_refusal
from vqa.instantiate import instantiate
from vqa.model.encoder_inputs import EncoderInputs
from vqa.model.fusion import FusedSequence, Fusion, repeat_rows

CONF = Path(__file__).resolve().parents[1] / "conf"
TOY = "tests.test_fusion.QuestionTokensAndMeanImage"


class QuestionTokensAndMeanImage(Fusion):
    """A toy third fusion: the question tokens as keys, plus one key for the whole image (its mean position),
    scaled by a learned gain."""

    segment_names = ("question", "image_mean")
    own_settings = ("image_gain_init",)

    def __init__(self, config: VQAConfig) -> None:
        super().__init__(config)
        # Its own setting, read from the config: `+model.image_gain_init=...` reaches it through the model builder.
        self.image_gain = nn.Parameter(torch.full((), float(getattr(config, "image_gain_init", 1.0))))

    def forward(
        self,
        question_states: torch.FloatTensor | None,
        image_states: torch.FloatTensor | None,
        inputs: EncoderInputs,
    ) -> FusedSequence:
        question = repeat_rows(self.text_projection(question_states), inputs.question_index)  # (B, Lq, Hd)
        image = self.image_gain * self.image_projection(image_states.mean(dim=1, keepdim=True))  # (N, 1, Hd)
        image = repeat_rows(image, inputs.image_index)
        mask = torch.cat([repeat_rows(inputs.attention_mask, inputs.question_index), mask_of(image)], dim=1)
        segments = [("question", question.shape[1]), ("image_mean", 1)]
        return FusedSequence(torch.cat([question, image], dim=1), mask, segments)


def mask_of(states: torch.Tensor) -> torch.LongTensor:
    return torch.ones(states.shape[:2], dtype=torch.long, device=states.device)


def test_built_in_fusions_name_their_segments() -> None:
    batch = make_batch()
    for fusion, segments in (("tokens", [("question", 7), ("image", 65)]), ("pooled", [("fused", 1)])):
        output = VQAModel(VQAConfig.tiny(fusion=fusion)).eval()(**batch)
        assert output.encoder_segments == segments
        assert output.encoder_attention_mask.shape[1] == sum(length for _, length in segments)


def test_a_new_fusion_is_one_class_and_one_config_value(tmp_path: Path) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        validate_config(compose(config_name="config", overrides=[f"model.fusion={TOY}"]))
    torch.manual_seed(0)
    model = VQAModel(VQAConfig.tiny(dropout=0.0, fusion=TOY)).train()
    assert isinstance(model.fusion, QuestionTokensAndMeanImage)
    batch = make_batch()
    output = model(**batch)
    assert output.encoder_segments == [("question", 7), ("image_mean", 1)]
    output.loss.backward()
    assert model.fusion.image_gain.grad is not None
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    assert float(model.fusion.image_gain.detach()) != 1.0
    # Its parameters count as projections, like the built-in fusions'.
    assert "projections" in model.parameter_table() and "fusion.image_gain" in dict(model.named_parameters())
    model.eval().save_pretrained(tmp_path)
    loaded = VQAModel.from_pretrained(tmp_path).eval()
    assert loaded.config.fusion == TOY and torch.equal(loaded.fusion.image_gain, model.fusion.image_gain)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)
    # A setting of its own travels from the config node through the builder to VQAConfig and the checkpoint.
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=[f"model.fusion={TOY}", "+model.image_gain_init=0.5"])
    split = Dataset.from_dict({"question": ["what is it?"] * 4, "multiple_choice_answer": ["red", "blue"] * 2})
    built, _ = instantiate(cfg.model, train_split=split)
    assert float(built.fusion.image_gain.detach()) == 0.5 and built.config.image_gain_init == 0.5
    # A misspelt setting is refused before anything is built, instead of being stored and ignored.
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        typo = compose(config_name="config", overrides=[f"model.fusion={TOY}", "+model.image_gain_int=0.5"])
    with pytest.raises(ConfigError, match=r"^model\.image_gain_int: not a setting .*; did you mean image_gain_init\?$"):
        validate_config(typo)
    # Attention maps need question and image tokens as keys: this fusion is refused in one line.
    assert map_refusal(loaded) == (
        f"fusion={TOY!r} has the segments (question, image_mean); attention maps need the question and image "
        "tokens as keys, as fusion='tokens' gives"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("concat", "got 'concat', expected one of tokens, pooled, resampler or the import path"),
        ("tests.test_fusion.Missing", "cannot import 'tests.test_fusion.Missing'"),
        ("tests.test_fusion.mask_of", "'tests.test_fusion.mask_of' is not a vqa.model.fusion.Fusion subclass"),
    ],
)
def test_a_wrong_fusion_is_one_line(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        VQAConfig.tiny(fusion=value)
    assert "\n" not in str(error.value)
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="config", overrides=[f"model.fusion={value}"])
    with pytest.raises(ConfigError, match=f"model.fusion: {message}"):
        validate_config(cfg)
