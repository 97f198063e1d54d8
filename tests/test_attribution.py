"""Attribution patching: right gradients, and agreement with exact patching."""

import pytest
import torch

from modelweave import Model
from modelweave.engine import Intervention, intervene
from modelweave.methods import attribution_sweep, patch_sweep
from modelweave.methods.attribution_patching import _base_with_grads
from modelweave.metrics.scores import metric_on_last
from modelweave.tasks import make_batch
from tokenizers_zoo import make_tokenizer

from tiny import tiny_hf_model


def setup(family):
    tok = make_tokenizer("bytelevel")
    model = Model(tiny_hf_model(family, vocab_size=len(tok)), tok)
    return model, make_batch(model, "ioi", n=8, same_length=True)


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
