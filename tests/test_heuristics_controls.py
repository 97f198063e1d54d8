"""Knockout controls on a real computation with a known answer.

A tiny Llama trained here on + (operands 0..9) gets a planted pair of neuron groups in
its last MLP: A and B fire identically, strongly where the result is below 10 and ~0 where it
is not (their gate and up rows are a linear read-out of the result from the MLP's input), and
write opposite vectors (A: -c v, B: +c v), so together they change nothing. Knocking A out
leaves B's push on v: every prompt with a result below 10 (the heuristic
``result_range_0_10`` holds) fails, every other one still works. So the knockout's related
accuracy is 0, its unrelated accuracy is 1, and random trained neurons of the same layer hurt
far less. B's neurons push the answer exactly as hard as A's, so the null matched on direct
effect draws them from A's bin: a draw with one of them breaks every related prompt too
(drop 1, as A's), the others do not; the null's mean and p-value are those counts."""

import random

import pytest
import torch

from arith_zoo import train_arith_model
from modelweave.analysis.heuristics.knockout import (
    _zero_hooks,
    accuracy,
    direct_effects,
    heuristic_knockout,
    matched_controls,
)
from modelweave.analysis.heuristics.maps import neuron_maps
from modelweave.analysis.heuristics.prompts import arithmetic_batch
from modelweave.metrics.nulls import NullError

# a fixture of its own (not the pipeline's): its own group, so it may run beside the pipeline
pytestmark = pytest.mark.xdist_group("arith_controls")
A, B = [0, 1, 2], [3, 4, 5]
HEURISTIC = "result_range_0_10"


@pytest.fixture(scope="module")
def planted():
    model = train_arith_model(operators="+", steps=300)
    L = model.cfg.n_layers - 1
    batch = arithmetic_batch(model, "+", op_max=10, n=None)
    block = model.block(L)
    _, cache = model.run_with_cache(batch.clean, [f"blocks.{L}.hook_resid_mid"],
                                    attention_mask=batch.mask)
    last = torch.arange(len(batch)), batch.lengths - 1
    x = block.post_attention_layernorm(cache[f"blocks.{L}.hook_resid_mid"][last]).detach()
    y = torch.tensor([ex.meta["result"] < 10 for ex in batch.examples]).float() * 2 - 1
    w = torch.linalg.lstsq(x, y[:, None]).solution[:, 0]
    margin = float(((x @ w) * y).min())
    assert margin > 0  # the result's range is linearly readable there (else no plant)
    w = w * 8 / margin  # |gate| >= 8 on every prompt: silu(8)*8 = 64, silu(-8)*-8 = 0.02
    unembed = model.W_U.float()  # [d_model, d_vocab]
    v = unembed[:, model.tokenizer.convert_tokens_to_ids("<unk>")]
    v = 20 * v / v.norm()
    mlp = block.mlp
    with torch.no_grad():
        for group, sign in ((A, -1.0), (B, 1.0)):
            mlp.gate_proj.weight[group] = w
            mlp.up_proj.weight[group] = w
            mlp.down_proj.weight[:, group] = sign * v[:, None]
    batch = arithmetic_batch(model, "+", op_max=10, n=None)  # correct on the planted model
    return model, L, batch


def test_knockout_related_unrelated_and_controls_in_the_known_order(planted):
    model, L, batch = planted
    related = [ex.meta["result"] < 10 for ex in batch.examples]
    assert 20 <= sum(related) <= len(batch) - 20
    pool = [(L, n) for n in range(model.cfg.d_mlp) if n not in A + B]  # trained neurons
    k = heuristic_knockout(model, batch, HEURISTIC, [(L, n) for n in A], pool, null_draws=10,
                           seed=0)
    assert k.baseline_related == 1.0  # A and B cancel: the planted model answers
    assert k.related == 0.0 and k.related_ci == [0.0, 0.0]  # B alone breaks every one
    assert k.unrelated == 1.0  # where the heuristic does not hold the pair is silent
    assert (k.n_related, k.n_unrelated) == (55, 45)  # as many unrelated as there are
    assert k.random_related >= 0.5 and k.random_unrelated >= 0.5  # trained neurons: far less
    # the matched null, draw by draw (the same prompts and seed as the knockout's)
    index = [i for i, ex in enumerate(batch.examples) if ex.meta["result"] < 10]
    rel = batch.select(random.Random(0).sample(index, len(index)))
    draws, bins = matched_controls([(L, n) for n in A], direct_effects(model, rel, [L]), 10,
                                   seed=0)
    acc = [float(accuracy(model, rel, _zero_hooks(d, model.cfg.d_mlp)).mean()) for d in draws]
    hits_b = [bool({n for _, n in d} & set(B)) for d in draws]
    assert all(a == 0.0 for a, h in zip(acc, hits_b, strict=True) if h)
    assert all(a >= 0.5 for a, h in zip(acc, hits_b, strict=True) if not h)
    assert k.matched_related == pytest.approx(sum(acc) / 10)
    null = k.drop_null
    assert null["observed"] == 1.0 and null["draws"] == 10
    assert null["p_value"] == pytest.approx((1 + sum(hits_b)) / 11)
    assert null["null_mean"] == pytest.approx(1 - sum(acc) / 10)
    assert k.matched_bins == {str(L): bins[L]} and k.control_draws == 10
    # the unrelated accuracy is what ablating A on those prompts gives, recomputed directly
    unrel = batch.select([i for i, r in enumerate(related) if not r])

    def zero_a(tensor, hook):
        out = tensor.clone()
        out[..., A] = 0
        return out

    logits = model.run_with_hooks(unrel.clean, [(f"blocks.{L}.mlp.hook_post", zero_a)],
                                  attention_mask=unrel.mask)
    top = logits[torch.arange(len(unrel)), unrel.lengths - 1].argmax(-1)
    assert bool((top == unrel.answers).all())


