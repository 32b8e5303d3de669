"""Retrieved passages as a third fused segment: the segments and masks, shared passage rows against one row per
example, padding, frozen or trained passage encoding, save and reload, and the refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import make_batch
from vqa import VQAConfig, VQAModel
from vqa.inspection.segment_attention import segment_shares
from vqa.model.fusion import segment_slices

PASSAGE_LENGTH = 6


def passage_model(passages: str = "frozen", **settings) -> VQAModel:
    torch.manual_seed(0)
    return VQAModel(VQAConfig.tiny(dropout=0.0, passages=passages, **settings)).eval()


def with_passages(batch: dict[str, torch.Tensor], index: list[list[int]], count: int = 4) -> dict[str, torch.Tensor]:
    """`batch` plus `count` random distinct passages (the second one padded) and each example's rows `index`."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 1000, (count, PASSAGE_LENGTH), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0
    ids[1, -2:] = 0
    return batch | {"passage_input_ids": ids, "passage_attention_mask": mask, "passage_index": torch.tensor(index)}


def per_example_rows(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same batch with every example's passages as rows of its own (no sharing)."""
    index = batch["passage_index"]
    flat = index.reshape(-1)
    return batch | {
        "passage_input_ids": batch["passage_input_ids"][flat],
        "passage_attention_mask": batch["passage_attention_mask"][flat],
        "passage_index": torch.arange(flat.numel()).reshape(index.shape),
    }


def test_passages_follow_question_and_image_as_named_segments_with_their_mask() -> None:
    model = passage_model()
    batch = with_passages(make_batch(), [[0, 1], [1, 2], [3, 0]])
    output = model(**batch)
    names = [name for name, _ in output.encoder_segments]
    assert names == ["question", "image", "passage_0", "passage_1"]
    slices = segment_slices(output.encoder_segments)
    mask = output.encoder_attention_mask
    assert mask.shape[1] == slices["passage_1"].stop
    # Example 0 reads passage 1 second: its two padding positions are masked; example 1 reads it first.
    assert mask[0, slices["passage_1"]].tolist() == [1, 1, 1, 1, 0, 0]
    assert mask[1, slices["passage_0"]].tolist() == [1, 1, 1, 1, 0, 0]
    assert mask[2, slices["passage_0"]].tolist() == [1] * PASSAGE_LENGTH


def test_shared_passage_rows_give_the_loss_gradients_and_answers_of_one_row_per_example() -> None:
    """Passages shared in the batch are encoded and projected once (and their cross-attention keys computed once):
    the same numbers as encoding every example's passages separately."""
    batch = with_passages(make_batch(), [[0, 1], [1, 0], [0, 1]], count=2)
    results = []
    for inputs in (batch, per_example_rows(batch)):
        model = passage_model("trained")
        output = model(**inputs)
        output.loss.backward()
        gradient = model.text_encoder.embeddings.word_embeddings.weight.grad.clone()
        answers = model.generate(**{key: value for key, value in inputs.items() if key != "labels"})
        results.append((output.logits.detach(), output.loss.detach(), gradient, answers))
    (logits, loss, gradient, answers), (logits_1, loss_1, gradient_1, answers_1) = results
    torch.testing.assert_close(logits, logits_1)
    torch.testing.assert_close(loss, loss_1)
    torch.testing.assert_close(gradient, gradient_1)
    assert torch.equal(answers, answers_1)


def test_padding_a_passage_or_reordering_an_examples_passages_changes_nothing() -> None:
    model = passage_model()
    batch = with_passages(make_batch(), [[0, 1], [1, 2], [3, 0]])
    logits = model(**batch).logits
    padded = batch | {
        "passage_input_ids": torch.nn.functional.pad(batch["passage_input_ids"], (0, 3)),
        "passage_attention_mask": torch.nn.functional.pad(batch["passage_attention_mask"], (0, 3)),
    }
    torch.testing.assert_close(model(**padded).logits, logits)
    # The decoder's cross-attention has no notion of the keys' order: retrieval rank is not an input.
    reordered = batch | {"passage_index": batch["passage_index"].flip(1)}
    torch.testing.assert_close(model(**reordered).logits, logits, atol=1e-5, rtol=1e-5)
    # Other passages are other inputs.
    other = batch | {"passage_index": torch.tensor([[2, 3], [0, 3], [1, 2]])}
    assert not torch.allclose(model(**other).logits, logits)


def test_frozen_passages_give_the_text_encoder_no_gradient_and_trained_ones_do() -> None:
    batch = with_passages(make_batch(), [[0, 1], [1, 2], [3, 0]])
    passage_only_tokens = sorted(
        set(batch["passage_input_ids"].flatten().tolist()) - set(batch["input_ids"].flatten().tolist()) - {0}
    )
    for passages, expect_gradient in (("frozen", False), ("trained", True)):
        model = passage_model(passages)
        model(**batch).loss.backward()
        gradient = model.text_encoder.embeddings.word_embeddings.weight.grad[passage_only_tokens]
        assert bool(gradient.abs().sum() > 0) == expect_gradient, passages
    # A frozen text encoder encodes passages without gradients whatever `passages` says.
    model = passage_model("trained", freeze="text_encoder")
    model.train()
    model(**batch).loss.backward()
    assert model.text_encoder.embeddings.word_embeddings.weight.grad is None


def test_a_passage_model_runs_without_passages_and_reloads_with_its_third_modality(tmp_path: Path) -> None:
    model = passage_model()
    assert model.fusion.modality_embedding.num_embeddings == 3
    batch = make_batch()
    without = model(**batch)
    assert [name for name, _ in without.encoder_segments] == ["question", "image"]
    with_them = with_passages(batch, [[0], [1], [2]])
    model.save_pretrained(tmp_path)
    reloaded = VQAModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.passages == "frozen"
    torch.testing.assert_close(reloaded(**with_them).logits, model(**with_them).logits)
    assert VQAModel(VQAConfig.tiny()).fusion.modality_embedding.num_embeddings == 2  # older checkpoints' shape


def test_the_classifier_head_reads_passages_too() -> None:
    model = passage_model(head="classifier", answer_vocabulary=["amber", "river", "honey"])
    batch = with_passages(make_batch(), [[0, 1], [1, 2], [3, 0]])
    output = model(**{key: value for key, value in batch.items() if key != "labels"})
    assert output.logits.shape == (3, 3) and output.encoder_segments[-1][0] == "passage_1"


def test_passages_are_refused_where_they_cannot_be_read() -> None:
    with pytest.raises(ValueError, match=r"VQAConfig\.passages: fusion='pooled' does not read passages"):
        VQAConfig.tiny(fusion="pooled", passages="frozen")
    with pytest.raises(ValueError, match=r"VQAConfig\.passages: got 'yes', expected one of none, frozen, trained"):
        VQAConfig.tiny(passages="yes")
    torch.manual_seed(0)
    plain = VQAModel(VQAConfig.tiny())
    with pytest.raises(ValueError, match="the batch has passages but the model has passages='none'"):
        plain(**with_passages(make_batch(), [[0], [1], [2]]))


def test_segment_shares_say_how_much_each_answer_read_of_each_passage() -> None:
    model = passage_model()
    batch = with_passages(make_batch(), [[0, 1], [1, 2], [3, 0]])
    names, shares = segment_shares(model, batch)
    assert names == ["question", "image", "passage_0", "passage_1"]
    assert shares.shape == (3, 4) and (shares > 0).all()
    torch.testing.assert_close(shares.sum(dim=1), torch.ones(3))
    # The classifier's one query at BOS reads the same segments.
    classifier = passage_model(head="classifier", answer_vocabulary=["amber", "river"])
    names, shares = segment_shares(classifier, batch)
    torch.testing.assert_close(shares.sum(dim=1), torch.ones(3))
