"""Node circuits with neuron subsets: mean ablation checked against a plain re-implementation,
the Eq. 1 / NL metrics, and neuron attribution against exact patching."""

import pytest
import torch

from arith_zoo import arith_tokenizer
from modelweave.analysis.heuristics.neurons import exact_neuron_effects, neuron_attribution
from modelweave.analysis.heuristics.prompts import grid_batch
from modelweave.circuits.graph import CircuitError
from modelweave.circuits.node_faithfulness import NodeEvaluator
from modelweave.circuits.nodes import NodeCircuit, PositionMeans, circuit_logits, position_means
from modelweave.metrics.scores import prob_change_effect
from modelweave.metrics.stats import stable_prompts
from modelweave.models import Model
from modelweave.tasks import TaskError

from tiny import FAMILIES, random_tokens, tiny_hf_model


def _ragged(seed, n=10, lengths=(5, 7)):
    """Right-padded random prompts of two lengths: tokens [n, 7], mask [n, 7]."""
    tokens = random_tokens(n, max(lengths), seed=seed)
    mask = torch.ones_like(tokens)
    mask[::2, lengths[0]:] = 0
    return tokens * mask, mask


def _manual_means(model, tokens, mask):
    """Per (length, position) means by plain grouping: {length: {site: [T, ...]}}."""
    out = {}
    lengths = mask.sum(1)
    for length in lengths.unique().tolist():
        rows = lengths == length
        _, cache = model.run_with_cache(tokens[rows, :length])
        out[length] = {k: v.mean(0) for k, v in cache.items()
                       if k.endswith("hook_z") or k.endswith("hook_post")}
    return out


def _manual_ablated(model, tokens, mask, manual, keep_heads, keep_neurons):
    """Logits with hook_z / hook_post replaced by the manual means except kept units."""
    lengths = mask.sum(1)

    def hook(tensor, h):
        out = tensor.clone()
        for i, length in enumerate(lengths.tolist()):
            ref = manual[length][h.name]
            keep = (keep_heads if h.name.endswith("hook_z") else keep_neurons).get(h.layer, [])
            row = ref.clone()
            row[:, keep] = tensor[i, :length][:, keep]
            out[i, :length] = row
        return out

    sites = [s for s in model.sites() if s.endswith("hook_z") or s.endswith("hook_post")]
    return model.run_with_hooks(tokens, [(s, hook) for s in sites], attention_mask=mask)


@pytest.mark.parametrize("family", FAMILIES)
def test_mean_ablation_matches_a_plain_reimplementation(family):
    model = Model(tiny_hf_model(family))
    ref_tokens, ref_mask = _ragged(seed=1, n=12)
    tokens, mask = _ragged(seed=2, n=6)
    means = position_means(model, ref_tokens, ref_mask, batch_size=5)
    manual = _manual_means(model, ref_tokens, ref_mask)
    c = model.cfg
    real = mask.bool()
    clean = model(tokens, attention_mask=mask)

    # every neuron kept as a subset (and every head): the model itself
    everything = NodeCircuit(frozenset((L, h) for L in range(c.n_layers) for h in range(c.n_heads)),
                             neurons={L: tuple(range(c.d_mlp)) for L in range(c.n_layers)})
    got = circuit_logits(model, tokens, mask, everything, means)
    assert (got - clean)[real].abs().max() < 1e-5
    assert torch.equal(circuit_logits(model, tokens, mask, NodeCircuit.full(model), means)[real],
                       clean[real])

    # nothing kept: the mean-ablated model
    empty = circuit_logits(model, tokens, mask, NodeCircuit(neurons={}), means)
    want = _manual_ablated(model, tokens, mask, manual, {}, {})
    assert (empty - want)[real].abs().max() < 1e-5
    assert (empty - clean)[real].abs().max() > 1e-2

    # a mixed circuit: some heads, a whole MLP, neuron subsets
    heads = {0: [1, 3], 2: [0]}
    neurons = {1: [0, 5, 17, 40], 2: [2]}
    circuit = NodeCircuit(frozenset((L, h) for L, hs in heads.items() for h in hs),
                          frozenset({0}), {L: tuple(v) for L, v in neurons.items()})
    got = circuit_logits(model, tokens, mask, circuit, means)
    want = _manual_ablated(model, tokens, mask, manual, heads,
                           {0: list(range(c.d_mlp)), **neurons})
    assert (got - want)[real].abs().max() < 1e-5


