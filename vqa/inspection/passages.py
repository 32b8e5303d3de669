"""`python -m vqa.inspection.passages`: a trained retrieval run's model answering with other passages, no retraining.

    python -m vqa.inspection.passages outputs/<date>/<time>                     # as trained (its own retrieval)
    python -m vqa.inspection.passages outputs/<date>/<time> --passages none     # without passages: what they add
    python -m vqa.inspection.passages outputs/<date>/<time> --passages gold     # the gold passage: a perfect retriever
    python -m vqa.inspection.passages outputs/<date>/<time> --corpus swapped    # the swapped corpus: do answers follow?

The run's config.yaml gives the data and the retrieval settings; each option given replaces one of them. The split
(`--split`, default the run's final split) is answered with greedy decoding and scored with the official VQA
accuracy against its answers, the recall at k of the passages read is reported, and, where the split carries the
answers a corpus gives (`<corpus>_answer`, as easy-VQA facts' `swapped_answer`), the accuracy against those too: a
model that reads its passages scores high there with that corpus. `--attention N`: over the first N questions, the
share of the decoder's cross-attention on the question, the image, the passages and the gold passage (which passage
the answer read; `vqa.inspection.segment_attention`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from vqa.data.schema import column
from vqa.errors import ArgumentParser, UserError, exit_on_user_error
from vqa.evaluation.metrics import question_accuracy
from vqa.evaluation.scoring import score_split
from vqa.inspection.report import read_run_config
from vqa.inspection.segment_attention import segment_shares
from vqa.instantiate import instantiate
from vqa.model.loading import load_checkpoint
from vqa.model.modeling import VQAModel
from vqa.model.processing import VQACollator, VQAProcessor
from vqa.retrieval.attach import GOLD_COLUMN, PASSAGE_MODES, data_cache_dir, retrieval_stage
from vqa.training.trainer import with_image_paths


@torch.no_grad()
def answer_with_passages(
    model: VQAModel,
    processor: VQAProcessor,
    split: Dataset,
    passages: dict[str, str] | None,
    max_passage_length: int,
    batch_size: int = 64,
) -> list[str]:
    """Greedy answers to every question of `split` (in its order), each reading its `passage_ids` from `passages`
    (None: no passages)."""
    collator = VQACollator(processor, with_labels=False, passages=passages, max_passage_length=max_passage_length)
    loader = DataLoader(with_image_paths(split), batch_size=batch_size, collate_fn=collator)
    answers: list[str] = []
    for batch in tqdm(loader, desc="answering", unit="batch"):
        ids = model.generate(**{name: tensor.to(model.device) for name, tensor in batch.items()})
        answers += processor.decode_answers(ids)
    return answers


@torch.no_grad()
def attention_by_segment(
    model: VQAModel,
    processor: VQAProcessor,
    split: Dataset,
    passages: dict[str, str],
    max_passage_length: int,
    batch_size: int = 64,
) -> dict[str, float]:
    """Mean share (%) of the decoder's cross-attention on the question, the image, all passages and, where the split
    has gold passages, the gold passage among those read (0 when it was not retrieved), over `split`'s questions."""
    collator = VQACollator(processor, with_labels=False, passages=passages, max_passage_length=max_passage_length)
    has_gold = GOLD_COLUMN in split.column_names
    totals = {"question": 0.0, "image": 0.0, "passages": 0.0, **({"gold_passage": 0.0} if has_gold else {})}
    for start in tqdm(range(0, len(split), batch_size), desc="attention", unit="batch"):
        rows = with_image_paths(split.select(range(start, min(start + batch_size, len(split))))).to_list()
        batch = {name: tensor.to(model.device) for name, tensor in collator(rows).items()}
        names, shares = segment_shares(model, batch)
        for row, share in zip(rows, shares, strict=True):
            by_name = dict(zip(names, share.tolist(), strict=True))
            totals["question"] += by_name.get("question", 0.0)
            totals["image"] += by_name.get("image", 0.0)
            totals["passages"] += sum(value for name, value in by_name.items() if name.startswith("passage_"))
            if has_gold and row[GOLD_COLUMN] in row["passage_ids"]:
                totals["gold_passage"] += by_name[f"passage_{row['passage_ids'].index(row[GOLD_COLUMN])}"]
    return {name: round(100 * total / max(1, len(split)), 2) for name, total in totals.items()}


