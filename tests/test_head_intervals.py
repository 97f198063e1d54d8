"""Intervals over items/prompts and layer-matched nulls for head roles, DLA and the logit lens
(tiny random-config model), and the method kinds' summaries that carry them."""

import pytest
import torch

from modelweave import Model
from modelweave.experiments.methods.base import RunSettings, Unit, get_method
from modelweave.methods.dla import direct_logit_attribution, layer_bands
from modelweave.methods.head_roles import head_roles, pattern_scores, role_null
from modelweave.methods.lens import LensResult, logit_lens
from modelweave.metrics.nulls import NullError
from modelweave.tasks import make_batch
from tokenizers_zoo import make_tokenizer

from tiny import tiny_hf_model


@pytest.fixture(scope="module")
def model():
    tok = make_tokenizer("bytelevel")
    return Model(tiny_hf_model("llama", vocab_size=len(tok)), tok)


def test_role_scores_are_the_mean_of_their_items_with_intervals(model):
    roles = head_roles(model, seed=0)
    assert set(roles.items) == set(roles.scores)
    for role, grid in roles.scores.items():
        assert roles.items[role].shape[1:] == grid.shape and roles.items[role].shape[0] > 1
        assert torch.allclose(roles.items[role].mean(0), grid)
    # the per-sequence pattern scores average to the scores the old path computed
    assert torch.allclose(pattern_scores(model, seed=0)["induction"], roles.scores["induction"])
    for row in roles.top_intervals("previous_token", 3):
        low, high = row["score_ci"]
        assert low <= row["score"] <= high
    layer, head, _ = roles.top("copying", 1)[0]
    agg = roles.interval("copying", layer, head)
    assert agg.n == roles.items["copying"].shape[0] and agg.ci_low <= agg.mean <= agg.ci_high


def test_role_null_draws_random_heads_of_the_same_layers(model):
    roles = head_roles(model, seed=0)
    top = [(layer, head) for layer, head, _ in roles.top("induction", 3)]
    null = role_null(roles, "induction", top, draws=50, seed=1)
    grid = roles.scores["induction"]
    assert null.observed == pytest.approx(float(sum(grid[lh] for lh in top) / 3))
    # every head of a layer: no other heads to draw from
    n_heads = model.cfg.n_heads
    with pytest.raises(NullError, match="layer 0"):
        role_null(roles, "induction", [(0, h) for h in range(n_heads)])
    # the draws are matched by layer: the null of one head per layer is the mean of the others
    one = [(0, 0)]
    exact = float(grid[0, 1:].mean())
    assert role_null(roles, "induction", one, draws=3000).null_mean == pytest.approx(
        exact, abs=0.03)


def test_dla_per_prompt_values_average_to_the_result_and_bands_cover_it(model):
    batch = make_batch(model, "ioi", n=8, seed=0)
    dla = direct_logit_attribution(model, batch)
    pp = dla.per_prompt
    assert pp["heads"].shape == (len(batch), *dla.heads.shape)
    assert torch.allclose(pp["heads"].mean(0), dla.heads, atol=1e-6)
    assert torch.allclose(pp["attn"].mean(0), dla.attn, atol=1e-6)
    assert float(pp["logit_diff"].mean()) == pytest.approx(dla.logit_diff, abs=1e-5)
    bands = layer_bands(dla, n_resamples=200)
    for kind in ("attn", "mlp"):
        b = bands[kind]
        assert all(lo - 1e-9 <= v <= hi + 1e-9 for v, lo, hi in zip(b.value, b.low, b.high,
                                                                     strict=True))


def test_lens_per_prompt_last_position_and_band(model, tmp_path):
    batch = make_batch(model, "ioi", n=8, seed=0, same_length=True)
    result = logit_lens(model, batch)
    assert result.answer_prob_last.shape == (len(batch), len(result.layers))
    assert torch.allclose(result.answer_prob_last.mean(0), result.answer_prob[:, -1], atol=1e-6)
    band = result.band(n_resamples=200)
    assert all(lo <= v <= hi for v, lo, hi in zip(band.value, band.low, band.high, strict=True))
    result.save(tmp_path / "lens")
    assert torch.equal(LensResult.load(tmp_path / "lens").answer_prob_last,
                       result.answer_prob_last)


def test_kinds_carry_intervals_and_nulls_in_their_summaries(model, tmp_path):
    settings = RunSettings(n=8, seed=0)
    heads = get_method("heads")
    unit = Unit("m", "ioi", "heads")
    (tmp_path / "h").mkdir()
    summary = heads.run(model, unit, settings, tmp_path / "h")
    row = summary["induction"][0]
    assert row["score_ci"][0] <= row["score"] <= row["score_ci"][1]
    for role in ("previous_token", "duplicate_token", "induction", "copying"):
        if f"{role}_null" in summary:  # matched by layer unless the top 5 fill a layer
            assert summary[f"{role}_null"]["draws"] == 200
        else:
            assert "layer" in summary[f"{role}_null_note"]
    assert any(k.endswith("_null") for k in summary)
    low, high = summary["dla_logit_diff_ci"]
    assert low <= summary["dla_logit_diff"] <= high and len(summary["dla_top"]) == 3
    record = {"model": "m", "task": "ioi", "method": "heads", "params": {}, "summary": summary}
    files = heads.draw(tmp_path / "h", record)
    assert any(f.name == "dla_layers.png" for f in files)
    out = heads.command_output(record, files)
    assert "dla_top" not in out["top"] and "score_ci" in out["top"]["induction"][0]
    assert out["dla_logit_diff_ci"] == summary["dla_logit_diff_ci"]
    assert "top heads:" in heads.headline(summary)
    lens = get_method("lens")
    (tmp_path / "l").mkdir()
    s = lens.run(model, Unit("m", "ioi", "lens"), settings, tmp_path / "l")
    assert s["answer_prob_final_ci"][0] <= s["answer_prob_final"] <= s["answer_prob_final_ci"][1]
    assert len(s["answer_prob_end_band"]["low"]) == len(s["layers"])
    files = lens.draw(tmp_path / "l", {**record, "method": "lens", "summary": s})
    assert any(f.name == "answer_prob_end.png" for f in files)
    assert "[" in lens.headline(s)