def test_unseen_lengths_fall_back_to_the_overall_mean():
    model = Model(tiny_hf_model("llama"))
    ref_tokens, ref_mask = _ragged(seed=1, n=8, lengths=(4, 7))
    means = position_means(model, ref_tokens, ref_mask)
    lengths = torch.tensor([5])
    site = "blocks.1.mlp.hook_post"
    got = means.for_batch(site, lengths, 5)[0]
    _, cache = model.run_with_cache(ref_tokens, site, attention_mask=ref_mask)
    m = ref_mask[:, :5, None].float()
    want = (cache[site][:, :5] * m).sum(0) / m.sum(0)
    assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(CircuitError, match="reaches position"):
        means.for_batch(site, torch.tensor([9]), 9)


def test_means_round_trip(tmp_path):
    model = Model(tiny_hf_model("gpt2"))
    tokens, mask = _ragged(seed=3)
    means = position_means(model, tokens, mask)
    means.save(tmp_path / "m.safetensors")
    back = PositionMeans.load(tmp_path / "m.safetensors")
    assert back.counts == means.counts
    for T in means.by_length:
        for site, value in means.by_length[T].items():
            assert torch.equal(back.by_length[T][site], value)


def test_names_and_range_errors():
    c = NodeCircuit.from_names(["a0.h1", "m2", "m1.n5", "m1.n3"])
    assert c.names() == ["a0.h1", "m1.n3", "m1.n5", "m2"]
    assert NodeCircuit.from_dict(c.to_dict()) == c
    model = Model(tiny_hf_model("llama"))
    for bad, what in ((["m9"], "layer 9"), (["a0.h7"], "head"), (["m1.n48"], "neuron")):
        with pytest.raises(CircuitError, match=what):
            NodeCircuit.from_names(bad).check(model)
    with pytest.raises(CircuitError, match="not a node name"):
        NodeCircuit.from_names(["x1"])
    tok = arith_tokenizer("digit")
    model = Model(tiny_hf_model("llama", vocab_size=len(tok)), tok)
    with pytest.raises(TaskError, match="out of range"):
        neuron_attribution(model, _tiny_cf_batch(model), layers=[5])


def test_prob_change_effect_is_eq1():
    base = torch.tensor([[2.0, 1.0, 0.0]])
    patched = torch.tensor([[[0.0, 2.0, 0.0]]])
    p, q = base.softmax(-1)[0], patched.softmax(-1)[0, 0]
    want = 0.5 * ((q[1] - p[1]) / p[1] + (p[0] - q[0]) / q[0])
    got = prob_change_effect(base, patched, torch.tensor([0]), torch.tensor([1]))
    assert torch.allclose(got[0, 0], want)
    assert prob_change_effect(base, base[None], torch.tensor([0]), torch.tensor([1])).abs().max() \
        < 1e-7


def _tiny_cf_batch(model, seed=0):
    """Grid prompts of + with a random same-length counterfactual each (no correctness)."""
    from modelweave.analysis.heuristics.prompts import _assemble, _base_batch
    from modelweave.tasks.arith import arith_grid

    grid = arith_grid("+", 10, 30)
    base = _base_batch(model, grid[::13], False)
    gen = torch.Generator().manual_seed(seed)
    partner = []
    for i in range(len(base)):
        options = [j for j in range(len(base)) if base.lengths[j] == base.lengths[i]
                   and base.answer_tokens[j][0][0] != base.answer_tokens[i][0][0]]
        partner.append(options[int(torch.randint(len(options), (1,), generator=gen))])
    return _assemble(base, list(range(len(base))), partner, 0, model.tokenization.pad_token_id,
                     {})


