"""A run's report page: `python -m vqa.inspection.report <run folder>` writes `report.html` into the folder.

    python -m vqa.inspection.report outputs/2026-12-06/10-00-00          # one run
    python -m vqa.inspection.report multirun/2026-12-06/10-00-00         # a sweep: its table and a plot per metric

One self-contained file (plots and images inline as PNG, styles inline, nothing fetched from the network), in the
order a researcher asks: the summary (metrics.json, run_card.json); loss and evaluation accuracy against step and
wall time (trainer_state.json); accuracy per answer type and per question type, worst first; the model beside the
answer priors and its shuffled-image check; a gallery of right and wrong answers, each with the image, the question,
the answer, the human answers and where the model looked (the attention overlay).

`train.py` writes it at the end of every run and every multirun (`report: false` turns that off).
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from datasets import Dataset
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vqa.data.schema import column, has_answers
from vqa.errors import ArgumentParser, UserError, exit_on_user_error, exit_with, one_line
from vqa.evaluation.baselines import AnswerPrior
from vqa.evaluation.metrics import question_accuracy
from vqa.evaluation.scoring import official_accuracy, score_split
from vqa.inspection.attention import explain_batch, map_refusal
from vqa.inspection.report_figures import accuracy_bars, attention_overlay, learning_curves, metric_by_run, plain_image
from vqa.inspection.report_html import RawHtml, escape, figure, page, percent, section, table
from vqa.inspection.sweep_report import (
    ERROR,
    SEED,
    STATUS,
    SweepRows,
    collect_rows,
    damaged_column,
    split_overrides,
)
from vqa.instantiate import instantiate
from vqa.model.loading import load_checkpoint

logger = logging.getLogger("vqa")

REPORT_FILE = "report.html"
EXAMPLES_PER_KIND = 6  # gallery: this many right and this many wrong answers


@dataclass
class Example:
    """One question of the gallery; `picture` is a PNG data URI: the attention overlay (`with_attention`) or the
    bare image."""

    question: str
    answer: str
    human_answers: list[str]
    accuracy: float | None
    picture: str
    with_attention: bool


def write_report(folder: Path, collected: SweepRows | None = None, **run_parts: Any) -> Path:
    """report.html for a run folder (`write_run_report`, given `run_parts`) or a multirun folder
    (`write_sweep_report`, given `collected`; a sweep's page has no gallery, so `run_parts` do not apply)."""
    if (folder / "metrics.json").is_file():
        return write_run_report(folder, **run_parts)
    if any(folder.glob("*/.hydra/overrides.yaml")):
        return write_sweep_report(folder, collected)
    raise UserError(
        f"{folder}: not a run folder (no metrics.json) nor a multirun folder (no <job>/.hydra/overrides.yaml); "
        "expected the folder of a finished run or sweep"
    )


def report_at_the_end(folder: Path, **parts: Any) -> None:
    """report.html for a run or a sweep (`parts`: what `vqa.inspection.report.write_report` can reuse). The run's own
    files are complete by now, so a report that fails is logged with its traceback instead of failing the run."""
    start = time.perf_counter()
    try:
        path = write_report(folder, **parts)
    except UserError as error:  # a folder the report cannot read (a sweep whose jobs all failed early, ...)
        logger.warning("report.html was not written: %s", one_line(str(error)))
        return
    except Exception:
        logger.exception("report.html was not written (the run's other files are complete)")
        return
    print(f"report            {path} ({time.perf_counter() - start:.1f} s)")


def write_run_report(
    run_dir: Path,
    splits: dict[str, Dataset] | None = None,
    model: Any = None,
    processor: Any = None,
    examples_per_kind: int = EXAMPLES_PER_KIND,
) -> Path:
    """Write `<run_dir>/report.html`. A run passes its `splits`, `model` and `processor` at its end; without them
    the splits are built again from the run's config.yaml (from the dataset cache) and the model is loaded from
    `checkpoint/` when the run has one."""
    metrics = read_json(run_dir / "metrics.json")
    card = read_json(run_dir / "run_card.json", required=False) or {}
    state = read_json(run_dir / "trainer_state.json", required=False) or {}
    cfg = read_run_config(run_dir / "config.yaml")
    if splits is None and cfg is not None:
        splits = instantiate(cfg.data)
    final_name = metrics.get("split") or (cfg.final_split if cfg is not None else None)
    final_split = splits.get(final_name) if splits is not None and final_name else None
    predictions = read_predictions(run_dir / "predictions.json", final_split)

    sections = [summary_section(run_dir, metrics, card, cfg)]
    curves = learning_curves_section(state.get("log_history", []))
    if curves:
        sections.append(curves)
    if final_split is not None and predictions is not None and has_answers(final_split):
        sections.append(per_type_section(final_split, predictions))
        sections.append(baselines_section(metrics, splits, final_split))
    elif metrics.get("vqa_accuracy_shuffled_images") is not None:
        sections.append(baselines_section(metrics, None, None))
    if final_split is not None and predictions is not None:
        if model is None and (run_dir / "checkpoint").is_dir():
            model, processor = load_checkpoint(run_dir / "checkpoint")
        seed = int(metrics.get("seed") or 0)
        sections.append(gallery_section(final_split, predictions, model, processor, examples_per_kind, seed))
    path = run_dir / REPORT_FILE
    path.write_text(page(f"Run {run_dir}", sections))
    return path


def write_sweep_report(sweep_dir: Path, collected: SweepRows | None = None) -> Path:
    """Write `<sweep_dir>/report.html`: the sweep's table (as `python -m vqa.inspection.sweep_report`), each run
    linked to its own report, and one bar plot per metric across the runs. `collected`: the sweep's rows when the
    caller has read them already (`vqa.inspection.sweep_report.collect_rows`)."""
    rows, override_columns, metric_columns = collected or collect_rows(sweep_dir)
    varying, common = split_overrides(rows, override_columns)
    columns = ["run", SEED, STATUS, *varying, *metric_columns, *damaged_column(rows)]
    body = [f"<p>{len(rows)} runs. Common overrides: <code>{escape(' '.join(common) or 'none')}</code></p>"]
    table_rows = []
    for row in rows:
        cells = [row.get(column) for column in columns]
        if (sweep_dir / row["run"] / REPORT_FILE).is_file():  # a relative link to a local file: nothing fetched
            cells[0] = RawHtml(f'<a href="{escape(row["run"])}/{REPORT_FILE}">{escape(row["run"])}</a>')
        table_rows.append(cells)
    body.append(table(columns, table_rows))
    body.extend(
        f"<p>run {escape(row['run'])} failed: {escape(row[ERROR])}</p>" for row in rows if row[STATUS] == "failed"
    )
    for metric in metric_columns:
        values = [row.get(metric) for row in rows]
        if any(value is not None for value in values):
            body.append(figure(metric_by_run([row["run"] for row in rows], values, metric), metric))
    path = sweep_dir / REPORT_FILE
    path.write_text(page(f"Sweep {sweep_dir}", [section("sweep", "Runs", "".join(body))]))
    return path


# Sections -------------------------------------------------------------------------------------------------------


def validation_rows(validation: dict[str, Any] | None) -> list[list[Any]]:
    """The summary's row for the split model selection read (metrics.json's `validation`), when the run has one."""
    if not validation or validation.get("vqa_accuracy") is None:
        return []
    described = f"{validation.get('num_questions')} {validation.get('split')} questions, what searches maximise"
    return [["validation", f"{percent(validation['vqa_accuracy'])} on {described}"]]


def summary_section(run_dir: Path, metrics: dict[str, Any], card: dict[str, Any], cfg: DictConfig | None) -> str:
    accuracy = metrics.get("vqa_accuracy")
    rows: list[list[Any]] = [
        ["VQA accuracy", f"{percent(accuracy)} on {metrics.get('num_questions')} {metrics.get('split')} questions"],
        *validation_rows(metrics.get("validation")),
        *[[f"  {name}", percent(value)] for name, value in (metrics.get("per_answer_type") or {}).items()],
        ["shuffled images", percent(metrics.get("vqa_accuracy_shuffled_images"))],
        ["seed", str(metrics.get("seed"))],
    ]
    if cfg is not None:
        model = cfg.get("model") or {}
        rows += [
            ["model", f"{model.get('_target_', '')} (fusion {model.get('fusion')}, freeze {model.get('freeze')})"],
            ["data", (cfg.get("data") or {}).get("_target_", "")],
            ["objective", (cfg.get("objective") or {}).get("_target_", "")],
        ]
    if card:
        rows += [
            ["wall time", f"{card.get('wall_seconds')} s (training {card.get('train_seconds')} s)"],
            ["throughput", f"{card.get('train_samples_per_second')} training samples/s"],
            ["device", f"{card.get('device')}, world size {card.get('world_size')}"],
            ["git commit", card.get("git_commit")],
        ]
    rows += retrieval_rows(metrics.get("retrieval"))
    dropped = {reason: count for reason, count in ((metrics.get("data") or {}).get("dropped") or {}).items() if count}
    if dropped:
        rows.append(["records dropped", ", ".join(f"{reason}: {count}" for reason, count in dropped.items())])
    return section("summary", "Summary", table(["", ""], rows, header=False) + f"<p class=muted>{escape(run_dir)}</p>")


def retrieval_rows(retrieval: dict[str, Any] | None) -> list[list[Any]]:
    """The summary's rows for a run that read retrieved passages (metrics.json's `retrieval`), when it did."""
    if not retrieval:
        return []
    read = f"top {retrieval.get('k')} of {retrieval.get('index')}" if retrieval.get("k") else retrieval.get("passages")
    rows = [["passages", f"{read} over {Path(str(retrieval.get('corpus'))).name}"]]
    recall = retrieval.get("recall_at_k") or {}
    if recall:
        rows.append(
            [
                f"recall at {retrieval.get('k') or 1} (%)",
                ", ".join(f"{name} {percent(value)}" for name, value in recall.items()),
            ]
        )
    return rows


def learning_curves_section(log_history: list[dict[str, Any]]) -> str | None:
    picture = learning_curves(log_history)
    if picture is None:
        return None
    return section("curves", "Learning curves", figure(picture, "loss and evaluation accuracy"))


def per_type_section(split: Dataset, predictions: list[str]) -> str:
    """Accuracy per answer type and per question type (official rules), worst first, with the question counts."""
    accuracy = official_accuracy(split, predictions)
    answer_types, question_types = column(split, "answer_type"), column(split, "question_type")
    body = []
    for title, per_type, counts in [
        ("answer type", accuracy["perAnswerType"], Counter(map(str, answer_types))),
        ("question type", accuracy["perQuestionType"], Counter(map(str, question_types))),
    ]:
        worst_first = sorted(per_type.items(), key=lambda item: (item[1], item[0]))
        body.append(f"<h3>Per {title}, worst first</h3>")
        body.append(table([title, "VQA accuracy", "questions"], [[n, a, counts[n]] for n, a in worst_first]))
        if len(worst_first) > 1:
            names, values = zip(*worst_first, strict=True)
            body.append(figure(accuracy_bars(names, values, f"per {title}"), f"accuracy per {title}"))
    return section("per-type", "Accuracy per answer type and question type", "".join(body))


def baselines_section(metrics: dict[str, Any], splits: dict[str, Dataset] | None, final_split: Dataset | None) -> str:
    """The model beside the answer priors (fitted on the training split, scored on the final split) and beside
    itself on shuffled images: how much of its accuracy needs the question, the image, both."""
    rows: list[list[Any]] = [["this run", percent(metrics.get("vqa_accuracy"))]]
    shuffled = metrics.get("vqa_accuracy_shuffled_images")
    if shuffled is not None and metrics.get("vqa_accuracy") is not None:
        drop = metrics["vqa_accuracy"] - shuffled
        rows.append(["this run, each question on a random other image", f"{percent(shuffled)} (drop {drop:.2f})"])
    if splits is not None and final_split is not None and "train" in splits:
        train = splits["train"]
        for by, label in [
            ("question_type", "most common training answer per question type"),
            ("global", "most common training answer"),
        ]:
            answers = AnswerPrior.fit_split(train, by).answer_split(final_split)[0]
            rows.append([label, percent(score_split(final_split, answers).get("vqa_accuracy"))])
    note = (
        "<p class=muted>A model that reads the image drops sharply on shuffled images; a model near the priors "
        "answers from the question alone.</p>"
    )
    return section("baselines", "Baselines and the shuffled-image check", table(["", "VQA accuracy"], rows) + note)


def gallery_section(
    split: Dataset, predictions: list[str], model: Any, processor: Any, per_kind: int, seed: int
) -> str:
    """Right and wrong answers (full and no credit by the official rules), a seeded sample of each; for a split
    without human answers, a sample of answers."""
    rng = random.Random(seed)
    answered = has_answers(split)
    human_answers = column(split, "answers")
    scores = [question_accuracy(p, h) if answered else None for p, h in zip(predictions, human_answers, strict=True)]
    if answered:
        right = [index for index, score in enumerate(scores) if score == 1.0]
        wrong = [index for index, score in enumerate(scores) if score == 0.0]
        chosen = sorted(rng.sample(right, min(per_kind, len(right)))) + sorted(
            rng.sample(wrong, min(per_kind, len(wrong)))
        )
    else:
        chosen = sorted(rng.sample(range(len(split)), min(2 * per_kind, len(split))))
    if not chosen:
        return section("gallery", "Sample predictions", "<p class=muted>No questions to show.</p>")
    rows = split.select(chosen)
    images, questions = list(rows["image"]), list(rows["question"])
    refusal = "no model (this run has no checkpoint)" if model is None else map_refusal(model)
    maps = explain_batch(model, processor, images, questions) if refusal is None else None
    examples = [
        Example(
            question=questions[position],
            answer=predictions[index],
            human_answers=list(rows[position]["answers"] or []),
            accuracy=scores[index],
            picture=attention_overlay(maps[position]) if maps is not None else plain_image(images[position]),
            with_attention=maps is not None,
        )
        for position, index in enumerate(chosen)
    ]
    note = (
        "<p class=muted>Overlay: the decoder's cross-attention on the image patches while it writes its greedy "
        "answer (the card's answer unless the run evaluated with beam search), mean over layers and heads, "
        "averaged over the answer's tokens; the percentage is its share on the image rather than the question.</p>"
        if maps is not None
        else f"<p class=muted>No attention overlays: {escape(refusal)}.</p>"
    )
    cards = "".join(example_card(example) for example in examples)
    return section("gallery", "Sample predictions", note + f'<div class="gallery">{cards}</div>')


def example_card(example: Example) -> str:
    """One gallery card: the picture, the question, the answer with its score, the human answers with counts."""
    alt = "attention overlay" if example.with_attention else "image"
    kind = "" if example.accuracy is None else ("right" if example.accuracy == 1.0 else "wrong")
    humans = ", ".join(f"{escape(answer)} ({count})" for answer, count in Counter(example.human_answers).most_common())
    answer = (
        f'<span class="answer">{escape(example.answer)}</span>'
        if example.answer
        else '<span class="answer muted">(empty answer)</span>'
    )
    score = "" if example.accuracy is None else f" <span class=muted>(VQA accuracy {100 * example.accuracy:.0f})</span>"
    return (
        f'<div class="card {kind}"><img alt="{alt}" src="{example.picture}">'
        f"<p><b>Q:</b> {escape(example.question)}</p>"
        f"<p><b>A:</b> {answer}{score}</p>" + (f"<p class=muted>humans: {humans}</p>" if humans else "") + "</div>"
    )


# Files -----------------------------------------------------------------------------------------------------------


def read_json(path: Path, required: bool = True) -> dict[str, Any] | None:
    """A run's JSON file that holds an object (metrics.json, run_card.json, trainer_state.json); None when it is
    missing and not `required`.

    Raises:
        UserError: missing (when required), unreadable, not JSON, or not a JSON object; naming the file.
    """
    content = _read_json(path, required)
    if content is not None and not isinstance(content, dict):
        raise UserError(f"{path}: a JSON {type(content).__name__}, expected the object a run writes")
    return content


def _read_json(path: Path, required: bool = True) -> Any:
    if not path.exists():
        if required:
            raise UserError(f"{path}: not found; expected the file of a finished run")
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:  # a folder, no permission, not text
        raise UserError(f"{path}: cannot be read ({one_line(str(error))}); expected the file a run writes") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON ({error}); expected the file a run writes") from None


def read_run_config(path: Path) -> DictConfig | None:
    """A run's config.yaml (what it was run with), or None when the folder has none.

    Raises:
        UserError: unreadable, not YAML, or not the mapping with a `data` entry that a run writes; naming the file.
    """
    if not path.exists():
        return None
    try:
        cfg = OmegaConf.load(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException) as error:
        raise UserError(f"{path}: unreadable ({one_line(str(error))}); expected the config.yaml a run writes") from None
    if not isinstance(cfg, DictConfig) or not isinstance(cfg.get("data"), DictConfig):
        found = "no `data` mapping" if isinstance(cfg, DictConfig) else "a YAML list"
        raise UserError(f"{path}: {found}; expected the config.yaml a run writes (with its `data` settings)")
    return cfg


def read_predictions(path: Path, split: Dataset | None) -> list[str] | None:
    """predictions.json's answers in the split's row order; None without the file or the split.

    Raises:
        UserError: a damaged file (not JSON, not a list of {question_id, answer} objects), or a question of the
            split without an answer in it.
    """
    if split is None or not path.exists():
        return None
    by_question = prediction_answers(path, _read_json(path))
    question_ids = column(split, "question_id")
    missing = [qid for qid in question_ids if qid not in by_question]
    if missing:
        raise UserError(
            f"{path}: no answer for {len(missing)} of the split's {len(split)} questions (first: question_id "
            f"{missing[0]}); expected the predictions of this run's final split"
        )
    return [by_question[qid] for qid in question_ids]


def prediction_answers(path: Path, content: Any) -> dict[Any, str]:
    """{question_id: answer} from predictions.json's content (`[{"question_id": ..., "answer": "..."}, ...]`).

    Raises:
        UserError: naming the file and the first entry that is not such an object.
    """
    expected = 'expected the predictions a run writes, [{"question_id": ..., "answer": "..."}, ...]'
    if not isinstance(content, list):
        raise UserError(f"{path}: a JSON {type(content).__name__}; {expected}")
    answers: dict[Any, str] = {}
    for index, entry in enumerate(content):
        if not isinstance(entry, dict) or "question_id" not in entry or not isinstance(entry.get("answer"), str):
            raise UserError(f"{path}: entry [{index}] is {repr(entry)[:60]}; {expected}")
        answers[entry["question_id"]] = entry["answer"]
    return answers


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m vqa.inspection.report", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a run folder (outputs/<date>/<time>) or a multirun folder")
    parser.add_argument(
        "--examples", type=int, default=EXAMPLES_PER_KIND, help="gallery: right and wrong answers shown of each"
    )
    args = parser.parse_args(argv)
    if args.examples < 0:
        exit_with(f"--examples: {args.examples}; expected 0 or more")
    with exit_on_user_error():
        path = write_report(args.folder, examples_per_kind=args.examples)
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
