"""What `python train.py` builds with no overrides, for the benchmarks that measure the default run's step.

Composed from `conf/` as train.py composes it, built through the same Hydra targets (`vqa.instantiate`), so a
change of the default config reaches these benchmarks too.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from datasets import Dataset
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from vqa.instantiate import instantiate
from vqa.model.processing import VQACollator
from vqa.training.trainer import with_image_paths

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def default_config_and_data() -> tuple[DictConfig, Dataset]:
    """The default config and its training split, images as paths (as training reads them)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name="config")
    splits = instantiate(cfg.data)
    return cfg, with_image_paths(splits["train"])


def default_model(cfg: DictConfig, train: Dataset) -> tuple[torch.nn.Module, VQACollator]:
    """The default model at the seed's initialisation (tokenizers trained on `train`), and its collator."""
    transformers.set_seed(cfg.seed)
    model, processor = instantiate(cfg.model, train_split=train)
    return model, VQACollator(processor, inputs=model.config.inputs)
