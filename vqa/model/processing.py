"""`VQAProcessor`: the question tokenizer (the text encoder's), the answer tokenizer (the decoder's) and the image
encoder's own image processor, saved beside the model; and `VQACollator`, which turns dataset rows into batches.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image
import torch
import transformers
from PIL.Image import Image
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoImageProcessor, AutoTokenizer, PreTrainedTokenizerFast
from transformers.utils import is_torchvision_available

from vqa.data.images import to_rgb
from vqa.errors import CheckpointError

logger = logging.getLogger(__name__)

QUESTION_TOKENIZER_DIR = "question_tokenizer"
ANSWER_TOKENIZER_DIR = "answer_tokenizer"
PROCESSOR_CONFIG = "vqa_processor.json"
PROCESSOR_SETTINGS = ("max_question_length", "max_answer_length")  # what PROCESSOR_CONFIG holds
UNDECODABLE_IMAGES = "undecodable_images"  # batch key: how many rows had an image that could not be decoded
# An objective's extra batch keys: (processor, rows, the batch so far, rows without their image) -> more keys.
BatchExtras = Callable[["VQAProcessor", list[dict[str, Any]], dict[str, Any], list[int]], dict[str, Any]]
# The tiny answer vocabulary's special tokens, at the ids VQAConfig.tiny() expects (pad 0, BOS 1, EOS 2).
ANSWER_SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")
QUESTION_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class VQAProcessor:
    """Turns questions, images and answers into model inputs, and generated ids back into answer strings.

    Args:
        question_tokenizer: the text encoder's tokenizer (WordPiece for DistilBERT).
        answer_tokenizer: the decoder's tokenizer (byte-level BPE for GPT-2); needs BOS, EOS and pad ids.
        image_processor: the image encoder's processor, so preprocessing matches its pretraining.
        max_question_length: questions are truncated to this many tokens ([CLS] and [SEP] included).
        max_answer_length: answers are truncated to this many tokens, EOS included.
    """

    def __init__(
        self,
        question_tokenizer: Any,
        answer_tokenizer: Any,
        image_processor: Any,
        max_question_length: int = 32,
        max_answer_length: int = 8,
    ) -> None:
        if answer_tokenizer.pad_token_id is None:
            # GPT-2 has no pad token; padded label positions are -100 and masked, so EOS can stand in.
            answer_tokenizer.pad_token = answer_tokenizer.eos_token
        for name in ("bos_token_id", "eos_token_id"):
            if getattr(answer_tokenizer, name) is None:
                raise ValueError(f"answer tokenizer: {name} is None, expected a token that starts/ends answers")
        self.question_tokenizer = question_tokenizer
        self.answer_tokenizer = answer_tokenizer
        self.image_processor = image_processor
        self.max_question_length = max_question_length
        self.max_answer_length = max_answer_length

    # --- construction -------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained_components(
        cls,
        text_encoder: str | os.PathLike[str],
        image_encoder: str | os.PathLike[str],
        decoder: str | os.PathLike[str],
        **kwargs: Any,
    ) -> VQAProcessor:
        """The tokenizers and image processor of pretrained components (hub names or local folders)."""
        return cls(
            AutoTokenizer.from_pretrained(text_encoder),
            AutoTokenizer.from_pretrained(decoder),
            AutoImageProcessor.from_pretrained(image_encoder),
            **kwargs,
        )

    @classmethod
    def train_tiny(
        cls,
        questions: Iterable[str],
        answers: Iterable[str],
        image_size: int = 64,
        question_vocab_size: int = 1000,
        answer_vocab_size: int = 300,
        **kwargs: Any,
    ) -> VQAProcessor:
        """Tokenizers trained offline on the training split's text, for the tiny preset.

        Questions get a lowercasing WordPiece tokenizer (as DistilBERT's); answers a byte-level BPE (as GPT-2's),
        with pad, BOS and EOS at ids 0, 1, 2. Images are resized to `image_size` and scaled to [-1, 1].
        """
        return cls(
            _train_wordpiece(questions, question_vocab_size),
            _train_byte_level_bpe(answers, answer_vocab_size),
            tiny_image_processor(image_size),
            **kwargs,
        )

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> VQAProcessor:
        """Load what `save_pretrained` wrote."""
        path = Path(path)
        settings = json.loads((path / PROCESSOR_CONFIG).read_text())
        settings = settings if isinstance(settings, dict) else {}
        missing = [name for name in PROCESSOR_SETTINGS if not isinstance(settings.get(name), int)]
        unknown = sorted(set(settings) - set(PROCESSOR_SETTINGS))
        if unknown:
            raise CheckpointError(
                f"{path / PROCESSOR_CONFIG}: unknown key {unknown[0]!r}; expected only {', '.join(PROCESSOR_SETTINGS)}"
            )
        if missing:
            # Defaults would silently cut questions and answers at other lengths than training did.
            raise CheckpointError(
                f"{path / PROCESSOR_CONFIG}: {', '.join(missing)} missing or not an integer; "
                f"expected the file VQAProcessor.save_pretrained writes ({', '.join(PROCESSOR_SETTINGS)})"
            )
        return cls(
            AutoTokenizer.from_pretrained(path / QUESTION_TOKENIZER_DIR),
            AutoTokenizer.from_pretrained(path / ANSWER_TOKENIZER_DIR),
            AutoImageProcessor.from_pretrained(path),
            **settings,
        )

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        """Write both tokenizers (in subfolders) and the image processor; loadable beside the model's files."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.question_tokenizer.save_pretrained(path / QUESTION_TOKENIZER_DIR)
        self.answer_tokenizer.save_pretrained(path / ANSWER_TOKENIZER_DIR)
        self.image_processor.save_pretrained(path)
        settings = {name: getattr(self, name) for name in PROCESSOR_SETTINGS}
        (path / PROCESSOR_CONFIG).write_text(json.dumps(settings, indent=2))

    # --- encoding -----------------------------------------------------------------------------------------------

    @property
    def question_vocab_size(self) -> int:
        return len(self.question_tokenizer)

    @property
    def answer_vocab_size(self) -> int:
        return len(self.answer_tokenizer)

    def encode_questions(self, questions: Sequence[str]) -> dict[str, torch.Tensor]:
        """-> input_ids and attention_mask, (B, Lq), right-padded to the longest question."""
        encoded = self.question_tokenizer(
            list(questions), padding=True, truncation=True, max_length=self.max_question_length, return_tensors="pt"
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def encode_passages(self, passages: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
        """-> passage_input_ids and passage_attention_mask, (P, Lp): passages tokenized like questions, cut to
        `max_length` tokens (the run's `retrieval.max_passage_length`)."""
        encoded = self.question_tokenizer(
            list(passages), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return {"passage_input_ids": encoded["input_ids"], "passage_attention_mask": encoded["attention_mask"]}

    def encode_images(self, images: Sequence[Image]) -> torch.Tensor:
        """-> pixel_values (B, 3, H, W). Greyscale and RGBA images are converted to RGB first."""
        rgb = [to_rgb(image) for image in images]  # 16-bit, float and transparent images keep their pixels
        return self.image_processor(rgb, return_tensors="pt")["pixel_values"]

    def encode_answers(self, answers: Sequence[str]) -> torch.Tensor:
        """-> labels (B, T): answer tokens then EOS, -100 after. The model prepends BOS for its inputs."""
        tokenizer = self.answer_tokenizer
        token_ids = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
        rows = [[*ids[: self.max_answer_length - 1], tokenizer.eos_token_id] for ids in token_ids]
        labels = torch.full((len(rows), max(map(len, rows))), -100, dtype=torch.long)
        for index, row in enumerate(rows):
            labels[index, : len(row)] = torch.tensor(row)
        return labels

    def __call__(
        self, questions: Sequence[str], images: Sequence[Image], answers: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Model inputs for a batch: input_ids, attention_mask, pixel_values and, with answers, labels."""
        batch = self.encode_questions(questions)
        batch["pixel_values"] = self.encode_images(images)
        if answers is not None:
            batch["labels"] = self.encode_answers(answers)
        return batch

    def decode_answers(self, token_ids: torch.Tensor) -> list[str]:
        """(B, N) generated ids (as from `VQAModel.generate`) -> answer strings, special tokens dropped."""
        texts = self.answer_tokenizer.batch_decode(token_ids.tolist(), skip_special_tokens=True)
        return [text.strip() for text in texts]


@dataclass
class VQACollator:
    """DataLoader `collate_fn`: rows of the shared schema -> a batch of model inputs.

    It runs in the DataLoader's worker processes, so image decoding and preprocessing happen there too. Each
    distinct question text in the batch is tokenized once: `input_ids` and `attention_mask` are (M, Lq) and
    `question_index` (B,) maps every example to its row. When the `image` column is not decoded
    (`Image(decode=False)`, as training uses it), each distinct image file in the batch is decoded once, and
    `image_index` (B,) maps every example to its row of `pixel_values` (N, 3, H, W). Already-decoded PIL images are
    used as they are, one per example.

    Args:
        answer_column: the training target; `multiple_choice_answer` is the most common of the ten human answers.
        with_labels: False to leave labels out; rows without an answer (test splits) never get them.
        features: cached encoder outputs by component (`vqa.training.feature_cache.build_lookups`): with `text_encoder`,
            batches carry `question_features` instead of `input_ids`; with `image_encoder`, `image_features`
            (N, I, Hv) of the distinct images instead of `pixel_values`, and no image is decoded.
        inputs: the model's `config.inputs`; with `"question_only"` no image is read at all.
        distinct_questions: False gives one question row per example and no `question_index`.
        batch_extras: what the training objective adds to each batch beyond the model inputs: its
            `batch_extras(processor, rows, batch, undecodable)` (`vqa.training.objectives`), called after the labels;
            the soft targets of `objective=soft`, the texts of `objective=rl`.
        passages: passage id -> text (`vqa.retrieval`); with it, rows' `passage_ids` (K each) become
            `passage_input_ids` and `passage_attention_mask` (P, Lp) of the batch's P distinct passages, tokenized
            like questions, and `passage_index` (B, K). None: passages are not read.
        max_passage_length: passages are cut to this many tokens.
    """

    processor: VQAProcessor
    answer_column: str = "multiple_choice_answer"
    with_labels: bool = True
    features: dict[str, Any] | None = None
    inputs: str = "both"
    distinct_questions: bool = True
    batch_extras: BatchExtras | None = None
    passages: Mapping[str, str] | None = None
    max_passage_length: int = 64

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        questions = [row["question"] for row in rows]
        if self.distinct_questions:
            distinct_questions: dict[str, int] = {}
            # First in the batch: the Trainer reads the batch size from the first tensor.
            batch["question_index"] = torch.tensor(
                [distinct_questions.setdefault(question, len(distinct_questions)) for question in questions]
            )
            questions = list(distinct_questions)
        batch.update(self._questions(questions))
        if self.passages is not None:
            batch.update(self._passages([row["passage_ids"] for row in rows]))
        undecodable: list[int] = []
        if self.inputs != "question_only":
            batch.update(self._images([row["image"] for row in rows], undecodable))
        # Test splits have no answers: their batches carry no labels.
        if self.with_labels and all(row[self.answer_column] is not None for row in rows):
            batch["labels"] = self.processor.encode_answers([row[self.answer_column] for row in rows])
            # A row without its image must not teach the model to answer from a blank one.
            batch["labels"][undecodable] = -100
        if self.batch_extras is not None:
            batch.update(self.batch_extras(self.processor, rows, batch, undecodable))
        if undecodable:
            batch[UNDECODABLE_IMAGES] = torch.tensor([len(undecodable)])
        return batch

    def _questions(self, questions: list[str]) -> dict[str, torch.Tensor]:
        """(M, Lq) attention_mask with input_ids, or with the cached question_features (M, Lq, Ht)."""
        if "text_encoder" in (self.features or {}):
            question_features, attention_mask = self.features["text_encoder"].stack(questions)
            return {"attention_mask": attention_mask, "question_features": question_features}
        return self.processor.encode_questions(questions)

    def _passages(self, passage_ids: list[list[str]]) -> dict[str, torch.Tensor]:
        """The distinct passages of the batch, tokenized once each, and every example's (K,) rows of them."""
        counts = sorted({len(ids) for ids in passage_ids})
        if len(counts) != 1:
            raise ValueError(f"passage_ids: rows with {counts} passages in one batch, expected one number for all")
        distinct: dict[str, int] = {}
        index = torch.tensor([[distinct.setdefault(key, len(distinct)) for key in ids] for ids in passage_ids])
        missing = [key for key in distinct if key not in self.passages]
        if missing:
            raise ValueError(f"passage_ids: {missing[0]!r} is not in the corpus the collator was given")
        texts = [self.passages[key] for key in distinct]
        return self.processor.encode_passages(texts, self.max_passage_length) | {"passage_index": index}

    def _images(self, images: list[Any], undecodable: list[int]) -> dict[str, torch.Tensor]:
        """pixel_values (or cached image_features) of the distinct images and image_index, or one image per row.

        An image file that cannot be decoded (changed on disk since the build verified it) does not stop the run:
        it becomes a blank image, its rows are appended to `undecodable` and the file is named in the log.
        """
        features = self.features or {}
        if all(isinstance(image, dict) for image in images):
            distinct: dict[str, int] = {}
            image_index = torch.tensor([distinct.setdefault(_image_key(image), len(distinct)) for image in images])
            if "image_encoder" in features:
                return {
                    "image_features": features["image_encoder"].stack(list(distinct))[0],
                    "image_index": image_index,
                }
            decoded = [_open_or_none(path) for path in distinct]
            for row, index in enumerate(image_index.tolist()):
                if decoded[index] is None:
                    undecodable.append(row)
            blank = PIL.Image.new("RGB", next((image.size for image in decoded if image is not None), (64, 64)))
            pixel_values = self.processor.encode_images([blank if image is None else image for image in decoded])
            return {"pixel_values": pixel_values, "image_index": image_index}
        if "image_encoder" in features:
            raise ValueError("image: cached image features need undecoded images (paths); got decoded images")
        return {"pixel_values": self.processor.encode_images(images)}


def _image_key(image: dict[str, Any]) -> str:
    if image.get("path"):
        return image["path"]
    raise ValueError("image: an undecoded image without a path; expected the dataset's image paths")


def _open_or_none(path: str) -> Image | None:
    """The decoded image, or None (with a warning naming the file) when it cannot be decoded."""
    try:
        return open_image(path)
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
        logger.warning("image %s cannot be decoded (%s): its questions use a blank image, without a loss", path, error)
        return None


def open_image(path: str) -> Image:
    """The image file at `path`, read fully (the file is closed afterwards)."""
    with PIL.Image.open(path) as image:
        image.load()
        return image


def tiny_image_processor(image_size: int) -> Any:
    """A ViT image processor at `image_size` that scales pixels to [-1, 1]; the torchvision backend when present."""
    # Without torchvision (CPU hosts here) transformers falls back to the PIL backend with a warning; ask for it.
    processor_class = (
        transformers.ViTImageProcessor if is_torchvision_available() else transformers.ViTImageProcessorPil
    )
    return processor_class(size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def _train_wordpiece(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A lowercasing WordPiece tokenizer: whole words by frequency, with every seen character (and its `##` form)
    as the fallback, so no seen text maps to [UNK].

    Built by counting rather than with `WordPieceTrainer`, whose merges break ties in hash-map order and give
    different vocabularies in different processes (a seeded or resumed run would not reproduce).
    """
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    word_counts: Counter[str] = Counter()
    for text in texts:
        word_counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    characters = sorted({character for word in word_counts for character in word})
    pieces = [*QUESTION_SPECIAL_TOKENS, *characters, *(f"##{character}" for character in characters)]
    words = sorted((word for word in word_counts if len(word) > 1), key=lambda word: (-word_counts[word], word))
    pieces += words[: max(0, vocab_size - len(pieces))]
    tokenizer = Tokenizer(models.WordPiece(vocab={piece: i for i, piece in enumerate(pieces)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    pad, unk, cls_token, sep, mask = QUESTION_SPECIAL_TOKENS
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=pad,
        unk_token=unk,
        cls_token=cls_token,
        sep_token=sep,
        mask_token=mask,
        model_input_names=["input_ids", "attention_mask"],
    )


def _train_byte_level_bpe(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(ANSWER_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    pad, bos, eos = ANSWER_SPECIAL_TOKENS
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=pad, bos_token=bos, eos_token=eos)
