"""The fast machinery against the slow reference (``reference.py``) on every family's tiny model:
partial edge sets, EAP and EAP-IG scores, and an edit at every hook site."""

import pytest
import torch

from modelweave import Model
from modelweave.circuits import (
    CircuitEvaluator,
    Graph,
    edge_attribution,
    patched_logits,
    sender_outputs,
)
from modelweave.models.sites import all_sites
from modelweave.tasks.base import Example
from modelweave.tasks.batch import TaskBatch
from reference import Reference

from tiny import FAMILIES, random_tokens, tiny_hf_model

pytestmark = pytest.mark.numeric  # float tolerances against a slow reference
B, T = 3, 6


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    model = Model(tiny_hf_model(request.param))
    return model, Reference(model)


def test_the_reference_is_the_model(family):
    model, ref = family
    tokens = random_tokens(B, T, seed=1)
    with torch.no_grad():
        logits, _ = ref.run(tokens)
        expected = model.hf_model(input_ids=tokens).logits
    assert expected.abs().mean() > 0.1
    assert torch.allclose(logits, expected, atol=1e-5)


def _edge_sets(graph: Graph) -> torch.Tensor:
    """[G, N, R]: random subsets of three densities, and single edges into a q, a k and a v
    receiver (with GQA the key/value head of query heads 1 and 3 is 0 and 1)."""
    gen = torch.Generator().manual_seed(0)
    real = graph.real_edges
    sets = [real & (torch.rand(real.shape, generator=gen) < p) for p in (0.1, 0.5, 0.9)]
    h = graph.n_heads
    for layer, head, kind, sender in ((1, 1, 0, 0), (1, 3, 1, graph.head(0, 2)),
                                      (2, 1, 1, graph.mlp(0)), (2, 2, 2, graph.head(1, 0))):
        single = torch.zeros_like(real)
        single[sender, graph.qkv_receivers(layer).start + kind * h + head] = True
        sets.append(single)
    return torch.stack(sets)


def test_partial_edge_sets_equal_the_reference(family):
    model, ref = family
    clean, corrupt = random_tokens(B, T, seed=1), random_tokens(B, T, seed=2)
    graph = Graph.from_config(model.cfg)
    sets = _edge_sets(graph)
    with torch.no_grad():
        _, fast_clean = sender_outputs(model, clean)
        _, fast_corrupt = sender_outputs(model, corrupt)
        _, ref_clean = ref.run(clean)
        _, ref_corrupt = ref.run(corrupt)
        assert torch.allclose(fast_clean, ref_clean, atol=1e-5)
        assert torch.allclose(fast_corrupt, ref_corrupt, atol=1e-5)
        fast = patched_logits(model, clean, fast_corrupt, sets).view(len(sets), B, T, -1)
        base = model.forward(clean)
        for removed, got in zip(sets, fast, strict=True):
            expected, _ = ref.run(clean, removed=removed, corrupted=ref_corrupt)
            assert torch.allclose(got, expected, atol=1e-5)
            assert (expected - base).abs().max() > 1e-4  # every set changes the logits


def _batch(model: Model) -> TaskBatch:
    clean, corrupt = random_tokens(B, T, seed=1), random_tokens(B, T, seed=2)
    answer, wrong = torch.tensor([3, 5, 7]), torch.tensor([4, 6, 8])
    lengths = torch.full((B,), T)
    examples = [Example("c", "x", [" a"], [" w"]) for _ in range(B)]
    return TaskBatch(task="random", clean=clean, corrupt=corrupt,
                     mask=torch.ones(B, T, dtype=torch.long), lengths=lengths,
                     answer_ids=answer[:, None], wrong_ids=wrong[:, None],
                     answer_tokens=[[[int(a)]] for a in answer],
                     wrong_tokens=[[[int(w)]] for w in wrong], positions={"END": lengths - 1},
                     examples=examples)


