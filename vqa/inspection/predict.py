"""Answer one question about one image with a trained checkpoint, and optionally show where the model looked.

    python -m vqa.inspection.predict --checkpoint outputs/DATE/TIME/checkpoint --image cat.jpg \\
        --question "what color is the cat?" --top-k 5 --attention-map cat_attention.png

A checkpoint that reads retrieved passages (trained with `retrieval=bm25|dense`) retrieves them as its run did
(`vqa.inspection.run_retrieval`; `--corpus` and `--k` replace the run's) and prints each passage read with its score
and its share of the decoder's cross-attention, instead of a map over question and image.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL.Image import Image

from vqa.data.images import OVERSIZED, ImageFileError, load_rgb
from vqa.errors import ArgumentParser, UserError, exit_on_user_error, exit_with
from vqa.inspection.attention import Head, Layer, evaluation_mode, explain, map_refusal
from vqa.inspection.attention_plots import plot_answer_attention, save_figure
from vqa.inspection.run_retrieval import (
    PassagesRead,
    QuestionRetriever,
    passage_retriever,
    question_inputs,
    read_passages,
)
from vqa.model.loading import load_checkpoint
from vqa.model.modeling import VQAModel, labels_from_answers
from vqa.model.processing import VQAProcessor

PER_EXAMPLE_INPUTS = ("input_ids", "attention_mask", "pixel_values", "passage_index")  # (1, ...) rows of one question


@torch.no_grad()
def top_answers(
    model: VQAModel,
    processor: VQAProcessor,
    image: Image,
    question: str,
    k: int = 5,
    passage_inputs: dict[str, torch.Tensor] | None = None,
) -> list[tuple[str, float]]:
    """Up to `k` answers with the model's probability of each (the whole answer sequence, EOS included).

    Candidates are the greedy answer and the `k` beams of a beam search; each is scored exactly by one
    teacher-forced pass, so the probabilities do not depend on beam search's length normalisation.
    `passage_inputs`: the passages the question reads (`QuestionRetriever.model_inputs`), for a passage model.
    """
    batch = question_inputs(model, processor, image, question, passage_inputs)
    with evaluation_mode(model):
        candidates = [model.generate(**batch)]
        if k > 1:
            candidates.append(model.generate(**batch, num_beams=k, num_return_sequences=k))
        width = max(ids.shape[1] for ids in candidates)
        pad = model.config.decoder_config.pad_token_id
        answer_ids = torch.cat([pad_right(ids, width, pad) for ids in candidates]).unique(dim=0)  # (C, N)
        labels = labels_from_answers(answer_ids, model.config.decoder_config.eos_token_id)
        count = labels.shape[0]
        # Every candidate reads the same inputs: the question's rows repeated, the passages' own rows shared.
        repeated = {
            name: tensor.expand(count, *tensor.shape[1:]) if name in PER_EXAMPLE_INPUTS else tensor
            for name, tensor in batch.items()
        }
        logits = model(**repeated, labels=labels).logits  # (C, N, V)
    log_probs = logits.float().log_softmax(dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    scores = (log_probs * (labels != -100)).sum(dim=1).exp().tolist()
    ranked = sorted(zip(processor.decode_answers(answer_ids), scores, strict=True), key=lambda pair: -pair[1])
    return ranked[:k]


def pad_right(ids: torch.Tensor, width: int, value: int) -> torch.Tensor:
    """(B, N) -> (B, width), right-padded with `value`."""
    return torch.nn.functional.pad(ids, (0, width - ids.shape[1]), value=value)


def parse_layer(text: str) -> Layer:
    return text if text in ("mean", "rollout") else int(text)


def parse_head(text: str) -> Head:
    return "mean" if text == "mean" else int(text)


def checked_question(text: str) -> str:
    """The question as given, refused when it is empty or not UTF-8 text.

    Bytes on the command line that are not UTF-8 reach Python as lone surrogates (surrogateescape): the tokenizer
    would fail on them, or read them as other characters.

    Raises:
        UserError: naming the first byte that is not UTF-8 and its position.
    """
    if not text.strip():
        raise UserError("--question: empty; expected a question in words")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(text[error.start])
        found = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"a lone surrogate U+{code:04X}"
        raise UserError(
            f"--question: not UTF-8 text ({found} at character {error.start}); expected a question in UTF-8 "
            "(check the terminal's encoding, e.g. LANG=C.UTF-8)"
        ) from None
    return text


def read_image(path: Path) -> Image:
    """The image file as 8-bit RGB (`vqa.data.images.load_rgb`: the build's pixel limit, pixels kept faithfully).

    Raises:
        UserError: the file is missing, not an image, truncated, or over PIL's decompression-bomb limit.
    """
    try:
        return load_rgb(path)
    except ImageFileError as error:
        expected = (
            "expected an image within the pixel limit the dataset build applies (downscale it)"
            if error.status == OVERSIZED
            else "expected an image file"
        )
        raise UserError(f"--image: cannot read {path} ({error.reason}); {expected}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m vqa.inspection.predict",
        description="Answer a question about an image with a trained checkpoint; optionally write an image of "
        "the decoder's cross-attention over the image patches and question tokens.",
    )
    parser.add_argument("--checkpoint", required=True, help="a run's checkpoint folder (model + processor)")
    parser.add_argument("--image", required=True, type=Path, help="image file (any format PIL reads)")
    parser.add_argument("--question", required=True, help="the question, in words")
    parser.add_argument("--top-k", type=int, default=1, help="print the K most probable answers with scores")
    parser.add_argument("--attention-map", type=Path, help="write the attention overlay to this PNG")
    parser.add_argument(
        "--layer", type=parse_layer, default="mean", help="decoder layer index, 'mean' (default) or 'rollout'"
    )
    parser.add_argument("--head", type=parse_head, default="mean", help="attention head index or 'mean' (default)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument(
        "--corpus",
        help="a checkpoint that reads passages: search this corpus instead of its run's (a .jsonl/.parquet file or "
        "the name of one of the dataset's own corpora, e.g. swapped)",
    )
    parser.add_argument(
        "--k", type=int, help="a checkpoint that reads passages: passages per question (default: the run's)"
    )
    return parser


def print_passages(retriever: QuestionRetriever, read: PassagesRead) -> None:
    """The passages read, best first, with the index's score and the share of cross-attention on each."""
    print(f"passages  {retriever.index.folder.name} over {retriever.index.corpus.path.name}, top {retriever.k}")
    print(f"  {'score':>8}  {'attention':>9}  passage")
    for position, hit in enumerate(read.hits):
        share = read.passage_share(position)
        print(f"  {hit.score:8.3f}  {100 * share:8.1f}%  [{hit.passage_id}] {retriever.text(hit)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.top_k < 1:
        exit_with(f"--top-k: {args.top_k}; expected 1 or more")
    with exit_on_user_error():
        checked_question(args.question)
        image = read_image(args.image)
        model, processor = load_checkpoint(args.checkpoint, args.device)
        retriever = passage_retriever(model, args.checkpoint, args.corpus, args.k)
    length = len(processor.question_tokenizer(args.question)["input_ids"])
    if length > processor.max_question_length:
        print(
            f"note: the question has {length} tokens; the model reads its first {processor.max_question_length}",
            file=sys.stderr,
        )

    refusal = map_refusal(model)
    if refusal is not None and args.attention_map:
        exit_with(f"--attention-map: {refusal}")
    read = read_passages(model, processor, retriever, image, args.question) if retriever is not None else None
    passage_inputs = read.inputs if read is not None else None
    if refusal is not None:
        # Blind baselines, pooled fusion and passage models have no map over question and image: answers only.
        maps = None
        answer = top_answers(model, processor, image, args.question, 1, passage_inputs)[0][0]
    else:
        maps = explain(model, processor, image, args.question)
        answer = maps.answer
        try:
            image_share = maps.image_share(args.layer, args.head).mean()
        except ValueError as error:  # a layer or head index out of range
            exit_with(str(error))
    print(f"question  {args.question}")
    if read is not None:
        print_passages(retriever, read)
    print(f"answer    {answer}")
    if args.top_k > 1:
        print(f"top {args.top_k}")
        for answer, probability in top_answers(model, processor, image, args.question, args.top_k, passage_inputs):
            print(f"  {probability:8.4f}  {answer}")
    if read is not None:
        print(
            f"attention on the question {100 * read.shares.get('question', 0.0):.1f}%, the image "
            f"{100 * read.shares.get('image', 0.0):.1f}%, the passages {100 * read.all_passages_share:.1f}%"
        )
    if maps is not None:
        print(f"attention on the image  {100 * image_share:.1f}% (the rest on the question)")
    if maps is not None and args.attention_map:
        figure = plot_answer_attention(maps, args.layer, args.head)
        print(f"attention map  {save_figure(figure, args.attention_map)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
