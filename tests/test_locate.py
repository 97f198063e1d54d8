"""Verified localisation: the exact top k from fewer exact patches, the stopping rule, the
budget, and bad input."""

import pytest
import torch

from modelweave import Model
from modelweave.methods import patch_sweep
from modelweave.methods.locate import locate
from modelweave.tasks import TaskError, make_batch
from tokenizers_zoo import make_tokenizer

from tiny import tiny_hf_model


@pytest.fixture(scope="module")
def setup():
    tok = make_tokenizer("bytelevel")
    model = Model(tiny_hf_model("llama", vocab_size=len(tok)), tok)
    batch = make_batch(model, "ioi", n=4, same_length=True)
    sweep = patch_sweep(model, batch, "heads-by-pos")
    effects = (sweep.raw.flatten() - sweep.corrupt_metric)
    return model, batch, sweep, effects


def test_locate_finds_the_exact_top_k(setup):
    model, batch, sweep, effects = setup
    k = 5
    found = locate(model, batch, "heads-by-pos", k=k, step=8, spot=6)
    units = found.estimate.units
    truth = effects.abs().argsort(descending=True)[:k].tolist()
    assert [units.index(u) for u, _ in found.top] == truth
    for u, e in found.exact.items():  # verified values are the sweep's
        assert e == pytest.approx(effects[units.index(u)].item(), abs=1e-5)
    assert found.stopped == "bound" and found.n_exact < len(units)
    # the stopping rule held: the top k beat the upper estimate of every unverified unit
    assert found.threshold > found.upper
    unverified = [i for i, u in enumerate(units) if u not in found.exact]
    assert effects[unverified].abs().max() <= found.threshold
    # the spot checks' errors put every unverified unit far below the threshold
    assert found.risk < 0.05
    result, mask = found.to_result(model, batch)
    assert mask.shape == sweep.values.shape and int(mask.sum()) == found.n_exact
    torch.testing.assert_close(result.values[mask], sweep.values[mask], atol=1e-4, rtol=1e-4)


def test_a_budget_caps_the_exact_patches(setup):
    model, batch, _, effects = setup
    found = locate(model, batch, "heads-by-pos", k=3, budget=4, spot=0, step=8)
    assert found.stopped == "budget" and found.n_exact == 4
    assert len(found.top) == 3
    # no spot checks: nothing to fit the errors' tail to, so a miss is not ruled out
    assert found.risk == 1.0 and found.spot == []
    spotted = locate(model, batch, "heads-by-pos", k=3, budget=8, spot=5, step=8)
    assert spotted.stopped == "budget" and spotted.n_exact == 8 and len(spotted.spot) == 5


def test_neurons_at_one_position(setup):
    model, batch, _, _ = setup
    last = batch.clean.shape[1] - 1
    found = locate(model, batch, "neurons", k=4, positions=[last], layers=[1, 2])
    assert all(u.pos == last for u, _ in found.top)
    assert found.n_components == 2 * model.cfg.d_mlp


def test_bad_input_gives_one_clear_error(setup):
    model, batch, _, effects = setup
    with pytest.raises(TaskError, match=r"k=9999 is larger than the number of components"):
        locate(model, batch, "heads-by-pos", k=9999)
    with pytest.raises(TaskError, match="budget of exact patches must be at least 1, got 0"):
        locate(model, batch, "heads-by-pos", k=3, budget=0)
    with pytest.raises(TaskError, match=r"grid with an exact sweep: .*got 'nope'"):
        locate(model, batch, "nope", k=3)
    with pytest.raises(TaskError, match="k must be at least 1, got 0"):
        locate(model, batch, "heads-by-pos", k=0)


def test_atp_star_layers_out_of_range(setup):
    from modelweave.methods.atp_star import atp_star

    model, batch, _, _ = setup
    for grid in ("heads-by-pos", "queries"):
        with pytest.raises(TaskError, match=r"layer 7 out of range: layers are 0\.\.2"):
            atp_star(model, batch, grid, layers=[0, 7])


