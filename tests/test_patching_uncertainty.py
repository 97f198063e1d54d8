"""Per-prompt patching effects and their bootstrap intervals over prompts (exact, AtP, AtP*,
locate), saved with the result; on the planted tiny model (tests/planted.py)."""

from __future__ import annotations

import pytest
import torch

from modelweave.methods.patching import patch
from modelweave.methods.result import PatchingResult
from modelweave.metrics.functional import normalize
from planted import planted_model


@pytest.fixture(scope="module")
def planted():
    model, batch, _ = planted_model()
    return model, batch


@pytest.mark.parametrize("method", ["exact", "attribution", "atp*", "locate"])
def test_per_prompt_effects_average_to_the_grid(planted, method):
    model, batch = planted
    found = patch(model, batch, "heads", method=method, k=3)
    r = found.result
    assert r.per_prompt.shape == (len(batch), *r.values.shape)
    mean = r.per_prompt.double().mean(0)
    torch.testing.assert_close(mean, r.raw.double(), rtol=1e-5, atol=1e-5)
    value = normalize(mean, r.clean_rows.double().mean(), r.corrupt_rows.double().mean())
    torch.testing.assert_close(value, r.values.double(), rtol=1e-5, atol=1e-5)
    assert r.clean_rows.double().mean().item() == pytest.approx(r.clean_metric, rel=1e-5)
    assert r.corrupt_rows.double().mean().item() == pytest.approx(r.corrupt_metric, rel=1e-5)
    assert bool((r.low <= r.values + 1e-5).all() and (r.values <= r.high + 1e-5).all())
    s = found.summary(len(batch))
    low, high = s["top_effect_ci"]
    assert low <= s["top_effect"] <= high and high > low
    assert s["top"][0]["ci"] == [low, high]


def test_neuron_grid_per_prompt_effects_average_to_the_grid(planted):
    model, batch = planted
    r = patch(model, batch, "neurons", layers=[1]).result
    torch.testing.assert_close(r.per_prompt.double().mean(0), r.raw.double(), rtol=1e-5,
                               atol=1e-5)
    assert r.low.shape == r.values.shape == (1, model.cfg.d_mlp)


def test_intervals_shrink_with_more_prompts(planted):
    model, batch = planted
    from planted import CIRCUIT_HEADS

    cells = tuple(torch.tensor(c) for c in zip(*CIRCUIT_HEADS, strict=True))
    widths = []
    for n in (4, 16):  # the planted heads' cells (the others barely move the metric)
        r = patch(model, batch.select(slice(0, n)), "heads").result
        widths.append(float((r.high - r.low)[cells].mean()))
    assert widths[1] < widths[0]


def test_intervals_round_trip_and_old_results_load(planted, tmp_path):
    model, batch = planted
    r = patch(model, batch, "heads").result
    r.save(tmp_path / "result")
    back = PatchingResult.load(tmp_path / "result")
    for name in ("values", "raw", "low", "high", "per_prompt", "clean_rows", "corrupt_rows"):
        assert torch.equal(getattr(back, name), getattr(r, name)), name
    r.low = r.high = r.per_prompt = r.clean_rows = r.corrupt_rows = None
    r.save(tmp_path / "old")
    old = PatchingResult.load(tmp_path / "old")
    assert old.low is None and old.interval((0, 0)) is None


def test_heatmap_hover_shows_the_intervals(planted):
    from modelweave.experiments.methods.patch import component_name, with_intervals
    from modelweave.report.figures import flat_grid, heatmap_figure

    model, batch = planted
    r = patch(model, batch, "heads").result
    values, rows, cols, row_name, col_name = flat_grid(r)
    fig = heatmap_figure(values, rows, cols, row_name, col_name, "t")
    with_intervals(fig, r, row_name, col_name)
    assert "customdata[0]" in fig.data[0].hovertemplate
    assert fig.data[0].customdata.shape == (*values.shape, 2)
    assert fig.data[0].customdata[1, 2, 0] == pytest.approx(float(r.low[1, 2]))
    assert component_name("heads", {"layer": 2, "pos": None, "index": 1}) == "a2.h1"
    assert component_name("mlp", {"layer": 0, "pos": 3, "index": None}) == "mlp 0@3"


def test_patch_kind_components_are_the_verified_top_k(planted, tmp_path):
    from modelweave.experiments.methods.base import get_method
    from modelweave.io import write_json

    model, batch = planted
    found = patch(model, batch, "heads", method="locate", k=3)
    summary = found.summary(len(batch))
    write_json(tmp_path / "locate.json", {**found.located.summary(), "exact_mask": []})
    kind = get_method("patch")
    names = kind.components(tmp_path, {"summary": summary})
    assert names == [f"a{u.layer}.h{u.index}" for u, _ in found.located.top]
    assert len(names) == 3
    exact = patch(model, batch, "heads")
    assert kind.components(tmp_path, {"summary": exact.summary(len(batch))}) is None
