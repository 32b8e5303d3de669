"""`python -m vqa.retrieval.search`: the top-k passages of a corpus, and their scores, for each question given.

    python -m vqa.retrieval.search --corpus facts.jsonl --encoder MINILM --question "what is the zorvek of a circle?"
    python -m vqa.retrieval.search --corpus facts.jsonl --index bm25 --question "..." --question "..." -k 3 --json

The first call over a corpus builds its index into the cache (`--cache-dir`, default $VQA_CACHE or .cache/vqa);
later calls load it.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from vqa.errors import ArgumentParser, exit_on_user_error
from vqa.retrieval.corpus import Corpus, load_corpus
from vqa.retrieval.dense import DenseIndex
from vqa.retrieval.index import Hit, PassageIndex
from vqa.retrieval.sparse import BM25Index
from vqa.retrieval.text_embedding import POOLINGS, TextEmbedder

TEXT_WIDTH = 100  # characters of a passage shown in the table


def open_index(
    kind: str,
    corpus: Corpus,
    cache_dir: str | Path,
    encoder: str | None = None,
    query_encoder: str | None = None,
    pooling: str | None = None,
    factory: str = "Flat",
) -> PassageIndex:
    """A `dense` index (which needs `encoder`, and takes a separate `query_encoder`) or a `bm25` index over `corpus`."""
    if kind == "bm25":
        return BM25Index(corpus, cache_dir)
    passage_encoder = TextEmbedder(encoder, pooling, source="--encoder")
    queries = TextEmbedder(query_encoder, pooling, source="--query-encoder") if query_encoder else None
    return DenseIndex(corpus, passage_encoder, cache_dir, queries, factory=factory)


def format_hits(corpus: Corpus, question: str, hits: list[Hit]) -> str:
    """A question and its hits as a printable table: rank, score, id, then title and text cut to TEXT_WIDTH."""
    lines = [f"question: {question}", f"{'rank':>4}  {'score':>8}  {'id':<12}  passage"]
    for rank, hit in enumerate(hits, start=1):
        passage = corpus.passages[hit.row]
        shown = f"{passage['title']}: {passage['text']}" if passage["title"] else passage["text"]
        lines.append(f"{rank:>4}  {hit.score:>8.4f}  {hit.passage_id:<12}  {textwrap.shorten(shown, TEXT_WIDTH)}")
    return "\n".join(lines)


def hits_as_json(corpus: Corpus, questions: Sequence[str], results: list[list[Hit]]) -> list[dict]:
    """[{question, hits: [{rank, score, id, title, text}]}] for `--json`."""
    return [
        {
            "question": question,
            "hits": [
                {"rank": rank, "score": hit.score, **corpus.passages[hit.row]} for rank, hit in enumerate(hits, start=1)
            ],
        }
        for question, hits in zip(questions, results, strict=True)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m vqa.retrieval.search",
        description="Print the top-k passages of a corpus for each question, with the index's scores (dense: cosine "
        "similarity of a text encoder's vectors; bm25: BM25). The index is built into the cache on first use.",
    )
    parser.add_argument("--corpus", required=True, type=Path, help="passages: a .jsonl or .parquet of id, title, text")
    parser.add_argument("--question", required=True, action="append", help="a query (repeat for several)")
    parser.add_argument("-k", type=int, default=5, help="passages per question (default 5)")
    parser.add_argument("--index", choices=["dense", "bm25"], default="dense", help="index kind (default dense)")
    parser.add_argument("--encoder", help="dense: the passage (and query) encoder, a text-encoder folder or hub name")
    parser.add_argument("--query-encoder", help="dense: a separate query encoder (default: --encoder)")
    parser.add_argument(
        "--pooling",
        choices=POOLINGS,
        help="dense: how token states become one vector "
        "(default: the folder's sentence-transformers pooling, else mean)",
    )
    parser.add_argument("--factory", default="Flat", help="dense: the FAISS index factory string (default Flat)")
    parser.add_argument("--cache-dir", default=os.environ.get("VQA_CACHE", ".cache/vqa"), help="where indexes are kept")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error(f"-k: got {args.k}, expected a positive number of passages")
    if args.index == "dense" and not args.encoder:
        parser.error("--index dense needs --encoder (a text-encoder folder or hub name), or use --index bm25")

    with exit_on_user_error():
        corpus = load_corpus(args.corpus, args.cache_dir)
        index = open_index(
            args.index, corpus, args.cache_dir, args.encoder, args.query_encoder, args.pooling, args.factory
        )
    results = index.search(args.question, args.k)
    if args.json:
        print(json.dumps(hits_as_json(corpus, args.question, results), indent=2))
    else:
        print(
            "\n\n".join(
                format_hits(corpus, question, hits) for question, hits in zip(args.question, results, strict=True)
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
