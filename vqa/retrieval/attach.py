"""A run's retrieval stage: the passages each question reads, as a `passage_ids` column of every split.

`passages` (`retrieval.passages` in the config) picks them:
- `retrieved`: the index's top `k` for the question's text (the query), searched once per split, index and k and
  kept in the cache (`<cache_dir>/retrieval/hits-<fingerprint>/`), so later runs and evaluations read them back;
- `gold`: the question's gold passage alone (`gold_passage_id`, which a knowledge task such as
  `vqa.data.easy_vqa_facts` provides): what a perfect retriever would give, the ceiling;
- `none`: no passages (a model trained with them then answers without).

Recall at k, the share of questions whose gold passage is among the passages read, is reported per split that has
gold ids; questions without one (easy-VQA facts' shape questions) are not counted.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, List, Value
from omegaconf import DictConfig
from tqdm.auto import tqdm

from vqa.data.cache import cached_build, fingerprint
from vqa.data.schema import DataError, TrainingSplits, column
from vqa.errors import ConfigError
from vqa.instantiate import instantiate
from vqa.retrieval.corpus import SUFFIXES, Corpus, load_corpus
from vqa.retrieval.index import PassageIndex

logger = logging.getLogger(__name__)

PASSAGE_MODES = ("retrieved", "gold", "none")
GOLD_COLUMN = "gold_passage_id"
SEARCH_BATCH = 256  # questions per search call: the progress bar's step
HITS_FEATURES = Features({"passage_ids": List(Value("string")), "scores": List(Value("float32"))})


@dataclass
class Retrieval:
    """What the retrieval stage gives the rest of the run.

    Attributes:
        splits: the splits, each with a `passage_ids` column (K ids per question; absent with passages `none`).
        passages: passage id -> `title. text`, what the collator tokenizes; None with passages `none`.
        report: for metrics.json: the corpus, the index, k, the mode and each split's recall at k.
    """

    splits: TrainingSplits
    passages: dict[str, str] | None
    report: dict[str, Any] = field(default_factory=dict)


def attach_passages(
    splits: TrainingSplits,
    corpus: Corpus,
    index: PassageIndex | None,
    k: int,
    passages: str,
    cache_dir: str | Path,
) -> Retrieval:
    """Every split's questions with the passages they read (see the module docstring).

    Raises:
        ConfigError: an unknown mode, k below 1, or `retrieved` without an index.
        DataError: `gold` on a dataset without gold passages, or a gold id that is not in the corpus.
    """
    check_retrieval_options(passages, k)
    if passages == "retrieved" and index is None:
        raise ConfigError("retrieval.passages=retrieved needs an index (retrieval=bm25 or retrieval=dense)")
    report: dict[str, Any] = {"corpus": str(corpus.path), "corpus_fingerprint": corpus.fingerprint,
                              "passages": passages, "k": k if passages == "retrieved" else None}  # fmt: skip
    if index is not None and passages == "retrieved":
        report["index"] = index.folder.name
    if passages == "none":
        return Retrieval(splits, None, report)
    known = set(corpus.ids) if passages == "gold" else set()
    with_ids, recall = {}, {}
    for name, split in splits.items():
        gold = column(split, GOLD_COLUMN) if GOLD_COLUMN in split.column_names else None  # read once, used twice
        if passages == "gold":
            ids = [[passage] for passage in checked_gold_ids(gold, name, known)]
        else:
            ids = search_split(split, name, index, k, cache_dir)
        if gold is not None:
            recall[name] = recall_at_k(gold, ids)
        with_ids[name] = split.add_column("passage_ids", ids)
    if recall:
        report["recall_at_k"] = recall
        logger.info(
            "retrieval recall (%s passages, k = %s): %s",
            passages,
            report["k"],
            ", ".join(f"{name} {value:.2f}%" for name, value in recall.items()),
        )
    texts = dict(zip(corpus.ids, corpus.documents(), strict=True))
    retrieved = TrainingSplits(
        with_ids, dropped=splits.dropped, benchmark=splits.benchmark, corpus_files=splits.corpus_files
    )
    return Retrieval(retrieved, texts, report)


def check_retrieval_options(passages: Any, k: Any) -> None:
    """`retrieval.passages` is one of PASSAGE_MODES and `retrieval.k` a positive integer (ConfigError otherwise)."""
    if passages not in PASSAGE_MODES:
        raise ConfigError(f"retrieval.passages: got {passages!r}, expected one of {', '.join(PASSAGE_MODES)}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"retrieval.k: got {k!r}, expected a positive number of passages per question")


def checked_gold_ids(gold: list[str] | None, name: str, known: set[str]) -> list[str]:
    """The split's gold passage ids (None: the split has no such column), each checked to be in the corpus."""
    if gold is None:
        raise DataError(f"retrieval.passages=gold: the {name} split has no {GOLD_COLUMN} column (a dataset with gold "
                        "passages is needed, such as data=easy_vqa_facts)")  # fmt: skip
    without = sum(passage is None for passage in gold)
    if without:
        raise DataError(
            f"retrieval.passages=gold: {without} of the {name} split's questions have no gold passage (easy-VQA "
            "facts' shape questions); expected one per question (data.shape_questions=false)"
        )
    missing = next((passage for passage in gold if passage not in known), None)
    if missing is not None:
        raise DataError(f"retrieval.passages=gold: {name} question's gold passage {missing!r} is not in the corpus")
    return gold


