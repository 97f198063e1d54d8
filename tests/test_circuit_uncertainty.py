"""Intervals, bands, edge stability and the matched null of circuits, on the planted model
(tests/planted.py: the circuit's edges are known by construction)."""

from __future__ import annotations

import math

import pytest
import torch

from modelweave.circuits import (
    CircuitEvaluator,
    Graph,
    discover,
    edge_attribution,
    faithfulness_curve,
)
from modelweave.circuits.graph import CircuitError
from modelweave.circuits.nulls import circuit_null, matched_edge_draws, strata_counts
from modelweave.circuits.uncertainty import edge_names, edge_stability, faithfulness_interval
from modelweave.metrics.nulls import NullError
from planted import planted_model


@pytest.fixture(scope="module")
def planted():
    return planted_model()


@pytest.fixture(scope="module")
def found(planted):
    model, batch, _ = planted
    return discover(model, batch, "eap-ig", null_draws=3, resamples=20)


def test_band_equals_the_curve_and_intervals_contain_their_values(found):
    curve, s = found.circuit.curve, found.summary()
    for name in ("signed", "abs"):
        band = curve[f"band_{name}"]
        assert band["x"] == pytest.approx(curve["percentages"])
        assert band["value"] == pytest.approx(curve[f"faithfulness_{name}"], rel=1e-5, abs=1e-6)
        for lo, v, hi in zip(band["low"], band["value"], band["high"], strict=True):
            assert lo - 1e-9 <= v <= hi + 1e-9
    for key in ("faithfulness", "cpr", "cmd"):
        low, high = s[f"{key}_ci"]
        assert low <= s[key] <= high and high > low
    assert found.uncertainty["cpr"]["mean"] == pytest.approx(s["cpr"], rel=1e-5)
    assert s["faithfulness_null"]["draws"] == 3
    assert 0 < s["faithfulness_null"]["p_value"] <= 1
    low, high = s["jaccard_ci"]
    assert 0 <= low <= s["jaccard"] <= high <= 1
    assert isinstance(s["stable_core_size"], int)


def test_intervals_shrink_with_more_prompts(planted):
    model, batch, truth = planted
    widths = []
    for n in (4, 16):
        ev = CircuitEvaluator(model, batch.select(slice(0, n)))
        agg = faithfulness_interval(ev, truth)
        assert agg.ci_low <= agg.mean <= agg.ci_high
        assert agg.mean == pytest.approx(ev.faithfulness(truth), rel=1e-5)
        widths.append(agg.ci_high - agg.ci_low)
    assert widths[1] < widths[0]


