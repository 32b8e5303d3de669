"""Retrieval: a passage corpus (`corpus`), a dense FAISS index over a text encoder's vectors (`dense`,
`text_embedding`) or a BM25 index (`sparse`), both answering `search(queries, k)` with `Hit`s (`index`), and the
command that prints them (`python -m vqa.retrieval.search`)."""

from vqa.retrieval.corpus import Corpus, load_corpus
from vqa.retrieval.dense import DenseIndex
from vqa.retrieval.index import Hit, PassageIndex
from vqa.retrieval.sparse import BM25Index
from vqa.retrieval.text_embedding import TextEmbedder

__all__ = ["BM25Index", "Corpus", "DenseIndex", "Hit", "PassageIndex", "TextEmbedder", "load_corpus"]
