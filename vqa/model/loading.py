"""Loading a run's saved model and processor (its `checkpoint/` folder), with one line for a folder that is not one."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from vqa.errors import CheckpointError, one_line
from vqa.model.configuration import VQAConfig
from vqa.model.fusion import fusion_class
from vqa.model.modeling import VQAModel
from vqa.model.processing import ANSWER_TOKENIZER_DIR, PROCESSOR_CONFIG, QUESTION_TOKENIZER_DIR, VQAProcessor


def load_checkpoint(path: str | Path, device: str | torch.device | None = None) -> tuple[VQAModel, VQAProcessor]:
    """The model and processor a run saved in its `checkpoint` folder, in eval mode on `device` (GPU if any).

    Raises:
        CheckpointError: a folder that is not a run's checkpoint, lacks a file, or holds a damaged one.
    """
    path = Path(path)
    expected = "expected the `checkpoint` folder of a run (outputs/<date>/<time>/checkpoint: model and processor)"
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path}: folder not found; {expected}")
    required = ("config.json", PROCESSOR_CONFIG, QUESTION_TOKENIZER_DIR, ANSWER_TOKENIZER_DIR)
    missing = [name for name in required if not (path / name).exists()]
    if not any(path.glob("*.safetensors")) and not (path / "pytorch_model.bin").is_file():
        missing.append("model.safetensors")
    if missing:
        raise CheckpointError(f"checkpoint {path}: no {', '.join(missing)}; {expected}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        processor = VQAProcessor.from_pretrained(path)  # first: its checks are cheap
        model = VQAModel.from_pretrained(path)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, SafetensorError) as error:  # truncated or damaged files
        raise CheckpointError(f"checkpoint {path}: cannot be loaded ({one_line(str(error))[:300]})") from None
    return model.to(device).eval(), processor


# VQAConfig's own settings (its components' configs are summarised by `model_card`).
COMPONENT_CONFIGS = {"text_encoder": "text_config", "image_encoder": "vision_config", "decoder": "decoder_config"}
VQA_SETTINGS = tuple(
    name
    for name in inspect.signature(VQAConfig.__init__).parameters
    if name not in ("self", "kwargs", *COMPONENT_CONFIGS.values())
)


def model_card(config: VQAConfig) -> dict[str, Any]:
    """A model's settings as its config holds them (what trained, whatever the run's config said): VQAConfig's own
    settings, and each component's family, width and depth. For run_card.json and an init_from run's config.yaml."""
    card: dict[str, Any] = {name: getattr(config, name) for name in VQA_SETTINGS}
    # A fusion's own settings travel in the config's extra keys (vqa.model.fusion.Fusion.own_settings).
    card |= {name: getattr(config, name) for name in fusion_class(config.fusion).own_settings if hasattr(config, name)}
    for component, attribute in COMPONENT_CONFIGS.items():
        sub_config = getattr(config, attribute)
        card[component] = {
            "family": sub_config.model_type,
            "hidden_size": getattr(sub_config, "hidden_size", None),
            "layers": getattr(sub_config, "num_hidden_layers", None),
        }
    return card


def refuse_passage_model(model: VQAModel, command: str) -> None:
    """A checkpoint that reads retrieved passages (`VQAConfig.passages`) would answer here without them: refused.

    Raises:
        CheckpointError: naming the command and what to use instead.
    """
    if getattr(model.config, "passages", "none") != "none":
        raise CheckpointError(
            f"{command}: this checkpoint reads retrieved passages (passages={model.config.passages!r}) and {command} "
            "does not retrieve them yet; its answers are in its run's predictions.json (train.py with retrieval=...)"
        )