def corpus_accuracy(split: Dataset, answers: list[str], corpus: str | None) -> float | None:
    """Accuracy against the answers the named corpus gives (`<corpus>_answer` column), or None without them."""
    name = f"{corpus}_answer"
    if corpus is None or name not in split.column_names:
        return None
    expected = column(split, name)
    scores = [question_accuracy(answer, [truth] * 10) for answer, truth in zip(answers, expected, strict=True)]
    return round(100 * sum(scores) / max(1, len(scores)), 2)


def inspect_passages(
    run_dir: Path,
    passages: str | None,
    corpus: str | None,
    k: int | None,
    split_name: str | None,
    batch_size: int | None = None,
    attention_questions: int = 0,
) -> dict[str, Any]:
    """The run's model on one split with the retrieval settings changed as given; the report's entries."""
    cfg = read_run_config(run_dir / "config.yaml")
    if cfg is None or not cfg.get("retrieval"):
        raise UserError(f"{run_dir}: not a run with retrieval (its config.yaml has no retrieval settings)")
    model, processor = load_checkpoint(run_dir / "checkpoint")
    retrieval_node = cfg.retrieval.copy()
    for key, value in (("passages", passages), ("corpus", corpus), ("k", k)):
        if value is not None:
            OmegaConf.update(retrieval_node, key, value)
    split_name = split_name or cfg.final_split
    splits = instantiate(cfg.data)
    if split_name not in splits:
        raise UserError(f"--split: got {split_name!r}, expected one of {', '.join(splits)}")
    splits = type(splits)({split_name: splits[split_name]}, corpus_files=splits.corpus_files)
    retrieval = retrieval_stage(retrieval_node, splits, data_cache_dir(cfg.data))
    split = retrieval.splits[split_name]
    # The run's own evaluation batch size by default: the same batches, hence the same answers as its evaluation.
    batch_size = batch_size or OmegaConf.select(cfg, "trainer.args.per_device_eval_batch_size", default=64)
    answers = answer_with_passages(
        model, processor, split, retrieval.passages, retrieval_node.max_passage_length, batch_size
    )
    scores = score_split(split, answers)
    result = {
        "run": str(run_dir),
        "split": split_name,
        "retrieval": retrieval.report,
        "vqa_accuracy": scores.get("vqa_accuracy"),
        "corpus_answers_accuracy": corpus_accuracy(split, answers, retrieval_node.get("corpus")),
    }
    if attention_questions and retrieval.passages:
        sample = split.select(range(min(attention_questions, len(split))))
        result["attention_percent"] = attention_by_segment(
            model, processor, sample, retrieval.passages, retrieval_node.max_passage_length, batch_size
        )
        result["attention_questions"] = len(sample)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m vqa.inspection.passages",
        description="Answer a split with a trained retrieval run's model and other passages (none, gold, another "
        "corpus, another k), without retraining; print the accuracy and the recall at k.",
    )
    parser.add_argument("run", type=Path, help="a run folder (outputs/<date>/<time>) trained with retrieval=...")
    parser.add_argument("--passages", choices=PASSAGE_MODES, help="retrieved | gold | none (default: the run's)")
    parser.add_argument("--corpus", help="a corpus file, or a name of the dataset's own (facts, swapped)")
    parser.add_argument("-k", type=int, help="passages per question (default: the run's)")
    parser.add_argument("--split", help="the split to answer (default: the run's final split)")
    parser.add_argument("--batch-size", type=int, help="questions per batch (default: the run's evaluation batch size)")
    parser.add_argument(
        "--attention", type=int, default=0, metavar="N",
        help="also the share of cross-attention on question, image, passages and the gold passage, over the first N "
        "questions",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        result = inspect_passages(
            args.run, args.passages, args.corpus, args.k, args.split, args.batch_size, args.attention
        )
    retrieval = result["retrieval"]
    recall = (retrieval.get("recall_at_k") or {}).get(result["split"])
    print(f"split             {result['split']}")
    print(f"passages          {retrieval['passages']} (k = {retrieval['k']}) from {retrieval['corpus']}")
    print(f"recall at k       {'-' if recall is None else f'{recall:.2f}%'}")
    print(f"vqa_accuracy      {result['vqa_accuracy']}")
    if result["corpus_answers_accuracy"] is not None:
        print(f"corpus's answers  {result['corpus_answers_accuracy']} (against the answers this corpus gives)")
    if "attention_percent" in result:
        shares = ", ".join(f"{name} {value:.1f}%" for name, value in result["attention_percent"].items())
        print(f"attention         {shares} (first {result['attention_questions']} questions)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
