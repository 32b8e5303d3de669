"""Loading a run's saved model and processor (its `checkpoint/` folder), with one line for a folder that is not one."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError

from vqa.errors import CheckpointError, one_line
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
