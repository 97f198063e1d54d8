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
    assert 0 <= found.risk <= 1
    result, mask = found.to_result(model, batch)
    assert mask.shape == sweep.values.shape and int(mask.sum()) == found.n_exact
    torch.testing.assert_close(result.values[mask], sweep.values[mask], atol=1e-4, rtol=1e-4)


def test_a_budget_caps_the_exact_patches(setup):
    model, batch, _, effects = setup
    found = locate(model, batch, "heads-by-pos", k=3, budget=4, spot=0, step=8)
    assert found.stopped == "budget" and found.n_exact == 4
    assert len(found.top) == 3 and 0 <= found.risk <= 1


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
