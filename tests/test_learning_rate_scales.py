"""Per-component learning rates (`trainer.learning_rate_scales`): each component's weights move by its own rate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import make_batch, one_sgd_step_arguments
from vqa import VQAConfig, VQAModel
from vqa.config_checks import check_learning_rate_scales
from vqa.errors import ConfigError
from vqa.model.freezing import component_of
from vqa.training.trainer import VQATrainer


def sgd_step(tmp_path: Path, scales: dict[str, float] | None) -> tuple[dict[str, torch.Tensor], VQATrainer]:
    """The weight changes of one plain-SGD step at base rate 1 on a fixed batch, and the trainer that made it."""
    torch.manual_seed(0)
    model = VQAModel(VQAConfig.tiny(dropout=0.0)).train()
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    batch = make_batch(batch_size=4, seed=2)
    rows = [{key: value[row] for key, value in batch.items()} for row in range(4)]
    arguments = one_sgd_step_arguments(str(tmp_path), per_device_batch=4, accumulation=1)
    arguments.weight_decay = 0.01  # so that the groups' decay choice shows in the weights too
    trainer = VQATrainer(
        model=model,
        args=arguments,
        train_dataset=rows,
        processor=None,
        group_by_image=False,
        learning_rate_scales=scales,
    )
    trainer.train()
    changes = {name: parameter.detach() - before[name] for name, parameter in model.named_parameters()}
    return changes, trainer


def test_each_component_moves_by_its_own_rate(tmp_path: Path) -> None:
    scales = {"image_encoder": 10.0, "decoder": 0.5}
    plain, _ = sgd_step(tmp_path / "plain", None)
    scaled, trainer = sgd_step(tmp_path / "scaled", scales)
    for name, change in scaled.items():
        # Within float32 rounding of weights near 1, magnified by the scale.
        expected = plain[name] * scales.get(component_of(name), 1.0)
        torch.testing.assert_close(change, expected, rtol=1e-4, atol=2e-6, msg=name)
    assert any(plain[name].abs().sum() > 0 for name in plain if component_of(name) == "image_encoder")
    # Every trainable weight is in exactly one group, and decay follows the Trainer's own choice of weights.
    grouped = [parameter for group in trainer.optimizer.param_groups for parameter in group["params"]]
    assert len(grouped) == len({id(parameter) for parameter in grouped}) == len(list(trainer.model.parameters()))
    decayed = set(trainer.get_decay_parameter_names(trainer.model))
    names = {id(parameter): name for name, parameter in trainer.model.named_parameters()}
    for group in trainer.optimizer.param_groups:
        assert {names[id(parameter)] in decayed for parameter in group["params"]} == {group["weight_decay"] > 0}


@pytest.mark.parametrize(
    ("scales", "message"),
    [
        ({"vision": 2.0}, "unknown component 'vision'; expected some of text_encoder, image_encoder"),
        ({"decoder": 0}, "trainer.learning_rate_scales.decoder: got 0, expected a positive number"),
        ([2.0], "expected a mapping such as {image_encoder: 3.0}"),
    ],
)
def test_wrong_scales_are_one_line(scales: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}").replace("(", r"\(")):
        check_learning_rate_scales(scales)
