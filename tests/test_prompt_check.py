"""``test_prompt`` against a direct computation: each answer token's rank, probability and
logit are those of the model's own next-token logits after the prompt and the answer so far."""

from __future__ import annotations

import pytest
import torch

from modelweave import Model
from tokenizers_zoo import make_tokenizer

from tiny import tiny_hf_model


@pytest.mark.numeric
def test_every_answer_token_is_scored_at_the_position_that_predicts_it():
    tok = make_tokenizer("bytelevel")
    model = Model(tiny_hf_model("llama", vocab_size=len(tok)), tok)
    prompt = "When Mary and John went"
    result = model.test_prompt(prompt, "to the store", top_k=3, print_details=False)
    prompt_ids = model.to_tokens(prompt)[0]
    answer_ids = model.to_tokens(prompt + " to the store")[0, len(prompt_ids):]
    assert len(result.answer_tokens) == len(answer_ids) >= 2
    for i, (got, token) in enumerate(zip(result.answer_tokens, answer_ids.tolist(),
                                         strict=True)):
        prefix = torch.cat([prompt_ids, answer_ids[:i]])[None]
        row = model(prefix)[0, -1].float()  # the next-token logits after the prefix alone
        scale = float(row.abs().max())
        assert abs(got.logit - float(row[token])) <= 1e-4 * scale
        assert abs(got.prob - float(row.softmax(-1)[token])) <= 1e-4
        # rank: where the token sits when the vocabulary is sorted by logit (0 = top)
        order = row.argsort(descending=True).tolist()
        assert got.rank == order.index(token)
        assert [t for t, _, _ in got.top] == [model.to_string([j]) for j in order[:3]]
