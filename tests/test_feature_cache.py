"""Frozen-encoder feature cache: same training as without it, rebuilt on any change of key, wired into train.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import DatasetDict
from transformers import TrainingArguments

from tests.helpers.train_command import run_train
from vqa.data import EasyVQAOptions, build_easy_vqa
from vqa.model.builders import tiny_model_and_processor
from vqa.model.processing import VQACollator
from vqa.training.feature_cache import build_lookups, build_store, encode_inputs
from vqa.training.trainer import VQATrainer, with_image_paths

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> DatasetDict:
    return build_easy_vqa(tmp_path_factory.mktemp("data"), EasyVQAOptions(max_questions=240, validation_images=0.2))


def train_losses(splits: DatasetDict, features_dir: Path | None, output_dir: Path) -> tuple[list[float], dict]:
    """Eight optimizer steps of the real Trainer with frozen encoders; the logged loss of each step."""
    torch.manual_seed(0)
    model, processor = tiny_model_and_processor(splits["train"], freeze="encoders", dropout=0.1)
    collator = VQACollator(processor)
    if features_dir is not None:
        collator.features = build_lookups(model, processor, [splits["train"]], features_dir, dtype="float32")
    arguments = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=8,
        per_device_train_batch_size=16,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = VQATrainer(
        model=model,
        args=arguments,
        train_dataset=with_image_paths(splits["train"]),
        data_collator=collator,
        processor=processor,
    )
    trainer.train()
    first_batch = collator([with_image_paths(splits["train"])[index] for index in range(4)])
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry], first_batch


def test_cached_training_gives_the_same_losses(splits: DatasetDict, tmp_path: Path) -> None:
    uncached, plain_batch = train_losses(splits, None, tmp_path / "uncached")
    cached, cached_batch = train_losses(splits, tmp_path / "features", tmp_path / "cached")
    assert "pixel_values" in plain_batch and "input_ids" in plain_batch
    # The cached run never ran an encoder on a training batch: its batches carry the stored features instead.
    assert {"pixel_values", "input_ids"}.isdisjoint(cached_batch)
    assert {"question_features", "image_features"} <= set(cached_batch)
    assert len(uncached) == len(cached) == 8 and uncached[0] != uncached[-1]
    np.testing.assert_allclose(cached, uncached, rtol=0, atol=1e-5)


def test_stored_rows_are_the_encoder_outputs(splits: DatasetDict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, processor = tiny_model_and_processor(splits["train"], freeze="encoders")
    model.eval()
    for component, name in [("image_encoder", splits["validation"][0]["image"].filename), ("text_encoder", None)]:
        store = build_store(model, processor, component, splits["validation"], tmp_path, "float32", progress=False)
        name = name or splits["validation"][0]["question"]
        expected, mask = encode_inputs(model, processor, component, [name])
        stored = torch.from_numpy(np.array(store.rows(name)))
        assert stored.shape == (int(mask.sum()), expected.shape[-1])
        torch.testing.assert_close(stored, expected[0, : int(mask.sum())], rtol=0, atol=1e-5)  # batch-size numerics
    questions = len(set(splits["validation"]["question"]))
    text_store = build_store(
        model, processor, "text_encoder", splits["validation"], tmp_path, "float32", progress=False
    )
    assert len(text_store.index) == questions  # one entry per distinct question


def test_any_change_of_key_rebuilds(splits: DatasetDict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, processor = tiny_model_and_processor(splits["train"], freeze="encoders")
    validation = splits["validation"]

    def folder(component: str, dataset=validation, dtype: str = "float16") -> Path:
        return build_store(model, processor, component, dataset, tmp_path, dtype, progress=False).folder

    image_folder, text_folder = folder("image_encoder"), folder("text_encoder")
    assert folder("image_encoder") == image_folder  # same key: loaded, not rebuilt
    assert folder("image_encoder", dtype="float32") != image_folder
    assert folder("image_encoder", dataset=validation.select(range(10))) != image_folder
    processor.max_question_length = 6
    assert folder("text_encoder") != text_folder and folder("image_encoder") == image_folder
    with torch.no_grad():
        model.image_encoder.layers[0].attention.q_proj.bias.add_(1e-3)
    assert folder("image_encoder") != image_folder
    with pytest.raises(ValueError, match="expected float16 or float32"):
        folder("image_encoder", dtype="int8")


def test_train_py_builds_reports_and_can_skip_the_cache(tmp_path: Path) -> None:
    env = dict(os.environ, VQA_CACHE=str(tmp_path / "data"), VQA_FEATURE_CACHE=str(tmp_path / "features"))
    env.update(WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    common = ["debug=fast", "model.freeze=encoders", "trainer.args.disable_tqdm=true", "report=false"]
    cards = {}
    for name, extra in [("cached", []), ("uncached", ["feature_cache.enabled=false"])]:
        run_dir = tmp_path / name
        result = run_train([*common, *extra, f"hydra.run.dir={run_dir}"], env)
        assert result.returncode == 0, result.stderr[-3000:]
        cards[name] = json.loads((run_dir / "run_card.json").read_text())
        if name == "cached":
            assert "feature cache     image_encoder:" in result.stdout
    assert set(cards["cached"]["feature_cache"]) == {"text_encoder", "image_encoder"}
    for cache in cards["cached"]["feature_cache"].values():
        assert cache["bytes"] > 0 and len(cache["folders"]) == 3  # train, validation, test
        assert all(Path(folder).parent == tmp_path / "features" for folder in cache["folders"])
    assert cards["uncached"]["feature_cache"] == {}
