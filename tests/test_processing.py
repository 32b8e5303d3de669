"""VQAProcessor and VQACollator: tokenizers trained offline, pretrained-component loading, batches from rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from vqa import VQACollator, VQAConfig, VQAModel, VQAProcessor
from vqa.model.processing import tiny_image_processor

QUESTIONS = ["what color is the circle?", "is there a red shape in the image?", "what shape is present?"]
ANSWERS = ["blue", "yes", "rectangle"]


@pytest.fixture(scope="module")
def processor() -> VQAProcessor:
    return VQAProcessor.train_tiny(QUESTIONS * 20, ANSWERS * 20, image_size=32, max_answer_length=4)


def images(count: int) -> list[Image.Image]:
    return [Image.new("RGB", (40, 30), (10 * index, 0, 0)) for index in range(count)]


def rows(count: int) -> list[dict]:
    return [
        {"question": QUESTIONS[i % 3], "image": img, "multiple_choice_answer": ANSWERS[i % 3]}
        for i, img in enumerate(images(count))
    ]


def test_questions_are_padded_with_mask(processor: VQAProcessor) -> None:
    encoded = processor.encode_questions(QUESTIONS)
    lengths = encoded["attention_mask"].sum(1)
    assert encoded["input_ids"].shape == (3, int(lengths.max()))
    assert encoded["input_ids"][0, 0] == processor.question_tokenizer.cls_token_id
    padded = encoded["attention_mask"] == 0
    assert torch.all(encoded["input_ids"][padded] == processor.question_tokenizer.pad_token_id)
    assert padded.any()


def test_answers_end_with_eos_and_pad_with_minus_100(processor: VQAProcessor) -> None:
    labels = processor.encode_answers(["blue", "a very long answer indeed", "yes"])
    eos = processor.answer_tokenizer.eos_token_id
    assert labels.shape == (3, 4)  # max_answer_length, EOS included
    for row in labels.tolist():
        tokens = [token for token in row if token != -100]
        assert tokens[-1] == eos and eos not in tokens[:-1]
        assert row[len(tokens) :] == [-100] * (4 - len(tokens))
    assert processor.decode_answers(labels[[0, 2]].clamp(min=0)) == ["blue", "yes"]


def test_tiny_special_ids_match_the_tiny_model(processor: VQAProcessor) -> None:
    decoder_config = VQAConfig.tiny().decoder_config
    tokenizer = processor.answer_tokenizer
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (
        decoder_config.pad_token_id,
        decoder_config.bos_token_id,
        decoder_config.eos_token_id,
    )
    assert processor.question_tokenizer.pad_token_id == VQAConfig.tiny().text_config.pad_token_id


def test_images_become_normalised_pixels(processor: VQAProcessor) -> None:
    greyscale = Image.new("L", (50, 20), 255)
    pixels = processor.encode_images([greyscale, *images(1)])
    assert pixels.shape == (2, 3, 32, 32) and pixels.dtype == torch.float32
    torch.testing.assert_close(pixels[0], torch.ones(3, 32, 32))  # white scaled to [-1, 1]


def test_save_and_load_round_trip(processor: VQAProcessor, tmp_path: Path) -> None:
    processor.save_pretrained(tmp_path)
    loaded = VQAProcessor.from_pretrained(tmp_path)
    batch, again = VQACollator(processor)(rows(3)), VQACollator(loaded)(rows(3))
    assert batch.keys() == again.keys()
    for key, value in batch.items():
        assert torch.equal(value, again[key]), key
    assert loaded.max_answer_length == 4


def test_collator_batch_feeds_the_model(processor: VQAProcessor) -> None:
    model = VQAModel(
        VQAConfig.tiny(
            text_vocab_size=processor.question_vocab_size,
            answer_vocab_size=processor.answer_vocab_size,
            image_size=32,
        )
    ).eval()
    batch = VQACollator(processor)(rows(3))
    assert set(batch) == {"question_index", "input_ids", "attention_mask", "pixel_values", "labels"}
    assert torch.isfinite(model(**batch).loss)
    unlabelled = VQACollator(processor, with_labels=False)(rows(2))
    assert "labels" not in unlabelled
    answers = processor.decode_answers(model.generate(**unlabelled, max_new_tokens=3))
    assert len(answers) == 2 and all(isinstance(answer, str) for answer in answers)


def test_collator_runs_in_dataloader_workers(processor: VQAProcessor) -> None:
    dataset = rows(8)
    collator = VQACollator(processor)
    serial = list(torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=collator))
    parallel = list(torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collator))
    assert len(parallel) == 2
    for one, other in zip(serial, parallel, strict=True):
        for key in one:
            assert torch.equal(one[key], other[key]), key


def test_from_pretrained_components_reads_local_folders(processor: VQAProcessor, tmp_path: Path) -> None:
    processor.question_tokenizer.save_pretrained(tmp_path / "distilbert")
    # A GPT-2-like answer tokenizer: byte-level BPE, one <|endoftext|> for BOS and EOS, and no pad token.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(ANSWERS, trainers.BpeTrainer(special_tokens=["<|endoftext|>"], show_progress=False))
    gpt2_like = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    gpt2_like.save_pretrained(tmp_path / "gpt2")
    tiny_image_processor(32).save_pretrained(tmp_path / "vit")
    loaded = VQAProcessor.from_pretrained_components(tmp_path / "distilbert", tmp_path / "vit", tmp_path / "gpt2")
    assert loaded.answer_tokenizer.pad_token_id == loaded.answer_tokenizer.eos_token_id
    batch = VQACollator(loaded)(rows(2))
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    assert batch["labels"][0].tolist()[-1] == loaded.answer_tokenizer.eos_token_id
