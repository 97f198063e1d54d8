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
from modelweave.methods.grids import Unit
from modelweave.metrics.scores import metric_on_last
from modelweave.tasks import TaskError, make_batch
from tokenizers_zoo import make_tokenizer

from tiny import _COMMON, randomize, tiny_hf_model


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


def exact_unit(model, batch, site, unit, direction="noising") -> float:
    """Mean metric change of patching one head/neuron at one position of ``site``."""
    base, src = (batch.clean, batch.corrupt) if direction == "noising" else (batch.corrupt,
                                                                             batch.clean)
    _, cache = model.run_with_cache(src, [site])
    base_m = metric_on_last("logit_diff", model(base)[:, -1], batch).mean().item()
    iv = Intervention(site, "patch", index=(unit.index,), positions=(unit.pos,), source="s")
    with intervene(model, [iv], sources={"s": cache}):
        patched = metric_on_last("logit_diff", model(base)[:, -1], batch).mean().item()
    return patched - base_m


@pytest.mark.numeric
@pytest.mark.parametrize("grid", ["heads-by-pos", "heads", "mlp", "neurons"])
def test_atp_star_equals_exact_patching_through_a_linear_tail(grid):
    model = linear_tail_model(zero_last_mlp=grid.startswith("heads"))
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
        # normalised like the sweep: 1 = clean, 0 = corrupted, whichever run is the base
        scale = float(exact.values.abs().max())
        torch.testing.assert_close(est.to_result(model, batch).values, exact.values,
                                   atol=1e-4 * scale, rtol=0)


@pytest.mark.numeric
@pytest.mark.parametrize("grid", ["heads", "neurons"])
def test_whole_site_grids_at_chosen_positions_are_the_per_position_units(grid):
    """``positions`` turns a head (neuron) at every position into one unit per position:
    each equals exact patching of that head (neuron) at that position alone."""
    model = linear_tail_model(zero_last_mlp=grid == "heads")
    batch = make_batch(model, "ioi", n=4, same_length=True)
    last, length = model.cfg.n_layers - 1, batch.clean.shape[1]
    positions = [length - 1, length - 3]
    indices = [0, 5, 11] if grid == "neurons" else None
    est = atp_star(model, batch, grid, direction="noising", layers=[last], indices=indices,
                   positions=positions)
    assert est.axes[-1] == "pos" and {u.pos for u in est.units} == set(positions)
    if grid == "heads":
        exact = patch_sweep(model, batch, "heads-by-pos", direction="noising", layers=[last])
        effect = {u: float(exact.raw[0, u.index, u.pos]) - est.base_metric for u in est.units}
    else:  # exact patching of one neuron at one position
        site = f"blocks.{last}.mlp.hook_post"
        effect = {u: exact_unit(model, batch, site, u) for u in est.units}
    want = torch.tensor([effect[u] for u in est.units])
    assert want.abs().max() > 1e-2
    torch.testing.assert_close(est.estimate, want, atol=1e-4 * float(want.abs().max()), rtol=0)


@pytest.mark.numeric
def test_heads_grid_ranks_the_top_heads_as_exact_patching_does():
    """Through a non-linear model AtP is approximate, but its largest estimates are exact
    patching's largest heads, and close to them on the scale of the largest effect (the
    ranking score adds GradDrop, which may raise others)."""
    tok = make_tokenizer("bytelevel")
    model = Model(tiny_hf_model("llama", vocab_size=len(tok)), tok)
    batch = make_batch(model, "ioi", n=4, same_length=True)
    est = atp_star(model, batch, "heads")
    exact = patch_sweep(model, batch, "heads")
    effect = exact.raw.flatten() - est.base_metric
    top = effect.abs().argsort(descending=True)[:4].tolist()
    ranked = est.estimate.abs().argsort(descending=True)[:4].tolist()
    assert set(ranked) == set(top) and ranked[0] == top[0]
    scale = float(effect.abs().max())
    assert (est.estimate[top] - effect[top]).abs().max() <= 0.15 * scale