def _under_rated_top(setup, k):
    """The true ranking's scores with the top ``k`` under-rated (each halfway between the
    (k+1)-th largest |effect| and its own), every other unit rated at its |effect|: a ranking
    whose only under-estimates lie in its first ``k``."""
    from dataclasses import replace

    from modelweave.methods.atp_star import atp_star

    model, batch, _, effects = setup
    est = atp_star(model, batch, "heads-by-pos", grad_drop=False)
    size = effects.abs().float()
    order = size.argsort(descending=True)
    floor = float(size[order[k]])
    score = size.clone()
    score[order[:k]] = floor + (size[order[:k]] - floor) / 2
    return replace(est, score=score), size


@pytest.mark.numeric
@pytest.mark.parametrize("calibrate", ["tail", "all"])
def test_calibrate_sets_which_verified_units_the_margin_comes_from(setup, calibrate):
    model, batch, _, effects = setup
    k = 3
    planted, size = _under_rated_top(setup, k)
    found = locate(model, batch, "heads-by-pos", k=k, step=8, spot=4, estimate=planted,
                   calibrate=calibrate)
    units, score = planted.units, planted.score
    assert found.tau == pytest.approx(float(score.mean()))
    # relative errors of the verified units, from the independent sweep's exact effects
    idx = [units.index(u) for u in found.exact]
    err = {i: (float(size[i]) - float(score[i])) / (float(score[i]) + found.tau) for i in idx}
    top = set(score.argsort(descending=True)[:k].tolist())
    assert top <= set(idx) and max(err[i] for i in top) > 0.05
    kept = idx if calibrate == "all" else [i for i in idx if i not in top]
    # locate's exact effects (suffix engine) and the sweep's agree to ~1e-5 of the largest
    tol = 2e-5 * float(size.max()) / found.tau
    assert found.rho == pytest.approx(max(0.0, *(err[i] for i in kept)), abs=tol)
    if calibrate == "tail":  # the tail is rated exactly: no margin
        assert found.rho == pytest.approx(0.0, abs=tol)
    # the upper estimate: the best-rated unverified unit's score plus the margin
    rest = [i for i in range(len(units)) if i not in set(idx)]
    assert rest
    s_next = float(score[rest].max())
    assert found.upper == pytest.approx(s_next + found.rho * (s_next + found.tau), rel=1e-6)
    # either way the top k is the sweep's
    truth = effects.abs().argsort(descending=True)[:k].tolist()
    assert [units.index(u) for u, _ in found.top] == truth
    assert found.threshold > found.upper


def test_calibrate_must_be_tail_or_all(setup):
    model, batch, _, _ = setup
    with pytest.raises(TaskError, match="calibrate must be 'tail' or 'all', got 'top'"):
        locate(model, batch, "heads-by-pos", k=3, calibrate="top")
    with pytest.raises(TaskError, match="locate method must be one of atp\\*, atp, got 'x'"):
        locate(model, batch, "heads-by-pos", k=3, method="x")


def test_the_risk_of_a_miss_adds_up_over_the_unverified_units():
    """``risk`` is a sum over unverified units of each one's fitted tail probability (capped
    at 1): n units alike carry n times one's risk."""
    from modelweave.methods.locate import _risk

    errors = [0.0, 0.1, 0.2, 0.3, 0.4]  # median 0.2, mean excess 0.1
    one = _risk(errors, torch.tensor([1.0]), threshold=1.5, tau=0.0)
    assert 0 < one < 0.1
    assert _risk(errors, torch.tensor([1.0] * 4), 1.5, 0.0) == pytest.approx(4 * one)
    assert _risk(errors, torch.tensor([1.0] * 400), 1.5, 0.0) == 1.0
    # a unit rated far below the threshold adds ~nothing
    assert _risk(errors, torch.tensor([1.0, 1e-3]), 1.5, 0.0) == pytest.approx(one, rel=1e-6)
