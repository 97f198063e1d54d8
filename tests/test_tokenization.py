"""The BOS rule and text batching."""

import pytest
import torch

from modelweave import Model

from tiny import tiny_hf_model, tiny_tokenizer


def make(adds_bos: bool, prepend_bos=None) -> Model:
    tok = tiny_tokenizer(adds_bos)
    return Model(tiny_hf_model("llama", vocab_size=len(tok)), tok, prepend_bos=prepend_bos)


def test_bos_follows_the_tokenizer():
    with_bos, without = make(True), make(False)
    assert with_bos.tokenization.prepend_bos and not without.tokenization.prepend_bos
    assert with_bos.to_tokens("Mary went")[0, 0].item() == 1
    assert without.to_tokens("Mary went")[0, 0].item() != 1
    assert torch.equal(with_bos.to_tokens("Mary went")[0, 1:], without.to_tokens("Mary went")[0])


@pytest.mark.parametrize("adds_bos", [True, False])
def test_bos_is_never_doubled(adds_bos):
    model = make(adds_bos)
    tokens = model.to_tokens("<s>Mary went", prepend_bos=True)
    assert tokens[0, 0].item() == 1 and tokens[0, 1].item() != 1
    assert model.to_str_tokens("Mary", prepend_bos=True)[0] == "<s>"


def test_overrides():
    assert not make(True, prepend_bos=False).tokenization.prepend_bos
    assert make(False, prepend_bos=True).to_tokens("Mary")[0, 0].item() == 1
    assert make(True).to_tokens("Mary", prepend_bos=False)[0, 0].item() != 1
    assert "set by the user" in make(True, prepend_bos=False).tokenization.rule


def test_no_eos_is_appended_and_str_tokens_round_trip():
    model = make(True)
    text = "When Mary and John went to the store"
    tokens = model.to_tokens(text)
    assert 2 not in tokens.tolist()[0]
    assert "".join(model.to_str_tokens(text)[1:]) == text
    assert model.to_string(tokens[0, 1:]) == text


def test_batches_are_right_padded_and_padding_does_not_change_real_positions():
    model = make(False)
    texts = ["When Mary and John went to the store", "Mary"]
    tokens, mask = model.encode(texts)
    n = int(mask[1].sum())
    assert mask[0].all() and not mask[1, n:].any()
    batched = model(texts)
    alone = model(texts[1])
    assert torch.allclose(batched[1, :n], alone[0], atol=1e-5)
    assert model.to_str_tokens(texts)[1] == model.to_str_tokens(texts[1])


def test_empty_text_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        make(False).to_tokens("")