@pytest.mark.numeric
def test_graddrop_score_equals_gradients_with_each_layer_cut_from_the_backward_pass():
    """Reference GradDrop: for each layer ``l``, the gradient with ``l``'s residual
    contribution detached (forward unchanged), then ``max(|E[I]|, E[sum_l |I_l|] / (L-1))``."""
    tok = make_tokenizer("bytelevel")
    model = Model(tiny_hf_model("llama", vocab_size=len(tok)), tok)
    batch = make_batch(model, "ioi", n=4, same_length=True)
    n_layers = model.cfg.n_layers
    names = [f"blocks.{layer}.hook_mlp_out" for layer in range(n_layers)]
    _, source = model.run_with_cache(batch.clean, names)  # denoising: clean into corrupted

    def terms(drop: int | None) -> torch.Tensor:
        acts, pre = {}, {}

        def keep(t, hook):
            acts[hook.name] = t.clone()
            return acts[hook.name]

        def store(t, hook):
            pre["x"] = t
            return t

        def cut(t, hook):  # same value, no gradient through the layer's own writes
            return pre["x"] + (t - pre["x"]).detach()

        hooks = [(n, keep) for n in names]
        if drop is not None:
            hooks += [(f"blocks.{drop}.hook_resid_pre", store),
                      (f"blocks.{drop}.hook_resid_post", cut)]
        with torch.enable_grad():
            logits = model.run_with_hooks(batch.corrupt, hooks, grad=True)
            value = metric_on_last("logit_diff", logits[:, -1], batch)[0].sum()
            grads = torch.autograd.grad(value, [acts[n] for n in names], allow_unused=True)
        return torch.stack([((source[n] - acts[n].detach())
                             * (0 if g is None else g)).sum(-1)
                            for n, g in zip(names, grads, strict=True)], 1)  # [B, L, pos]

    plain = terms(None)
    dropped = sum(terms(layer).abs() for layer in range(n_layers))
    want = torch.maximum(plain.mean(0).abs(), (dropped / (n_layers - 1)).mean(0)).flatten()
    est = atp_star(model, batch, "mlp")
    assert [(u.layer, u.pos) for u in est.units[:2]] == [(0, 0), (0, 1)]  # (layer, pos) order
    assert (want > plain.mean(0).abs().flatten() + 1e-3 * want.max()).any()  # GradDrop acts
    scale = float(want.max())
    torch.testing.assert_close(est.score, want, atol=1e-5 * scale, rtol=0)
    torch.testing.assert_close(est.estimate, plain.mean(0).flatten(), atol=1e-5 * scale, rtol=0)


def test_layer_position_and_index_ranges_are_checked_at_their_ends():
    model = linear_tail_model()
    batch = make_batch(model, "ioi", n=2, same_length=True)
    n_layers, length = model.cfg.n_layers, batch.clean.shape[1]
    for grid in ("heads-by-pos", "queries", "keys"):
        with pytest.raises(TaskError, match=rf"layer {n_layers} out of range: layers are "
                           rf"0\.\.{n_layers - 1}"):
            atp_star(model, batch, grid, layers=[n_layers], grad_drop=False)
        with pytest.raises(TaskError, match=r"layer -1 out of range"):
            atp_star(model, batch, grid, layers=[-1], grad_drop=False)
    for bad in (length, -1):
        with pytest.raises(TaskError, match=rf"position {bad} out of range \(prompts have "
                           rf"{length} tokens\)"):
            atp_star(model, batch, "heads", positions=[0, bad], grad_drop=False)
    with pytest.raises(TaskError, match=rf"head index {model.cfg.n_heads} out of range"):
        atp_star(model, batch, "heads", indices=[model.cfg.n_heads], grad_drop=False)
    with pytest.raises(TaskError, match=rf"head index {model.cfg.n_kv_heads} out of range"):
        atp_star(model, batch, "keys", indices=[model.cfg.n_kv_heads], grad_drop=False)
    with pytest.raises(TaskError, match=rf"neuron index {model.cfg.d_mlp} out of range"):
        atp_star(model, batch, "neurons", indices=[0, model.cfg.d_mlp], grad_drop=False)
    with pytest.raises(TaskError, match="unknown grid 'nope'"):
        atp_star(model, batch, "nope")
    # the last layer, position and index are in range
    est = atp_star(model, batch, "neurons", layers=[n_layers - 1], indices=[model.cfg.d_mlp - 1],
                   positions=[length - 1], grad_drop=False)
    assert est.units == [Unit(n_layers - 1, length - 1, model.cfg.d_mlp - 1)]


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
    exact = torch.tensor([exact_unit(model, batch, site, fixed.units[i]) for i in picks])
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
    exact = torch.tensor([exact_unit(model, batch, site, u) for u in fixed.units])
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