def reference_scores(ref: Reference, batch: TaskBatch, steps: int | None) -> torch.Tensor:
    """EAP (``steps=None``) or EAP-IG scores [N, R], written out: for each edge, the change
    cutting it alone makes to its receiver's input at the clean run, dotted with the metric's
    gradient at that input, summed over tokens, integration steps and prompts, divided by
    prompts x steps. The metric is the logit difference at the last position."""
    graph = ref.graph
    with torch.no_grad():
        _, clean = ref.run(batch.clean)
        _, corrupt = ref.run(batch.corrupt)
    values = {s: clean[:, :, s] for s in range(graph.n_senders)}
    embeds = [None] if steps is None else [
        corrupt[:, :, 0] + k / steps * (clean[:, :, 0] - corrupt[:, :, 0]) for k in range(steps)]
    grads = {r: 0 for r in range(graph.n_receivers)}
    rows = torch.arange(B)
    for embed in embeds:
        leaves = {r: torch.zeros(B, T, ref.cfg.d_model, requires_grad=True)
                  for r in range(graph.n_receivers)}
        logits, _ = ref.run(batch.clean, leaves=leaves, embed=embed)
        metric = (logits[rows, -1, batch.answer_ids[:, 0]]
                  - logits[rows, -1, batch.wrong_ids[:, 0]]).sum()
        for r, g in zip(leaves, torch.autograd.grad(metric, list(leaves.values())),
                        strict=True):
            grads[r] = grads[r] + g
    scores = torch.zeros(graph.n_senders, graph.n_receivers)
    with torch.no_grad():
        for r in range(graph.n_receivers):
            kept = ref.assemble(values, r)
            for s in range(graph.upstream(r)):
                cut = torch.zeros_like(graph.real_edges)
                cut[s, r] = True
                change = kept - ref.assemble(values, r, cut, corrupt)
                scores[s, r] = (change * grads[r]).sum()
    return scores / (B * len(embeds))


@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_edge_scores_equal_the_reference(family, method):
    model, ref = family
    batch = _batch(model)
    got = edge_attribution(model, batch, method=method, steps=3, metric="logit_diff").scores
    expected = reference_scores(ref, batch, None if method == "eap" else 3)
    assert expected.abs().max() > 1e-3
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max())


def _edit(name: str, shape: torch.Size, seed: int):
    """A deterministic edit of a site: scales for patterns and norm scales, else noise."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape, generator=gen)
    if name.endswith("hook_pattern") or name.endswith("hook_scale"):
        return lambda t: t * (1 + 0.2 * noise)
    return lambda t: t + 0.3 * noise * t.detach().abs().mean()


def test_every_hook_site_reads_and_edits_what_the_reference_says(family):
    model, ref = family
    tokens = random_tokens(B, T, seed=3)
    base = model.forward(tokens)
    _, cache = model.run_with_cache(tokens)
    last = model.cfg.n_layers - 1
    names = [n for n in all_sites(model.cfg)
             if not n.startswith("blocks.") or n.startswith(("blocks.1.", f"blocks.{last}."))]
    seen = {}

    def record(name):
        def keep(t):
            seen[name] = t
            return t
        return keep

    with torch.no_grad():  # every site's value is the reference's
        ref.run(tokens, edits={name: record(name) for name in names})
    for name in names:
        assert torch.allclose(cache[name], seen[name], atol=1e-5), f"{name}: value"
    for i, name in enumerate(names):
        edit = _edit(name, cache[name].shape, i)
        got = model.run_with_hooks(tokens, [(name, lambda t, hook, edit=edit: edit(t))])
        with torch.no_grad():
            expected, _ = ref.run(tokens, edits={name: edit})
        assert (expected - base).abs().max() > 1e-4, f"{name}: the edit changes nothing"
        assert torch.allclose(got, expected, atol=1e-5), name


def test_mean_ablation_equals_the_reference_with_explicit_means(family):
    """intervention="mean": removed edges carry the sender's mean over the corrupted prompts
    at each position, computed here by hand from the reference's own sender values."""
    model, ref = family
    batch = _batch(model)
    evaluator = CircuitEvaluator(model, batch, metric="logit_diff", intervention="mean")
    graph = evaluator.graph
    kept = graph.real_edges & (torch.rand(graph.real_edges.shape,
                                          generator=torch.Generator().manual_seed(4)) < 0.5)
    with torch.no_grad():
        _, corrupt = ref.run(batch.corrupt)
        means = corrupt.mean(0, keepdim=True).expand_as(corrupt)
        logits, _ = ref.run(batch.clean, removed=graph.real_edges & ~kept, corrupted=means)
    rows = torch.arange(B)
    expected = (logits[rows, -1, batch.answer_ids[:, 0]]
                - logits[rows, -1, batch.wrong_ids[:, 0]]).mean()
    got = evaluator.score(kept, pruned=False)[0]
    assert abs(float(got) - float(expected)) <= 1e-5 * max(1.0, abs(float(expected)))
    assert abs(float(expected) - evaluator.full) > 1e-3  # the ablation matters
