"""AtP*: exact where the path to the metric is linear, the QK fix exact where only the
attention softmax is non-linear, and the two failure modes of plain AtP (a saturated head, a
cancelling pair) planted and found."""

import pytest
import torch
import transformers as tf

from modelweave import Model
from modelweave.engine import Intervention, intervene
from modelweave.methods import attribution_sweep, patch_sweep
from modelweave.methods.atp_star import atp_star
from modelweave.metrics.scores import metric_on_last
from modelweave.tasks import make_batch
from tokenizers_zoo import make_tokenizer

from tiny import _COMMON, randomize


def linear_tail_model(layers: int = 3, seed: int = 0, zero_last_mlp: bool = True) -> Model:
    """A tiny Llama whose final norm is the identity (and, optionally, whose last MLP writes
    nothing): after the last layer's attention the path to the logit difference is linear."""
    tok = make_tokenizer("bytelevel")
    config = tf.LlamaConfig(**{**_COMMON, "num_hidden_layers": layers, "vocab_size": len(tok)},
                            num_key_value_heads=2)
    torch.manual_seed(seed)
    hf = randomize(tf.AutoModelForCausalLM.from_config(config), seed).eval()
    hf.model.norm = torch.nn.Identity()
    if zero_last_mlp:
        with torch.no_grad():
            hf.model.layers[-1].mlp.down_proj.weight.zero_()
    return Model(hf, tok)


def exact_qk(model, batch, site, unit, direction="noising") -> float:
    """Mean metric change of patching one head/position of a query or key site."""
    base, src = (batch.clean, batch.corrupt) if direction == "noising" else (batch.corrupt,
                                                                             batch.clean)
    _, cache = model.run_with_cache(src, [site])
    base_m = metric_on_last("logit_diff", model(base)[:, -1], batch).mean().item()
    iv = Intervention(site, "patch", index=(unit.index,), positions=(unit.pos,), source="s")
    with intervene(model, [iv], sources={"s": cache}):
        patched = metric_on_last("logit_diff", model(base)[:, -1], batch).mean().item()
    return patched - base_m


@pytest.mark.parametrize("grid", ["heads-by-pos", "mlp", "neurons"])
def test_atp_star_equals_exact_patching_through_a_linear_tail(grid):
    model = linear_tail_model(zero_last_mlp=grid == "heads-by-pos")
    batch = make_batch(model, "ioi", n=4, same_length=True)
    last = model.cfg.n_layers - 1
    indices = list(range(12)) if grid == "neurons" else None
    for direction in ("noising", "denoising"):
        est = atp_star(model, batch, grid, direction=direction, layers=[last], indices=indices)
        exact = patch_sweep(model, batch, grid, direction=direction, layers=[last],
                            indices=indices)
        effect = (exact.raw.flatten() - est.base_metric)
        assert effect.abs().max() > 1e-2
        torch.testing.assert_close(est.estimate, effect, atol=2e-5, rtol=1e-4)
        # last layer: every GradDrop term equals the plain one (or is the own-layer 0), so the
        # score is the mean over prompts of each prompt's |effect|
        torch.testing.assert_close(est.score, est.per_prompt.abs().mean(0))
        assert (est.score >= est.estimate.abs() - 1e-7).all()


def test_plain_atp_is_attribution_patching():
    model = linear_tail_model(zero_last_mlp=False)
    batch = make_batch(model, "ioi", n=4, same_length=True)
    est = atp_star(model, batch, "heads-by-pos", qk_fix=False, grad_drop=False)
    ref = attribution_sweep(model, batch, "heads-by-pos")
    assert est.method == "atp"
    torch.testing.assert_close(est.to_result(model, batch).raw, ref.raw, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("grid", ["queries", "keys"])
def test_qk_fix_is_exact_when_only_the_softmax_is_non_linear(grid):
    model = linear_tail_model()
    batch = make_batch(model, "ioi", n=4, same_length=True)
    last = model.cfg.n_layers - 1
    site = f"blocks.{last}.attn.hook_{'q' if grid == 'queries' else 'k'}"
    fixed = atp_star(model, batch, grid, direction="noising", layers=[last], grad_drop=False)
    plain = atp_star(model, batch, grid, direction="noising", layers=[last], qk_fix=False,
                     grad_drop=False)
    length = batch.clean.shape[1]
    picks = [i for i, u in enumerate(fixed.units) if u.pos >= length - 4]
    exact = torch.tensor([exact_qk(model, batch, site, fixed.units[i]) for i in picks])
    assert exact.abs().max() > 1e-2
    torch.testing.assert_close(fixed.estimate[picks], exact, atol=2e-5, rtol=1e-3)
    assert (plain.estimate[picks] - exact).abs().max() > 1e-3  # AtP is only first order


def test_saturated_head_missed_by_atp_found_by_atp_star():
    model = linear_tail_model()
    last = model.cfg.n_layers - 1
    with torch.no_grad():  # plant saturation: sharpen the last layer's attention 30x
        model.hf_model.model.layers[last].self_attn.q_proj.weight.mul_(30)
    batch = make_batch(model, "ioi", n=4, same_length=True)
    site = f"blocks.{last}.attn.hook_k"
    fixed = atp_star(model, batch, "keys", direction="noising", layers=[last])
    plain = atp_star(model, batch, "keys", direction="noising", layers=[last], qk_fix=False,
                     grad_drop=False)
    exact = torch.tensor([exact_qk(model, batch, site, u) for u in fixed.units])
    top = int(exact.abs().argmax())
    assert exact[top].abs() > 0.1
    assert plain.estimate[top].abs() < 0.2 * exact[top].abs()  # AtP sees a flat softmax
    assert plain.order().index(fixed.units[top]) >= 3  # ... and ranks the key low
    assert fixed.estimate[top] == pytest.approx(exact[top].item(), rel=1e-3)
    assert fixed.order()[0] == fixed.units[top]


def test_cancelling_pair_found_with_graddrop():
    """Plant a node whose direct effect and its effect through layer 1's MLP cancel to first
    order (AtP = 0) while the exact effect is not 0; GradDrop (dropping layer 1) sees the
    direct effect alone."""
    model = linear_tail_model(layers=2, seed=0, zero_last_mlp=False)
    batch = make_batch(model, "ioi", n=4, same_length=True)
    node = len(batch.clean[0]) - 1  # layer 0's MLP at the last position: unit index `node`
    down = model.hf_model.model.layers[1].mlp.down_proj.weight
    original = down.detach().clone()

    def plain_at(c):
        with torch.no_grad():
            down.copy_(c * original)
        return atp_star(model, batch, "mlp", direction="noising", qk_fix=False,
                        grad_drop=False)

    a, b = plain_at(0.0).estimate[node].item(), plain_at(1.0).estimate[node].item()
    plain = plain_at(-a / (b - a))  # the AtP estimate is affine in the MLP's scale
    assert abs(plain.estimate[node]) < 1e-5 * plain.estimate.abs().max()
    star = atp_star(model, batch, "mlp", direction="noising")
    exact = patch_sweep(model, batch, "mlp", direction="noising")
    effect = (exact.raw.flatten() - star.base_metric).abs()
    assert effect[node] > 0.3 * effect.max()  # it matters (second of 2 x 15 exact) ...
    assert int((effect > effect[node]).sum()) <= 2
    assert star.units[node] not in plain.order()[:5]  # ... AtP misses it ...
    assert star.units[node] in star.order()[:3]  # ... GradDrop finds it