def test_matched_controls_same_layers_and_bins(planted):
    model, L, batch = planted
    rel = batch.select([i for i, ex in enumerate(batch.examples) if ex.meta["result"] < 10])
    direct = direct_effects(model, rel, [L - 1, L])
    # the direct effect is the key-value map's mean |.|, neuron by neuron
    maps = neuron_maps(model, rel, [(L, n) for n in range(model.cfg.d_mlp)])
    assert torch.allclose(direct[L], maps.kv.abs().mean(1), rtol=1e-4, atol=1e-6)
    chosen = [(L, n) for n in A] + [(L - 1, 7), (L - 1, 30)]
    draws, bins = matched_controls(chosen, direct, 50, bins=4, seed=3)
    assert bins == {L - 1: 4, L: 4} and len(draws) == 50

    def bin_of(layer, n, b):
        rank = torch.argsort(torch.argsort(direct[layer], stable=True))
        return int(rank[n]) * b // len(direct[layer])

    want = sorted((Lc, bin_of(Lc, n, bins[Lc])) for Lc, n in chosen)
    for draw in draws:
        assert not set(draw) & set(chosen) and len(set(draw)) == len(chosen)
        assert sorted((Lc, bin_of(Lc, n, bins[Lc])) for Lc, n in draw) == want
    assert len({tuple(d) for d in draws}) > 40  # random, not one fixed set
    # a bin that cannot supply falls back to fewer bins; a layer that cannot is an error
    top = torch.argsort(direct[L], descending=True)[:20].tolist()
    _, fewer = matched_controls([(L, n) for n in top], direct, 2, bins=4)
    assert fewer[L] < 4
    with pytest.raises(NullError, match="layer"):
        matched_controls([(L, n) for n in range(30)], direct, 1)


def test_matched_null_needs_a_draw(planted):
    model, L, batch = planted
    with pytest.raises(NullError, match="at least one draw"):
        matched_controls([(L, 0)], {L: torch.ones(model.cfg.d_mlp)}, 0)
    k = heuristic_knockout(model, batch, HEURISTIC, [(L, n) for n in A],
                           [(L, n) for n in range(8, 20)], null_draws=0)
    assert k.drop_null is None and k.control_draws == 0 and k.matched_related is None
    assert k.related == 0.0 and k.unrelated == 1.0
    assert float(accuracy(model, batch).mean()) == 1.0


def test_matched_control_on_unrelated_prompts_and_a_random_control_never_the_target(planted):
    """Where the heuristic does not hold, A and B are silent: the matched control's unrelated
    accuracy is each draw's accuracy on those prompts, recomputed draw by draw (not its
    related accuracy: draws holding a B neuron break every related prompt, and B is silent
    on the unrelated ones). The random control draws from the pool minus the knocked-out neurons:
    a pool of A alone leaves it nothing to ablate, so it keeps the planted model's accuracy
    while the targeted knockout loses every related prompt."""
    model, L, batch = planted
    neurons = [(L, n) for n in A]
    pool = [(L, n) for n in range(model.cfg.d_mlp) if n not in A + B]
    k = heuristic_knockout(model, batch, HEURISTIC, neurons, pool, null_draws=10, seed=0)
    index = [i for i, ex in enumerate(batch.examples) if ex.meta["result"] < 10]
    rel = batch.select(random.Random(0).sample(index, len(index)))
    unrel = batch.select([i for i, ex in enumerate(batch.examples) if ex.meta["result"] >= 10])
    draws, _ = matched_controls(neurons, direct_effects(model, rel, [L]), 10, seed=0)
    on_unrel = [float(accuracy(model, unrel, _zero_hooks(d, model.cfg.d_mlp)).mean())
                for d in draws]
    assert k.matched_unrelated == pytest.approx(sum(on_unrel) / 10)
    assert any({n for _, n in d} & set(B) for d in draws)  # B breaks the related prompts only
    alone = heuristic_knockout(model, batch, HEURISTIC, neurons, neurons, null_draws=0)
    assert alone.related == 0.0 and alone.random_related == 1.0
    assert alone.random_unrelated == 1.0
