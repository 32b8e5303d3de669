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
from PIL.Image import Image

from vqa.errors import UserError
from vqa.inspection.report import read_run_config
from vqa.inspection.segment_attention import segment_shares
from vqa.instantiate import instantiate
from vqa.model.modeling import VQAModel
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


@dataclass(frozen=True)
class PassagesRead:
    """What one question read: its passages, their model inputs, and the share of cross-attention on each segment.

    Attributes:
        hits: the passages, best first.
        inputs: their model inputs (`QuestionRetriever.model_inputs`).
        shares: fused segment name (`question`, `image`, `passage_0` ...) -> share of the answer's cross-attention
            (`vqa.inspection.segment_attention`); they sum to 1.
    """

    hits: list[Hit]
    inputs: dict[str, torch.Tensor]
    shares: dict[str, float]

    def passage_share(self, position: int) -> float:
        return self.shares.get(f"passage_{position}", 0.0)

    @property
    def all_passages_share(self) -> float:
        return sum(self.passage_share(position) for position in range(len(self.hits)))


def read_passages(
    model: VQAModel, processor: VQAProcessor, retriever: QuestionRetriever, image: Image, question: str
) -> PassagesRead:
    """Retrieve the question's passages and measure how much of the answer's attention went to each."""
    hits = retriever.retrieve(question)
    inputs = retriever.model_inputs(processor, hits)
    names, shares = segment_shares(model, question_inputs(model, processor, image, question, inputs))
    return PassagesRead(hits, inputs, dict(zip(names, shares[0].tolist(), strict=True)))


def question_inputs(
    model: VQAModel,
    processor: VQAProcessor,
    image: Image,
    question: str,
    passage_inputs: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The model inputs of one question about one image, with its passages when given, on the model's device."""
    batch = processor([question], [image]) | (passage_inputs or {})
    return {name: tensor.to(model.device) for name, tensor in batch.items()}


def passage_retriever(
    model: VQAModel, checkpoint: str | Path, corpus: str | None = None, k: int | None = None
) -> QuestionRetriever | None:
    """The command-line options `--corpus` and `--k` of predict and the demo: the checkpoint's retrieval for a model
    that reads passages (`checkpoint_retriever`), None for one that does not.

    Raises:
        UserError: k below 1, or either option given for a model that does not read passages.
    """
    if k is not None and k < 1:
        raise UserError(f"--k: {k}; expected 1 or more passages")
    if getattr(model.config, "passages", "none") != "none":
        return checkpoint_retriever(checkpoint, corpus, k)
    if corpus is not None or k is not None:
        option = "--corpus" if corpus is not None else "--k"
        raise UserError(f"{option}: this checkpoint does not read passages (it was trained without retrieval=...)")
    return None


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
