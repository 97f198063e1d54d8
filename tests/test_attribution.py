"""Attribution patching (AtP* with both fixes off): right gradients, equal to an explicit
gradient x difference, and agreement with exact patching."""

import pytest
import torch

from modelweave import Model
from modelweave.engine import Intervention, intervene
from modelweave.methods import attribution_sweep, patch_sweep
from modelweave.methods.atp_star import atp_star
from modelweave.methods.grids import GRIDS, SITES, grid_units
from modelweave.metrics.scores import metric_on_last
from modelweave.tasks import make_batch
from tokenizers_zoo import make_tokenizer

from tiny import tiny_hf_model


def setup(family):
    tok = make_tokenizer("bytelevel")
    model = Model(tiny_hf_model(family, vocab_size=len(tok)), tok)
    return model, make_batch(model, "ioi", n=8, same_length=True)


def _base_with_grads(model, tokens, batch, names, metric):
    """Activations of ``names`` in a run of ``tokens``, their gradients of the mean metric
    (plain ``torch.autograd``), and the run's last-position logits."""
    acts = {}

    def keep(tensor, hook):
        acts[hook.name] = tensor.clone()  # a node on the path, so it receives a gradient
        return acts[hook.name]

    with torch.enable_grad():
        logits = model.run_with_hooks(tokens, [(n, keep) for n in names], grad=True)
        last = logits[:, -1]
        value = metric_on_last(metric, last, batch).mean()
        grads = torch.autograd.grad(value, [acts[n] for n in names])
    return ({n: a.detach() for n, a in acts.items()}, dict(zip(names, grads, strict=True)),
            last.detach())


def gradient_times_difference(model, batch, grid, direction, indices=None):
    """Base metric and [units] explicit ``(a_src - a_base) . dm/da`` of every unit of
    ``grid``, the gradient of the mean metric taken at the base run."""
    units, _ = grid_units(model, grid, batch.clean.shape[1], None, indices)
    names = sorted({f"blocks.{u.layer}.{SITES[grid]}" for u in units})
    base, source = ((batch.corrupt, batch.clean) if direction == "denoising"
                    else (batch.clean, batch.corrupt))
    acts, grads, last = _base_with_grads(model, base, batch, names, "logit_diff")
    _, cache = model.run_with_cache(source, names)
    terms = []
    for u in units:
        name = f"blocks.{u.layer}.{SITES[grid]}"
        x = (cache[name].float() - acts[name].float()) * grads[name].float()  # [B, P, ...]
        x = x if u.pos is None else x[:, u.pos: u.pos + 1]
        terms.append((x if u.index is None else x[:, :, u.index]).sum())
    return metric_on_last("logit_diff", last, batch).mean().item(), torch.stack(terms)


@pytest.mark.parametrize("family", ["llama", "llama3", "gpt2"])  # GQA 2:1, 4:1, fused MHA
def test_plain_atp_equals_gradient_times_difference(family):
    model, batch = setup(family)
    indices = [0, 3, 9, 17]
    for grid in GRIDS:
        for direction in ("denoising", "noising"):
            chosen = indices if grid == "neurons" else None
            base, terms = gradient_times_difference(model, batch, grid, direction, chosen)
            est = atp_star(model, batch, grid, direction=direction, indices=chosen,
                           qk_fix=False, grad_drop=False)
            assert est.method == "atp" and est.base_metric == pytest.approx(base, abs=1e-6)
            # float32 sums in another order: the estimates agree to a few float32 roundings
            # of the largest, the reported values (base metric + estimate) to 1e-6 relative
            scale = terms.abs().max()
            assert (est.estimate - terms).abs().max() <= 1e-5 * scale, (grid, direction)
            raw = torch.as_tensor(est.to_result(model, batch).raw).flatten()
            assert (raw - (base + terms)).abs().max() <= 1e-6 * raw.abs().max()
            swept = attribution_sweep(model, batch, grid, direction=direction, indices=chosen)
            assert swept.method == "attribution"
            ref = torch.as_tensor(swept.raw).flatten()
            assert (raw - ref).abs().max() <= 1e-6 * ref.abs().max(), (grid, direction)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_small_patches_match_the_first_order_estimate(family):
    model, batch = setup(family)
    site = "blocks.1.hook_resid_pre"
    _, grads, last = _base_with_grads(model, batch.clean, batch, [site], "logit_diff")
    pos = batch.clean.shape[1] - 1  # the prediction depends on it strongly
    direction = grads[site][:, pos].sum(0)
    eps = 1e-2 * direction / direction.norm()  # a small step along the gradient
    add = Intervention(site, "add", positions=(pos,), vector=tuple(eps.tolist()))
    with intervene(model, [add]):
        patched = model(batch.clean)[:, -1]
    exact = (metric_on_last("logit_diff", patched, batch) -
             metric_on_last("logit_diff", last, batch)).mean().item()
    estimate = (grads[site][:, pos] @ eps).sum().item()  # gradient of the mean metric
    assert abs(exact) > 1e-4  # well above float32 rounding
    assert estimate == pytest.approx(exact, rel=0.05)


@pytest.mark.parametrize("grid", ["heads", "neurons"])
def test_attribution_correlates_with_exact_patching(grid):
    model, batch = setup("llama")
    indices = [0, 3, 9, 17] if grid == "neurons" else None
    exact = patch_sweep(model, batch, grid, indices=indices)
    approx = attribution_sweep(model, batch, grid, indices=indices)
    assert approx.method == "attribution" and approx.values.shape == exact.values.shape
    assert approx.clean_metric == pytest.approx(exact.clean_metric, abs=1e-5)
    x, y = exact.raw.flatten() - exact.corrupt_metric, approx.raw.flatten() - exact.corrupt_metric
    assert torch.corrcoef(torch.stack([x, y]))[0, 1] > 0.8
    slope = (x @ y) / (x @ x)  # same scale, not only the same ranking
    assert 0.5 < slope < 2
