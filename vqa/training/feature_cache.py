"""Frozen-encoder feature cache: each frozen encoder's outputs, computed once per dataset split, read from disk.

With `freeze=encoders`, DistilBERT and the ViT give the same output for an input at every epoch; running them on
every step is wasted work. A store holds one encoder's `last_hidden_state` for the distinct inputs of a split
(image files for the image encoder, question strings for the text encoder) as rows of one `.npy` file, memory-
mapped when read. Its folder name is a hash of everything the features depend on: the encoder's weights and
config, the preprocessing (image processor settings, or the tokenizer's vocabulary and length limit), the
dataset split's fingerprint, and the storage dtype. Any change gives a new folder (a rebuild); old folders stay
until deleted.

Layout of a store folder: `features.npy` (total positions, hidden) and `index.json` (input -> [first row,
length]); `store.json` records the key, shapes and size.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from tqdm.auto import tqdm

from vqa.data.cache import fingerprint, publish_folder
from vqa.data.schema import column
from vqa.model.modeling import VQAModel
from vqa.model.processing import VQAProcessor, open_image

logger = logging.getLogger(__name__)

# 2: images through vqa.data.images.to_rgb (16-bit, transparent and float images no longer clip at 255).
FORMAT_VERSION = 2
CACHEABLE = ("text_encoder", "image_encoder")
DTYPES = {"float16": np.float16, "float32": np.float32}


class FeatureStore:
    """One encoder's outputs for a set of inputs; `stack` returns them as a padded batch.

    Opened lazily in each process (DataLoader workers get a pickled store and map the file themselves).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.info = json.loads((self.folder / "store.json").read_text())
        self.index: dict[str, list[int]] = json.loads((self.folder / "index.json").read_text())
        self._features: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_features": None}

    @property
    def features(self) -> np.ndarray:
        """(total positions, hidden), memory-mapped."""
        if self._features is None:
            self._features = np.load(self.folder / "features.npy", mmap_mode="r")
        return self._features

    @property
    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.folder.iterdir())

    def __contains__(self, name: str) -> bool:
        return name in self.index

    def rows(self, name: str) -> np.ndarray:
        """(length, hidden) features of one input."""
        start, length = self.index[name]
        return self.features[start : start + length]


