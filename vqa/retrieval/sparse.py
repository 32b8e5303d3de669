"""The sparse index: BM25 over the passages' words, through the `bm25s` package.

Passages (`title. text`) and queries are tokenized alike by `bm25s.tokenize` (lower case, words of two or more
letters or digits, English stop words removed). The index is kept in `<cache_dir>/retrieval/bm25-<fingerprint>/`,
keyed by the corpus's fingerprint and the BM25 parameters. A query none of whose words is in the corpus scores 0
against every passage; its hits are then arbitrary, and their scores say so.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import bm25s

from vqa.data.cache import fingerprint, publish_folder
from vqa.retrieval.corpus import Corpus
from vqa.retrieval.index import INDEX_FILE, Hit, hits_of

logger = logging.getLogger(__name__)

STOPWORDS = "en"


class BM25Index:
    """BM25 (Lucene's variant) over `corpus`'s passages.

    Args:
        corpus: the passages (`vqa.retrieval.corpus.load_corpus`).
        cache_dir: the cache folder; the index lives in its `retrieval/` folder.
        k1, b: BM25's term-frequency saturation and length normalisation.
    """

    def __init__(self, corpus: Corpus, cache_dir: str | Path, k1: float = 1.5, b: float = 0.75) -> None:
        self.corpus = corpus
        key = {"corpus": corpus.fingerprint, "k1": k1, "b": b, "stopwords": STOPWORDS, "bm25s": bm25s.__version__}
        self.folder = Path(cache_dir) / "retrieval" / f"bm25-{fingerprint(key)}"
        if not (self.folder / INDEX_FILE).is_file():
            self._build(key, k1, b)
        self.retriever = bm25s.BM25.load(str(self.folder), show_progress=False)

    def _build(self, key: dict[str, object], k1: float, b: float) -> None:
        started = time.perf_counter()
        tokens = bm25s.tokenize(self.corpus.documents(), stopwords=STOPWORDS, show_progress=False)
        retriever = bm25s.BM25(k1=k1, b=b)
        retriever.index(tokens, show_progress=False)
        description = {**key, "passages": len(self.corpus), "indexing_seconds": round(time.perf_counter() - started, 3)}

        def write(staging: Path) -> None:
            retriever.save(str(staging), show_progress=False)
            (staging / INDEX_FILE).write_text(json.dumps(description, indent=2) + "\n")

        publish_folder(self.folder, write)
        logger.info("built BM25 index %s over %d passages", self.folder, len(self.corpus))

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """The top `k` passages of each query by BM25 score, best first."""
        k = min(k, len(self.corpus))
        query_tokens = bm25s.tokenize(list(queries), stopwords=STOPWORDS, return_ids=False, show_progress=False)
        rows, scores = self.retriever.retrieve(query_tokens, k=k, show_progress=False)
        return hits_of(self.corpus, rows, scores)