def test_neuron_attribution_agrees_with_exact_patching():
    tok = arith_tokenizer("digit")
    model = Model(tiny_hf_model("llama", vocab_size=len(tok)), tok)
    batch = _tiny_cf_batch(model)
    attribution = neuron_attribution(model, batch, batch_size=7).mean(0)
    neurons = [(L, n) for L in (0, 2) for n in range(model.cfg.d_mlp)]
    exact = exact_neuron_effects(model, batch, neurons)
    approx = torch.tensor([float(attribution[L, n]) for L, n in neurons])
    corr = torch.corrcoef(torch.stack([approx, exact]))[0, 1]
    assert corr > 0.9, corr  # first order vs the exact, nonlinear Eq. 1 (measured 0.94)
    top = set(exact.abs().topk(10).indices.tolist())
    assert len(top & set(approx.abs().topk(10).indices.tolist())) >= 6


def test_neuron_attribution_is_the_derivative_of_eq1():
    """Per prompt, attribution = d/dε E(a + ε (a' - a)) at ε = 0 (central differences in
    float64; GPT-2 because HF's RMSNorm rounds through float32)."""
    tok = arith_tokenizer("digit")
    model = Model(tiny_hf_model("gpt2", vocab_size=len(tok)).double(), tok)
    batch = _tiny_cf_batch(model)
    scores = neuron_attribution(model, batch)
    site = "blocks.1.mlp.hook_post"
    _, cf = model.run_with_cache(batch.corrupt, site)
    _, clean = model.run_with_cache(batch.clean, site)
    base = model(batch.clean)[:, -1]
    r, rc = batch.answers, batch.wrong_ids[:, 0]
    eps = 1e-3
    for n in (0, 7, 31):
        def effect(step, n=n):
            def nudge(t, _h):
                out = t.clone()
                out[:, -1, n] += step * (cf[site][:, -1, n] - clean[site][:, -1, n])
                return out
            patched = model.run_with_hooks(batch.clean, [(site, nudge)])[:, -1]
            return prob_change_effect(base, patched, r, rc)

        slope = (effect(eps) - effect(-eps)) / (2 * eps)
        assert torch.allclose(slope.float(), scores[:, 1, n], rtol=1e-4, atol=1e-8), n


def test_evaluator_faithfulness_endpoints():
    tok = arith_tokenizer("number")
    model = Model(tiny_hf_model("llama", vocab_size=len(tok)), tok)
    grid = grid_batch(model, "+", op_max=12)
    means = position_means(model, grid.clean, grid.mask)
    ev = NodeEvaluator(model, grid.select(slice(0, 40)), means, order="mean_then_ratio")
    assert ev.faithfulness(NodeCircuit.full(model)) == pytest.approx(1.0)
    assert ev.faithfulness(NodeCircuit()) == pytest.approx(0.0)
    half = NodeCircuit(frozenset(), frozenset({0, 1, 2}))
    f = ev.faithfulness(half)
    manual = ev.values(half)
    assert f == pytest.approx(float((manual.mean() - ev.empty.mean())
                                    / (ev.full.mean() - ev.empty.mean())), rel=1e-5)
    per_prompt = NodeEvaluator(model, grid.select(slice(0, 40)), means)
    ratios = (manual - ev.empty) / (ev.full - ev.empty)
    # per prompt, the paper's order, over the prompts whose denominator is not ~0
    keep = torch.as_tensor(stable_prompts(ev.full, ev.empty))
    assert 0 < int(keep.sum()) < len(ratios)   # this batch has near-zero denominators
    assert per_prompt.faithfulness(half) == pytest.approx(float(ratios[keep].mean()), rel=1e-5)
