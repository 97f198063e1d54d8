"""Arithmetic prompts for the heuristic analysis: grid, answers, positions and the correctness
filter, for a whole-number and a digit-splitting tokenizer."""

import pytest
import torch

from arith_zoo import OracleModel, arith_tokenizer
from modelweave.analysis.heuristics.prompts import arithmetic_batch, grid_batch
from modelweave.models import Model
from modelweave.tasks import TaskError
from modelweave.tasks.arith import arith_grid, parse_operators

from tiny import tiny_hf_model


def _model(kind, oracle=False, wrong=lambda a, op, b: False):
    tok = arith_tokenizer(kind)
    hf = tiny_hf_model("llama", vocab_size=len(tok))
    return OracleModel(hf, tok, wrong) if oracle else Model(hf, tok)


def test_grid_is_every_legal_prompt():
    grid = arith_grid("+,-,*,/", 0, 10, result_max=20)
    assert {(p.op1, p.operator, p.op2) for p in grid if p.operator == "-"} == {
        (a, "-", b) for a in range(10) for b in range(10) if a >= b}
    assert all(p.op2 >= 1 for p in grid if p.operator == "/")
    assert all(0 <= p.result <= 20 for p in grid)
    assert sum(p.operator == "*" for p in grid) == sum(
        1 for a in range(10) for b in range(10) if a * b <= 20)
    assert [p for p in grid if p.operator == "/" and p.op1 == 7 and p.op2 == 2][0].result == 3


@pytest.mark.parametrize("kind", ["number", "digit"])
def test_positions_and_answers(kind):
    model = _model(kind)
    grid = grid_batch(model, "+", op_max=20)
    assert len(grid) == 400
    tok = model.tokenizer
    for i in range(len(grid)):
        meta = grid.examples[i].meta
        toks = tok.convert_ids_to_tokens(grid.clean[i, : grid.lengths[i]].tolist())
        at = {n: toks[int(grid.positions[n][i])] for n in ("OP1", "OPERATOR", "OP2", "EQ")}
        if kind == "number":
            assert at == {"OP1": str(meta["op1"]), "OPERATOR": "+", "OP2": str(meta["op2"]),
                          "EQ": "="}
            assert toks[0] == "<s>"
            assert tok.convert_ids_to_tokens([int(grid.answers[i])]) == [str(meta["result"])]
        else:
            assert at == {"OP1": str(meta["op1"])[-1], "OPERATOR": "+",
                          "OP2": str(meta["op2"])[-1], "EQ": "="}
            assert tok.convert_ids_to_tokens([int(grid.answers[i])]) == [str(meta["result"])[0]]
        assert int(grid.positions["END"][i]) == int(grid.lengths[i]) - 1 == toks.index("=")


def test_step_teacher_forces_the_earlier_answer_tokens():
    model = _model("digit")
    grid = grid_batch(model, "+", op_max=20, step=1)
    assert all(ex.meta["result"] >= 10 for ex in grid.examples)  # one-digit results have no token 1
    assert len(grid) == sum(1 for a in range(20) for b in range(20) if a + b >= 10)
    tok = model.tokenizer
    for i in range(0, len(grid), 7):
        r = str(grid.examples[i].meta["result"])
        toks = tok.convert_ids_to_tokens(grid.clean[i, : grid.lengths[i]].tolist())
        assert toks[-2:] == ["=", r[0]]
        assert tok.convert_ids_to_tokens([int(grid.answers[i])]) == [r[1]]
    with pytest.raises(TaskError, match="token 1"):
        grid_batch(_model("number"), "+", op_max=20, step=1)


@pytest.mark.parametrize("kind", ["number", "digit"])
def test_only_correct_prompts_with_correct_counterfactuals(kind):
    def wrong(a, op, b):
        return a % 3 == 0

    model = _model(kind, oracle=True, wrong=wrong)
    batch = arithmetic_batch(model, "+", op_max=20, n=None, counterfactual_operators="+,-")
    metas = [ex.meta for ex in batch.examples]
    assert metas and all(m["op"] == "+" and m["op1"] % 3 for m in metas)
    assert all(m["cf_op1"] % 3 for m in metas)  # counterfactuals are answered correctly too
    assert {m["cf_op"] for m in metas} == {"+", "-"}  # drawn from both operators
    n_wrong = sum(1 for a in range(20) for b in range(20) if a % 3 == 0) + sum(
        1 for a in range(20) for b in range(a + 1) if a % 3 == 0)
    assert batch.dropped["answered incorrectly"] == n_wrong
    tok = model.tokenizer
    for i, m in enumerate(metas):
        assert batch.answers[i] != batch.wrong_ids[i, 0]
        r, rc = str(m["result"]), str(m["cf_result"])
        want = (r, rc) if kind == "number" else (r[0], rc[0])
        assert tuple(tok.convert_ids_to_tokens([int(batch.answers[i]),
                                                int(batch.wrong_ids[i, 0])])) == want
        assert int(batch.lengths[i]) == int((batch.corrupt[i] != tok.pad_token_id).sum()) or \
            kind == "number"
    assert torch.equal(batch.mask.sum(1), batch.lengths)


