"""The retrieval a passage-reading checkpoint was trained with, for questions asked one at a time (predict, demo).

A checkpoint folder sits in the run folder that trained it (`<run>/checkpoint`, `<run>/checkpoint-N`); the run's
config.yaml holds its `retrieval` settings: the corpus, the index, k and the passage length. `checkpoint_retriever`
rebuilds that index (read back from the cache when built before) and `QuestionRetriever` gives a question's top-k
passages and their model inputs. A corpus or k given instead replaces the run's, without retraining: the swap of
docs/retrieval.md, one question at a time.

A run trained on gold passages (`retrieval.passages=gold`) still retrieves here: a new question has no gold passage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from vqa.errors import UserError
from vqa.inspection.report import read_run_config
from vqa.instantiate import instantiate
from vqa.model.processing import VQAProcessor
from vqa.retrieval.attach import check_retrieval_options, corpus_path, data_cache_dir, passage_index
from vqa.retrieval.corpus import load_corpus
from vqa.retrieval.index import Hit, PassageIndex


@dataclass(frozen=True)
class QuestionRetriever:
    """A run's index over a corpus, with the run's k and passage length.

    Attributes:
        index: the index (`index.corpus` is the corpus it searches).
        k: passages per question.
        max_passage_length: passages are cut to this many tokens, as in training.
    """

    index: PassageIndex
    k: int
    max_passage_length: int

    def retrieve(self, question: str) -> list[Hit]:
        """The question's top k passages, best first."""
        return self.index.search([question], self.k)[0]

    def text(self, hit: Hit) -> str:
        """The passage as the model reads it: `title. text`."""
        return self.index.corpus.document(hit.row)

    def model_inputs(self, processor: VQAProcessor, hits: list[Hit]) -> dict[str, torch.Tensor]:
        """passage_input_ids and passage_attention_mask (K, Lp) of the hits, and passage_index (1, K) of one
        question reading all of them, in order."""
        inputs = processor.encode_passages([self.text(hit) for hit in hits], self.max_passage_length)
        return inputs | {"passage_index": torch.arange(len(hits)).unsqueeze(0)}


def checkpoint_retriever(checkpoint: str | Path, corpus: str | None = None, k: int | None = None) -> QuestionRetriever:
    """The retrieval of the run that trained `checkpoint`, with `corpus` (a .jsonl/.parquet file or the name of one
    of the dataset's own corpora, as `retrieval.corpus` takes) or `k` replacing the run's when given.

    Raises:
        UserError: the checkpoint's folder is not in a run folder with retrieval settings, or k is not positive.
        ConfigError, DataError: the corpus cannot be read (one line, as the run would report it).
    """
    run_dir = Path(checkpoint).resolve().parent
    cfg = read_run_config(run_dir / "config.yaml")
    if cfg is None or not cfg.get("retrieval"):
        raise UserError(
            f"{checkpoint}: the model reads retrieved passages, but {run_dir / 'config.yaml'} has no retrieval "
            "settings; expected the checkpoint inside the run folder that trained it"
        )
    node = cfg.retrieval.copy()
    for key, value in (("corpus", corpus), ("k", k)):
        if value is not None:
            OmegaConf.update(node, key, value)
    check_retrieval_options("retrieved", node.k)
    cache_dir = data_cache_dir(cfg.data)
    if node.get("corpus") is not None and Path(node.corpus).is_file():
        path = Path(node.corpus)
    else:  # the dataset's own corpus (by name, or its first): its build (from the cache) knows where it is
        path = corpus_path(node.get("corpus"), instantiate(cfg.data))
    index = passage_index(node, load_corpus(path, cache_dir), cache_dir)
    return QuestionRetriever(index, node.k, node.max_passage_length)