@dataclass
class FeatureLookup:
    """The stores of one encoder over several splits; finds an input in whichever holds it."""

    stores: Sequence[FeatureStore]

    def stack(self, names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of `names`, right-padded: (n, L, hidden) float32 and a (n, L) mask (1 = real position)."""
        rows = [self._find(name).rows(name) for name in names]
        longest = max(len(row) for row in rows)
        features = torch.zeros(len(rows), longest, rows[0].shape[-1])
        mask = torch.zeros(len(rows), longest, dtype=torch.long)
        for position, row in enumerate(rows):
            features[position, : len(row)] = torch.from_numpy(np.array(row, dtype=np.float32))
            mask[position, : len(row)] = 1
        return features, mask

    def _find(self, name: str) -> FeatureStore:
        for store in self.stores:
            if name in store:
                return store
        raise KeyError(f"feature cache: {name!r} is in none of {[str(store.folder) for store in self.stores]}")

    @property
    def size_bytes(self) -> int:
        return sum(store.size_bytes for store in self.stores)


def tensor_digest(module: torch.nn.Module) -> str:
    """A hash of a module's parameters and buffers (names, shapes, dtypes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def preprocessing_description(processor: VQAProcessor, component: str) -> dict[str, Any]:
    """What, besides the weights, decides an encoder's input: image processor settings or the tokenizer."""
    if component == "image_encoder":
        return processor.image_processor.to_dict()
    vocabulary = json.dumps(processor.question_tokenizer.get_vocab(), sort_keys=True)
    return {
        "tokenizer": type(processor.question_tokenizer).__name__,
        "vocabulary": hashlib.sha256(vocabulary.encode()).hexdigest(),
        "lowercase": processor.question_tokenizer("A")["input_ids"] == processor.question_tokenizer("a")["input_ids"],
        "max_question_length": processor.max_question_length,
    }


def store_key(model: VQAModel, processor: VQAProcessor, component: str, dataset: Dataset, dtype: str) -> dict:
    encoder = getattr(model, component)
    return {
        "format": FORMAT_VERSION,
        "component": component,
        "weights": tensor_digest(encoder),
        "config": encoder.config.to_diff_dict(),
        "preprocessing": preprocessing_description(processor, component),
        "dataset": dataset._fingerprint,
        "dtype": dtype,
    }


def distinct_inputs(dataset: Dataset, component: str) -> list[str]:
    """The split's distinct image paths (image encoder) or question strings (text encoder), in first-seen order."""
    if component == "image_encoder":
        images = column(dataset.cast_column("image", ImageFeature(decode=False)), "image")
        return list(dict.fromkeys(image["path"] for image in images))
    return list(dict.fromkeys(column(dataset, "question")))


@torch.no_grad()
def encode_inputs(
    model: VQAModel, processor: VQAProcessor, component: str, names: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of inputs through one encoder: (n, L, hidden) `last_hidden_state` and its (n, L) mask."""
    encoder = getattr(model, component)
    if component == "image_encoder":
        pixel_values = processor.encode_images([open_image(name) for name in names]).to(model.device, encoder.dtype)
        states = encoder(pixel_values=pixel_values).last_hidden_state
        return states, torch.ones(states.shape[:2], dtype=torch.long)
    batch = {key: value.to(model.device) for key, value in processor.encode_questions(list(names)).items()}
    return encoder(**batch).last_hidden_state, batch["attention_mask"].cpu()


def build_store(
    model: VQAModel,
    processor: VQAProcessor,
    component: str,
    dataset: Dataset,
    cache_dir: str | Path,
    dtype: str = "float16",
    batch_size: int = 256,
    progress: bool = True,
) -> FeatureStore:
    """Load the store of `component`'s outputs on `dataset`, building it first if no store has this key."""
    if component not in CACHEABLE:
        raise ValueError(f"feature cache: component {component!r}; expected one of {CACHEABLE}")
    if DTYPES.get(dtype) is None:
        raise ValueError(f"feature cache: dtype {dtype!r}; expected float16 or float32")
    key = store_key(model, processor, component, dataset, dtype)
    final = Path(cache_dir) / f"{component}-{fingerprint(key)}"
    if (final / "store.json").is_file():
        logger.info("feature cache: loaded %s", final)
        return FeatureStore(final)
    names = distinct_inputs(dataset, component)
    was_training = model.training
    model.eval()
    try:
        publish_folder(
            final, lambda staging: _write_store(model, processor, component, names, staging, key, batch_size, progress)
        )
    finally:
        model.train(was_training)
    store = FeatureStore(final)
    logger.info("feature cache: built %s (%d inputs, %.1f MiB)", final, len(names), store.size_bytes / 2**20)
    return store


def _input_lengths(model: VQAModel, processor: VQAProcessor, component: str, names: Sequence[str]) -> list[int]:
    """Positions each input will occupy: the image encoder's output length for every image (the same for all,
    read from the first), the token count (with [CLS], [SEP]) per question."""
    if component == "image_encoder":
        image_positions = encode_inputs(model, processor, component, names[:1])[0].shape[1]
        return [image_positions] * len(names)
    lengths: list[int] = []
    for start in range(0, len(names), 4096):
        lengths += processor.encode_questions(names[start : start + 4096])["attention_mask"].sum(dim=1).tolist()
    return lengths


def _write_store(
    model: VQAModel,
    processor: VQAProcessor,
    component: str,
    names: Sequence[str],
    folder: Path,
    key: dict[str, Any],
    batch_size: int,
    progress: bool,
) -> None:
    """Encode `names` in batches straight into a memory-mapped `.npy` (a split's features need not fit in RAM)."""
    folder.mkdir(parents=True)
    lengths = _input_lengths(model, processor, component, names)
    starts = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    hidden = getattr(model, component).config.hidden_size
    features = np.lib.format.open_memmap(
        folder / "features.npy", mode="w+", dtype=DTYPES[key["dtype"]], shape=(starts[-1], hidden)
    )
    batches = range(0, len(names), batch_size)
    for start in tqdm(batches, desc=f"caching {component} features", unit="batch", disable=not progress):
        batch_names = names[start : start + batch_size]
        states, mask = encode_inputs(model, processor, component, batch_names)
        states = states.float().cpu().numpy()
        for offset, (row_states, row_mask) in enumerate(zip(states, mask.bool().numpy(), strict=True)):
            row = start + offset
            kept = row_states[row_mask]  # padding dropped
            if len(kept) != lengths[row]:
                raise RuntimeError(f"feature cache: {names[row]!r} gave {len(kept)} positions, expected {lengths[row]}")
            features[starts[row] : starts[row + 1]] = kept
    features.flush()
    del features
    index = {name: [starts[row], lengths[row]] for row, name in enumerate(names)}
    (folder / "index.json").write_text(json.dumps(index))
    info = {"key": key, "inputs": len(names), "positions": starts[-1], "hidden": hidden}
    (folder / "store.json").write_text(json.dumps(info, indent=2, default=str))


def build_lookups(
    model: VQAModel,
    processor: VQAProcessor,
    splits: Iterable[Dataset],
    cache_dir: str | Path,
    dtype: str = "float16",
    batch_size: int = 256,
) -> dict[str, FeatureLookup]:
    """Stores for each frozen encoder that `model` runs, over `splits`: {"text_encoder": ..., "image_encoder": ...}.

    An encoder with LoRA adapters is left out (its output changes as the adapters train): it runs every step.
    """
    splits = list(splits)
    for component in sorted(model.adapted_components & model.frozen_components & set(CACHEABLE)):
        logger.info("feature cache: not used for %s, which has LoRA adapters (model.lora.targets)", component)
    return {
        component: FeatureLookup(
            [build_store(model, processor, component, split, cache_dir, dtype, batch_size) for split in splits]
        )
        for component in CACHEABLE
        if component in model.fixed_components and component in model.active_encoders
    }