def search_split(split: Dataset, name: str, index: PassageIndex, k: int, cache_dir: str | Path) -> list[list[str]]:
    """The top-k passage ids of each of the split's questions, from the cache when searched before."""
    questions = column(split, "question")
    key = {"index": index.folder.name, "k": k, "questions": text_fingerprint(questions), "query": "question"}

    def build() -> tuple[Dataset, dict[str, Any]]:
        started = time.perf_counter()
        ids, scores = [], []
        batches = range(0, len(questions), SEARCH_BATCH)
        for start in tqdm(batches, desc=f"retrieving for {name}", unit="batch", disable=len(batches) < 2):
            for hits in index.search(questions[start : start + SEARCH_BATCH], k):
                ids.append([hit.passage_id for hit in hits])
                scores.append([hit.score for hit in hits])
        table = Dataset.from_dict({"passage_ids": ids, "scores": scores}, features=HITS_FEATURES)
        return table, {"questions": len(questions), "seconds": round(time.perf_counter() - started, 3)}

    hits, _, _ = cached_build(Path(cache_dir) / "retrieval", "hits", key, build)
    return hits["passage_ids"][:]


def recall_at_k(gold: list[str | None], retrieved: list[list[str]]) -> float:
    """Percentage of questions whose gold passage is among their retrieved ones; questions without one (None) are
    not counted."""
    pairs = [(answer, ids) for answer, ids in zip(gold, retrieved, strict=True) if answer is not None]
    found = sum(answer in ids for answer, ids in pairs)
    return round(100 * found / max(1, len(pairs)), 2)


def text_fingerprint(texts: list[str]) -> str:
    """A hash of a list of texts, order included (the questions a search answered)."""
    return fingerprint({"texts": texts})


def corpus_path(corpus: str | None, splits: TrainingSplits) -> Path:
    """The corpus file a run reads: `corpus` as a path, or the name of one of the dataset's own corpora
    (`TrainingSplits.corpus_files`: `facts`, `swapped` for easy-VQA facts); None: the dataset's first one."""
    own = splits.corpus_files
    if corpus is None:
        if not own:
            raise ConfigError("retrieval.corpus: not set, and the dataset has no corpus of its own; expected a .jsonl "
                              "or .parquet file of id, title, text")  # fmt: skip
        return next(iter(own.values()))
    if corpus in own:
        return own[corpus]
    if own and Path(corpus).suffix not in SUFFIXES:  # a mistyped name rather than a file
        raise ConfigError(f"retrieval.corpus: got {corpus!r}, expected one of the dataset's corpora "
                          f"({', '.join(own)}) or a .jsonl or .parquet file of id, title, text")  # fmt: skip
    return Path(corpus)


def data_cache_dir(data: DictConfig) -> str:
    """The dataset cache a run's `data` node names (`cache_dir`), else $VQA_CACHE, else .cache/vqa: where the
    retrieval stage keeps corpora, indexes and search results beside the splits."""
    return data.get("cache_dir") or os.environ.get("VQA_CACHE", ".cache/vqa")


def retrieval_stage(node: DictConfig, splits: TrainingSplits, cache_dir: str | Path) -> Retrieval:
    """The run's `retrieval` config node applied to its splits: the corpus (a path or one of the dataset's own), its
    index (the node's `index` target, given the corpus and the cache folder; not built for `gold` or `none`), and
    each question's passages."""
    corpus = load_corpus(corpus_path(node.get("corpus"), splits), cache_dir)
    index = passage_index(node, corpus, cache_dir) if node.passages == "retrieved" else None
    return attach_passages(splits, corpus, index, node.k, node.passages, cache_dir)


def passage_index(node: DictConfig, corpus: Corpus, cache_dir: str | Path) -> PassageIndex:
    """The `retrieval` node's index (its `index` target) over `corpus`, built or read back from the cache."""
    # Partial, then called: Hydra would turn a dataclass argument (the corpus) into a config node.
    return instantiate(node.index, _partial_=True)(corpus=corpus, cache_dir=str(cache_dir))