def test_end_check_rejects_numbers_that_go_on():
    model = _model("digit", oracle=True)
    model.wrong = lambda a, op, b: False
    ok = arithmetic_batch(model, "+", op_max=10, n=None)
    base = len(ok) + sum(ok.dropped.values())

    class TooLong(OracleModel):
        def forward(self, inputs, *, attention_mask=None, grad=False):
            logits = super().forward(inputs, attention_mask=attention_mask)
            eq = self.vocab["="]
            top = logits.argmax(-1)
            logits[top == eq] = 0
            logits[..., self.vocab["7"]] += 5 * (top == eq)  # "…=8" -> "87": the number goes on
            return logits

        __call__ = forward

    long = TooLong(model.hf_model, model.tokenizer)
    with pytest.raises(TaskError, match="answered correctly"):
        arithmetic_batch(long, "+", op_max=10, n=None)
    loose = arithmetic_batch(long, "+", op_max=10, n=None, check_end=False)
    assert len(loose) + sum(loose.dropped.values()) == base


def test_bad_input_errors():
    model = _model("digit")
    with pytest.raises(TaskError, match="operator"):
        parse_operators("+,^")
    with pytest.raises(TaskError, match="answered correctly"):
        arithmetic_batch(model, "+", op_max=10, n=None)  # a random model gets nothing right
    with pytest.raises(TaskError, match="operand range"):
        arith_grid("+", 5, 5)


@pytest.mark.slow
@pytest.mark.xdist_group("smollm")
def test_correctness_filter_matches_greedy_generation_on_the_embedded_model(smollm):
    """The filter's verdict equals parsing what greedy generation writes after the prompt."""
    from modelweave.analysis.heuristics.prompts import _base_batch, answered_correctly

    prompts = [p for p in arith_grid("+,-", 0, 12) if p.op1 % 2 == 0][:60]
    batch = _base_batch(smollm, prompts, False)
    assert len(batch) == 60 and batch.clean.shape[1] <= 6  # digits split, no BOS: "10+11="
    verdict = answered_correctly(smollm, batch)
    tok = smollm.tokenizer
    for i, p in enumerate(prompts):
        ids = batch.clean[i: i + 1, : batch.lengths[i]]
        out = smollm.hf_model.generate(ids, attention_mask=torch.ones_like(ids),
                                       max_new_tokens=4, do_sample=False,
                                       pad_token_id=tok.pad_token_id)
        text = tok.decode(out[0, ids.shape[1]:])
        digits = ""
        for ch in text:
            if not ch.isdigit():
                break
            digits += ch
        assert bool(verdict[i]) == (digits == str(p.result)), (p, text)
    assert 0 < int(verdict.sum()) < 60  # the base model gets some, not all
    spaced = _base_batch(smollm, prompts[:5], True)  # "4 + 5 =" -> " 9": the space moves
    toks = tok.convert_ids_to_tokens(spaced.clean[0, : spaced.lengths[0]].tolist())
    assert toks[int(spaced.positions["EQ"][0])].lstrip("Ġ") == "=" and spaced.examples[0].meta[
        "space_moved_to_prompt"]


def test_olmo2_key_value_maps_read_through_the_post_norm():
    """On OLMo-2 a neuron's push is its share of hook_mlp_out (the post-norm frozen at the
    prompt's scale) read through the centred unembedding."""
    from modelweave.analysis.heuristics.maps import neuron_maps
    from modelweave.models.adapters import linear_weight
    from modelweave.models.postnorm import at_scale

    tok = arith_tokenizer("number")
    model = Model(tiny_hf_model("olmo2", vocab_size=len(tok)), tok)
    grid = grid_batch(model, "+", op_max=6)
    maps = neuron_maps(model, grid, [(1, 3), (2, 5)])
    _, cache = model.run_with_cache(grid.clean, ["blocks.2.mlp.hook_post",
                                                 "blocks.2.mlp.hook_scale"])
    rows = torch.arange(len(grid)), grid.lengths - 1
    key = cache["blocks.2.mlp.hook_post"][rows][:, 5]
    block = model.block(2)
    column = linear_weight(block.mlp.down_proj)[:, 5]
    share = at_scale(block.post_feedforward_layernorm, key[:, None] * column,
                     cache["blocks.2.mlp.hook_scale"][rows])  # [N, d_model]
    unembed = model.hf_model.get_output_embeddings().weight
    expected = (share * (unembed - unembed.mean(0))[grid.answers]).sum(-1)
    assert torch.allclose(maps.key[1], key, atol=1e-6)
    assert torch.allclose(maps.kv[1], expected, atol=1e-5)
