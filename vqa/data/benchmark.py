"""What a benchmark adds to the shared schema at the end of a run: its official scores and its upload file.

Every split with human answers gets the VQA accuracy (`vqa_accuracy`, `vqa.evaluation.scoring.score_split`), which
model selection reads. A benchmark adds its official entries beside it, named after the benchmark: where its metric
differs (GQA's exact match, A-OKVQA's direct-answer and multiple-choice accuracy, TextVQA's and VizWiz's
normalisation) and where it reports more (OK-VQA's knowledge categories, VizWiz's answerability). It also writes its
predictions in the format its evaluation server takes. A data module hands its `Benchmark` to the run through
`TrainingSplits.benchmark`; VQA v2 and easy-VQA use `VQA`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset

# (split, predictions in its row order) -> flat metric entries, e.g. {"gqa_accuracy": 61.2}. Called only on splits
# with human answers; the entries are logged at every evaluation (as eval_<name>) and land in metrics.json.
Scorer = Callable[[Dataset, Sequence[str]], dict[str, float]]
# (split, predictions in its row order) -> the content of predictions.json, in the benchmark's upload format.
Uploader = Callable[[Dataset, Sequence[str]], Any]


def no_extra_scores(dataset: Dataset, predictions: Sequence[str]) -> dict[str, float]:
    """For benchmarks whose official metric is the VQA accuracy itself."""
    return {}


def question_id_results(dataset: Dataset, predictions: Sequence[str]) -> list[dict[str, Any]]:
    """The VQA v2 upload format, `[{"question_id": int, "answer": str}]`, in the split's order."""
    return [
        {"question_id": question_id, "answer": answer}
        for question_id, answer in zip(dataset["question_id"][:], predictions, strict=True)
    ]


@dataclass(frozen=True)
class Benchmark:
    """A data source's evaluation beyond the VQA accuracy.

    Attributes:
        name: the benchmark's name in metrics.json and the run summary ("vqa" for VQA v2 and easy-VQA, "gqa", ...).
        score: its official metrics (`Scorer`); entry names start with the benchmark's name.
        upload: its upload format (`Uploader`).
        upload_file: the run folder's file for the upload format. Every run also writes predictions.json in VQA v2's
            format (`question_id_results`, what the report and `vqa.evaluate` read); where that is the upload format
            too, the two are one file.
    """

    name: str
    score: Scorer = no_extra_scores
    upload: Uploader = question_id_results
    upload_file: str = "predictions.json"


VQA = Benchmark("vqa")
