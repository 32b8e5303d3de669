"""What every passage index answers: the top-k passages of each query, as `Hit`s, best first.

Two kinds implement it: `vqa.retrieval.dense.DenseIndex` (a text encoder's vectors in FAISS, through the `datasets`
FAISS integration) and `vqa.retrieval.sparse.BM25Index` (BM25 through the `bm25s` package). Both are built once per
corpus content and settings and kept in the cache folder (`<cache_dir>/retrieval/`); a swapped corpus file is a
new fingerprint, hence a new index, and nothing needs to be retrained to use it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vqa.retrieval.corpus import Corpus

INDEX_FILE = "index.json"  # in every index folder: what it was built from and how long it took


@dataclass(frozen=True)
class Hit:
    """One retrieved passage.

    Attributes:
        row: its row in `Corpus.passages`.
        passage_id: its `id`.
        score: the index's score (dense: cosine similarity; BM25: the BM25 score); higher is better.
    """

    row: int
    passage_id: str
    score: float


class PassageIndex(Protocol):
    """A searchable index over one corpus."""

    corpus: Corpus
    folder: Path  # where it is kept in the cache

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """The top `k` passages (fewer when the corpus is smaller) of each query, best first."""
        ...


def hits_of(corpus: Corpus, rows: Sequence[Sequence[int]], scores: Sequence[Sequence[float]]) -> list[list[Hit]]:
    """Per query, its (k,) passage rows and scores as `Hit`s."""
    ids = corpus.ids
    return [
        [Hit(int(row), ids[int(row)], float(score)) for row, score in zip(query_rows, query_scores, strict=True)]
        for query_rows, query_scores in zip(rows, scores, strict=True)
    ]


def read_index_description(folder: Path) -> dict[str, Any]:
    """The `index.json` an index folder was published with."""
    return json.loads((folder / INDEX_FILE).read_text())