def test_per_prompt_edge_scores_sum_to_the_scores(planted):
    model, batch, _ = planted
    plain = edge_attribution(model, batch, method="eap-ig", steps=3, batch_size=6)
    kept = edge_attribution(model, batch, method="eap-ig", steps=3, batch_size=6,
                            per_prompt=True)
    assert kept.unit_scores.shape == (16, *plain.scores.shape)
    torch.testing.assert_close(kept.scores, plain.scores, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(kept.unit_scores.sum(0) / 16, plain.scores, rtol=1e-4, atol=1e-6)
    grouped = edge_attribution(model, batch, method="eap", batch_size=6, per_prompt=True,
                               max_unit_bytes=4 * kept.scores.numel() * 5)
    assert grouped.params["unit_size"] == 4 and grouped.unit_scores.shape[0] == 4
    eap = edge_attribution(model, batch, method="eap", batch_size=6)
    torch.testing.assert_close(grouped.scores, eap.scores, rtol=1e-4, atol=1e-6)


def test_stability_puts_the_planted_edges_in_the_stable_core(planted):
    model, batch, truth = planted
    scored = edge_attribution(model, batch, method="eap-ig", per_prompt=True)
    # the smallest top-|score| circuit that holds every planted edge (AUC ~ 1: their number,
    # see test_ground_truth), plus a margin of 20%: the weakest planted edges (e.g. into the
    # last head's keys, |score| 0.013 against a per-prompt spread of 0.04) trade places with
    # each other under resampling, while every distractor stays 8x below them
    real = scored.graph.real_edges
    ranked = scored.scores.abs().masked_fill(~real, -1).flatten().argsort(descending=True)
    planted_at = torch.nonzero(truth.flatten()[ranked])[:, 0]
    n_planted = int(truth.sum())
    assert int(planted_at.max()) + 1 == n_planted
    out = edge_stability(scored, n_planted + n_planted // 5, absolute=True, n_resamples=50)
    core = set(out["stability"]["core"])
    assert set(edge_names(scored, truth)) <= core
    assert out["unit"] == "prompt" and out["resamples"] == 50
    assert out["jaccard_full"]["ci_low"] <= out["jaccard_full"]["mean"] <= 1


def test_null_draws_have_exactly_the_strata_of_the_circuit(planted):
    model, batch, truth = planted
    scored = edge_attribution(model, batch, method="eap")
    circuit = scored.top(12, absolute=False)
    graph = circuit.graph
    want = strata_counts(graph, circuit.in_graph)
    draws = matched_edge_draws(graph, circuit.in_graph, 8, seed=1)
    assert len(draws) == 8
    assert any(not torch.equal(d, circuit.in_graph) for d in draws)
    for draw in draws:
        assert strata_counts(graph, draw) == want
        assert int(draw.sum()) == circuit.n_edges
        assert not (draw & ~graph.real_edges).any()
    ev = CircuitEvaluator(model, batch)
    null = circuit_null(ev, truth, 4)
    assert null.draws == 4 and null.observed == pytest.approx(ev.faithfulness(truth))
    assert math.isfinite(null.null_mean)


def test_a_null_that_cannot_be_matched_is_one_clear_error(planted):
    model, _, truth = planted
    graph = Graph.from_config(model.cfg)
    one = torch.zeros_like(graph.real_edges)
    one[graph.mlp(2), graph.logits_receiver] = True  # the only mlp-2 -> logits edge
    with pytest.raises(NullError, match=r"mlp of layer 2 -> logits of layer 3.*has 0"):
        matched_edge_draws(graph, one, 5, exclude=True)
    with pytest.raises(NullError, match="at least one draw"):
        matched_edge_draws(graph, truth, 0)
    with pytest.raises(NullError, match="empty circuit"):
        matched_edge_draws(graph, torch.zeros_like(one), 3)


def test_discover_checks_its_resampling_parameters(planted):
    model, batch, _ = planted
    with pytest.raises(CircuitError, match="null_draws must be a non-negative integer"):
        discover(model, batch, "eap", null_draws=-1)
    off = discover(model, batch, "eap", null_draws=0, resamples=0)
    s = off.summary()
    assert s["faithfulness_null"] is None and s["stable_core_size"] is None
    assert s["faithfulness_ci"] is not None


def test_faithfulness_curve_values_are_unchanged_by_the_per_prompt_memo(planted):
    model, batch, _ = planted
    scored = edge_attribution(model, batch, method="eap")
    ev = CircuitEvaluator(model, batch)
    curve = faithfulness_curve(scored, ev)
    for p, f in zip(curve["percentages"], curve["faithfulness_signed"], strict=True):
        rows = ev.rows(scored.top_fraction(p, False).in_graph)
        value = (rows.mean() - ev.empty_rows.mean()) / (ev.full_rows.mean() - ev.empty_rows.mean())
        assert value == pytest.approx(f, rel=1e-5, abs=1e-6)


def test_discover_kind_reports_intervals_null_and_its_components(found, tmp_path):
    from modelweave.experiments.methods.base import get_method
    from modelweave.experiments.methods.discover import null_text, stability_text, with_ci
    from modelweave.report.curves import curve_figure, save_faithfulness_curve

    kind = get_method("discover")
    assert {"resamples", "null_draws"} <= set(kind.params)
    found.circuit.save(tmp_path / "circuit.json")
    names = kind.components(tmp_path, {})
    assert names == [e for e, _ in found.circuit.edges()] and len(names) == found.circuit.n_edges
    s = found.summary()
    low, high = s["faithfulness_ci"]
    assert with_ci(s, "faithfulness") == f"{s['faithfulness']:.3f} [{low:.3f}, {high:.3f}]"
    assert "matched null" in null_text(s) and "3 draws" in null_text(s)
    assert "stable core" in stability_text(s)
    assert "[" in kind.headline(s)
    fig = curve_figure(found.circuit.curve, "t")
    assert [t.fill for t in fig.data].count("toself") == 2  # the two bands
    assert fig.data[-1].error_y.array is not None  # the null's range
    files = save_faithfulness_curve(found.circuit.curve, "t", tmp_path / "curve")
    assert all(f.exists() for f in files)


def test_a_null_of_equal_draws_draws_without_error(tmp_path):
    from modelweave.report.curves import save_faithfulness_curve

    value = 0.3  # the mean of equal draws can round past their quantiles (here by 1e-12)
    curve = {"percentages": [0.5, 1.0], "faithfulness_signed": [0.5, 1.0],
             "faithfulness_abs": [0.4, 1.0], "edges_signed": [1, 2], "edges_abs": [1, 2],
             "cpr": 0.4, "cmd": 0.3, "metric": "logit_diff",
             "null": {"null_mean": value, "null_low": value + 1e-12,
                      "null_high": value - 1e-12, "draws": 3, "n_edges": 1,
                      "percentage": 0.5}}
    assert all(f.exists() for f in save_faithfulness_curve(curve, "t", tmp_path / "c"))
