"""Model-and-processor builders named by the Hydra `model` group's `_target_`.

Each returns `(VQAModel, VQAProcessor)` with matching vocabularies and special-token ids. The annotations are the
settings' types and ranges (`vqa.model.settings`): the run's checks read them before any data is built.
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset

from vqa.data.schema import column
from vqa.model.classifier import answer_vocabulary
from vqa.model.configuration import VQAConfig
from vqa.model.modeling import VQAModel
from vqa.model.processing import VQAProcessor
from vqa.model.settings import Head, PositiveInt, Probability


def tiny_model_and_processor(
    train_split: Dataset,
    hidden_size: PositiveInt = 128,
    num_layers: PositiveInt = 2,
    num_heads: PositiveInt = 4,
    image_size: PositiveInt = 64,
    patch_size: PositiveInt = 8,
    dropout: Probability = 0.1,
    question_vocab_size: PositiveInt = 1000,
    answer_vocab_size: PositiveInt = 300,
    max_question_length: PositiveInt = 32,
    max_answer_length: PositiveInt = 8,
    vision_conv_stem: bool = True,
    conditioned_bos: bool = True,
    head: Head = "generator",
    answer_min_count: PositiveInt = 9,
    passage_texts: list[str] | None = None,
    **settings: Any,
) -> tuple[VQAModel, VQAProcessor]:
    """Random-init small components; tokenizers trained on `train_split`'s questions (and the retrieval corpus's
    `passage_texts`, which are tokenized as questions are) and answers.

    The arguments are the tiny components' sizes, the tokenizers', two choices for components trained from scratch
    that `VQAConfig` leaves off by default (a convolutional stem for the ViT, a BOS conditioned on question and
    image), and the head (`head="classifier"`: over the training answers given at least `answer_min_count` times);
    every other key of the `model` config node
    (fusion, inputs, freeze, LoRA, a fusion's own settings, ...) goes to `VQAConfig` as it is, so a new setting
    needs no change here.
    """
    processor = VQAProcessor.train_tiny(
        column(train_split, "question") + list(passage_texts or []),
        column(train_split, "multiple_choice_answer"),
        image_size=image_size,
        question_vocab_size=question_vocab_size,
        answer_vocab_size=answer_vocab_size,
        max_question_length=max_question_length,
        max_answer_length=max_answer_length,
    )
    config = VQAConfig.tiny(
        text_vocab_size=processor.question_vocab_size,
        answer_vocab_size=processor.answer_vocab_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        image_size=image_size,
        patch_size=patch_size,
        dropout=dropout,
        max_answer_tokens=max_answer_length,
        vision_conv_stem=vision_conv_stem,
        conditioned_bos=conditioned_bos,
        **head_settings(train_split, head, answer_min_count),
        **settings,
    )
    return with_answer_tokens(VQAModel(config), processor), processor


def pretrained_model_and_processor(
    train_split: Dataset,
    text_encoder: str,
    image_encoder: str,
    decoder: str,
    dropout: Probability | None = None,
    max_question_length: PositiveInt = 32,
    max_answer_length: PositiveInt = 8,
    head: Head = "generator",
    answer_min_count: PositiveInt = 9,
    passage_texts: list[str] | None = None,
    **settings: Any,
) -> tuple[VQAModel, VQAProcessor]:
    """Pretrained components by hub name or local folder; the tokenizers are theirs, so `train_split` only gives the
    classifier's answers (`head="classifier"`: those given at least `answer_min_count` times) and `passage_texts`
    (the retrieval corpus) are not needed.

    The encoders may be of any family `vqa.model.encoders` accepts: the class comes from each checkpoint's config.
    `dropout` sets every dropout probability of the three components; None keeps each checkpoint's own. Every other
    key of the `model` config node goes to `VQAConfig` as it is.
    """
    model = VQAModel.from_pretrained_components(
        text_encoder,
        image_encoder,
        decoder,
        dropout=dropout,
        max_answer_tokens=max_answer_length,
        **head_settings(train_split, head, answer_min_count),
        **settings,
    )
    processor = VQAProcessor.from_pretrained_components(
        text_encoder,
        image_encoder,
        decoder,
        max_question_length=max_question_length,
        max_answer_length=max_answer_length,
    )
    return with_answer_tokens(model, processor), processor


def head_settings(train_split: Dataset, head: str, answer_min_count: int) -> dict[str, Any]:
    """`VQAConfig`'s head settings: for the classifier, its answers, counted over the split's
    `multiple_choice_answer`s (`vqa.model.classifier.answer_vocabulary`)."""
    if head != "classifier":
        return {"head": head}
    answers = answer_vocabulary(column(train_split, "multiple_choice_answer"), answer_min_count)
    return {"head": head, "answer_vocabulary": answers}


def with_answer_tokens(model: VQAModel, processor: VQAProcessor) -> VQAModel:
    """The model, its classifier (if any) told each answer's tokens (what `generate` returns for the class)."""
    if model.answer_classifier is not None:
        model.answer_classifier.set_answer_tokens(processor.encode_answers(model.config.answer_vocabulary))
    return model
