"""The dense index: passages embedded by a text encoder, searched by inner product in FAISS.

The vectors are unit length (`TextEmbedder`), so the inner product is the cosine similarity. The index goes through
the `datasets` FAISS integration (`Dataset.add_faiss_index_from_external_arrays`, `save_faiss_index`,
`load_faiss_index`, `search_batch`), attached to the corpus table, and is kept in
`<cache_dir>/retrieval/dense-<fingerprint>/` keyed by the corpus's and the passage encoder's fingerprints and the
FAISS factory string: a changed corpus file or encoder builds a new one, an unchanged pair loads in a moment.

`factory` is a FAISS index factory string: `Flat` (the default) searches exactly, D x 4 bytes a passage (1.5 GB per
million passages at D = 384); `HNSW32` or `IVF4096,PQ64` trade exactness for speed or memory on large corpora.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

from vqa.data.cache import fingerprint, publish_folder
from vqa.errors import ConfigError
from vqa.retrieval.corpus import Corpus
from vqa.retrieval.index import INDEX_FILE, Hit, hits_of
from vqa.retrieval.text_embedding import TextEmbedder

logger = logging.getLogger(__name__)

FAISS_FILE = "passages.faiss"


class DenseIndex:
    """FAISS over `corpus`'s passages embedded by `passage_encoder`; queries embedded by `query_encoder` (the same
    encoder when None, as for sentence-embedding models; a DPR-style pair gives two).

    Args:
        corpus: the passages (`vqa.retrieval.corpus.load_corpus`).
        passage_encoder: embeds each passage as `title. text`.
        cache_dir: the cache folder; the index lives in its `retrieval/` folder.
        query_encoder: embeds the queries; its vectors must have the passage vectors' width.
        factory: the FAISS index factory string (see the module docstring).
        batch_size: passages embedded at a time.
        progress: a progress bar while passages are embedded.
    """

    def __init__(
        self,
        corpus: Corpus,
        passage_encoder: TextEmbedder,
        cache_dir: str | Path,
        query_encoder: TextEmbedder | None = None,
        factory: str = "Flat",
        batch_size: int = 64,
        progress: bool = True,
    ) -> None:
        self.corpus = corpus
        self.passage_encoder = passage_encoder
        self.query_encoder = query_encoder or passage_encoder
        if self.query_encoder.dimension != passage_encoder.dimension:
            raise ConfigError(
                f"retrieval query encoder {self.query_encoder.name_or_path}: {self.query_encoder.dimension}-wide "
                f"vectors, expected the passage encoder's width {passage_encoder.dimension}"
            )
        key = {"corpus": corpus.fingerprint, "passage_encoder": passage_encoder.fingerprint, "factory": factory}
        self.name = f"dense-{fingerprint(key)}"
        self.folder = Path(cache_dir) / "retrieval" / self.name
        if not (self.folder / FAISS_FILE).is_file():
            self._build(key, factory, batch_size, progress)
        if self.name not in corpus.passages.list_indexes():
            corpus.passages.load_faiss_index(self.name, str(self.folder / FAISS_FILE))

    def _build(self, key: dict[str, str], factory: str, batch_size: int, progress: bool) -> None:
        started = time.perf_counter()
        vectors = self.passage_encoder.embed(
            self.corpus.documents(), batch_size=batch_size, progress=progress, description="embedding passages"
        )
        embedded = time.perf_counter()
        try:
            self.corpus.passages.add_faiss_index_from_external_arrays(
                vectors, self.name, string_factory=factory, metric_type=faiss.METRIC_INNER_PRODUCT
            )
        except RuntimeError as error:  # FAISS refuses an unknown factory string, or too few vectors to train it
            raise ConfigError(f"retrieval factory {factory!r}: FAISS refused it ({error})") from None
        description = {
            **key,
            "passage_encoder_name": self.passage_encoder.name_or_path,
            "passages": len(self.corpus),
            "dimension": int(vectors.shape[1]),
            "embedding_seconds": round(embedded - started, 3),
            "indexing_seconds": round(time.perf_counter() - embedded, 3),
        }

        def write(staging: Path) -> None:
            self.corpus.passages.save_faiss_index(self.name, str(staging / FAISS_FILE))
            (staging / INDEX_FILE).write_text(json.dumps(description, indent=2) + "\n")

        publish_folder(self.folder, write, needed_bytes=vectors.nbytes)
        logger.info("built dense index %s over %d passages", self.folder, len(self.corpus))

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """The top `k` passages of each query by cosine similarity, best first."""
        vectors = self.query_encoder.embed(list(queries))
        return self.search_vectors(vectors, k)

    def search_vectors(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """(Q, D) unit query vectors -> the top `k` passages of each, best first."""
        k = min(k, len(self.corpus))
        results = self.corpus.passages.search_batch(self.name, vectors, k=k)
        return hits_of(self.corpus, results.total_indices, results.total_scores)
