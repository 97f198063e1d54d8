"""Resampling and matched nulls on synthetic problems whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelweave.metrics.nulls import (
    NullError,
    compare,
    equal_norm_vectors,
    heads_universe,
    matched_components,
    matched_draws,
    neurons_universe,
    permutation,
    random_directions,
    stratum,
)
from modelweave.metrics.uncertainty import (
    ResamplingError,
    across_seeds,
    bootstrap_curve,
    bootstrap_stat,
    check_seeds,
    jaccard,
    stability,
)


def test_bootstrap_interval_covers_the_true_mean_at_the_nominal_rate():
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(100):
        x = rng.exponential(2.0, size=60)          # skewed; true mean 2.0
        agg = bootstrap_stat(x, n_resamples=800, seed=int(rng.integers(1 << 30)))
        covered += agg.ci_low <= 2.0 <= agg.ci_high
    assert covered >= 90


def test_bootstrap_of_a_paired_ratio_covers_the_true_ratio():
    # faithfulness-like statistic: mean(c) / mean(m), with c = 0.7 m + noise (true ratio 0.7)
    rng = np.random.default_rng(2)
    covered = 0
    for _ in range(100):
        m = rng.normal(3.0, 1.0, size=80)
        c = 0.7 * m + rng.normal(0, 0.3, size=80)
        agg = bootstrap_stat([c, m], lambda c, m: c.mean() / m.mean(), n_resamples=600,
                             seed=int(rng.integers(1 << 30)))
        covered += agg.ci_low <= 0.7 <= agg.ci_high
    assert covered >= 90
    # pairing matters: resampling the arrays independently would give a wider interval
    assert agg.mean == pytest.approx(c.mean() / m.mean(), rel=1e-12)


def test_seed_interval_covers_at_the_nominal_rate_and_one_seed_has_no_interval():
    rng = np.random.default_rng(3)
    covered = sum(a.ci_low <= 5.0 <= a.ci_high
                  for a in (across_seeds(rng.normal(5.0, 2.0, size=4)) for _ in range(300)))
    assert covered >= 270                        # 95% nominal; t-interval is exact for normals
    one = across_seeds([0.4])
    assert one.mean == pytest.approx(0.4) and np.isnan(one.ci_low) and one.n == 1


def test_curve_band_contains_the_curve_and_narrows_with_more_prompts():
    rng = np.random.default_rng(4)
    truth = np.linspace(0, 1, 7)
    small = bootstrap_curve(truth + rng.normal(0, 0.5, size=(20, 7)), seed=0)
    large = bootstrap_curve(truth + rng.normal(0, 0.5, size=(500, 7)), seed=0)
    for band in (small, large):
        assert all(lo <= v <= hi for lo, v, hi in zip(band.low, band.value, band.high,
                                                      strict=True))
    width = lambda b: np.mean(np.subtract(b.high, b.low))  # noqa: E731
    assert width(large) < width(small) / 3
    assert np.allclose(large.value, truth, atol=0.1)


def test_stability_finds_the_planted_core():
    rng = np.random.default_rng(5)
    core = {f"a{i}.h0" for i in range(5)}
    sets = [core | {f"a9.h{int(h)}" for h in rng.choice(30, size=5, replace=False)}
            for _ in range(10)]
    st = stability(sets)
    assert set(st.core) == core
    assert all(st.frequency[c] == 1.0 for c in core)
    assert 5 / 15 <= st.jaccard.mean < 1.0
    assert st.jaccard.ci_low <= st.jaccard.mean <= st.jaccard.ci_high
    direct = np.mean([jaccard(a, b) for i, a in enumerate(sets) for b in sets[i + 1:]])
    assert st.jaccard.mean == pytest.approx(direct, rel=1e-12)
    same = stability([core, set(core), set(core)])
    assert same.jaccard.mean == 1.0 and same.jaccard.ci_low == 1.0
    assert jaccard(set(), set()) == 1.0 and jaccard({1}, {2}) == 0.0


def test_bad_resampling_requests_are_one_line_errors():
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ResamplingError, match="positive integer"):
            check_seeds(bad)
    with pytest.raises(ResamplingError, match="at least 2 sets"):
        stability([{"a"}])
    with pytest.raises(ResamplingError, match="no values"):
        bootstrap_stat([])


def test_matched_components_keep_layer_and_type_counts_and_avoid_the_chosen():
    chosen = ["a0.h1", "a0.h2", "a3.h0", "m5.n7", "m5.n9"]
    universe = heads_universe(6, 4) + [f"m{i}" for i in range(6)] + neurons_universe([5], 20)
    draws = matched_draws(chosen, universe, 50, seed=0)
    want = sorted(stratum(c) for c in chosen)
    seen = set()
    for draw in draws:
        assert sorted(stratum(c) for c in draw) == want
        assert not set(draw) & set(chosen)
        assert len(set(draw)) == len(draw)
        seen.update(draw)
    # every eligible candidate of a stratum gets drawn somewhere (uniform, not fixed)
    assert {"a0.h0", "a0.h3"} <= seen and {"a3.h1", "a3.h2", "a3.h3"} <= seen
    assert matched_draws(chosen, universe, 3, seed=1) == matched_draws(chosen, universe, 3,
                                                                       seed=1)


def test_a_null_that_cannot_be_matched_names_the_layer():
    chosen = [f"a2.h{i}" for i in range(50)]
    with pytest.raises(NullError, match=r"50 random head\(s\) of layer 2 .*has 9 candidate"):
        matched_components(chosen, heads_universe(3, 9), 0, exclude=False)
    with pytest.raises(NullError, match="the layer has 4 other"):   # 9 heads, 5 chosen
        matched_components([f"a1.h{i}" for i in range(5)], heads_universe(3, 9), 0)
    with pytest.raises(NullError, match="1 random mlp"):   # an MLP is alone in its layer
        matched_components(["m2"], [f"m{i}" for i in range(4)], 0)
    with pytest.raises(NullError, match="cannot match a null"):
        stratum("blocks.3.attn")


def test_equal_norm_vectors_and_directions():
    v = torch.randn(64, dtype=torch.float64) * 7
    r = equal_norm_vectors(v, 5, seed=0)
    assert r.shape == (5, 64) and r.dtype == torch.float64
    assert torch.allclose(r.norm(dim=1), v.norm().expand(5), rtol=1e-10)
    # directions are spread out, not copies of the vector
    cos = torch.nn.functional.cosine_similarity(r, v.expand(5, -1), dim=1)
    assert cos.abs().max() < 0.6
    u = random_directions(32, 4, seed=1)
    assert np.allclose(np.linalg.norm(u, axis=1), 1.0)
    with pytest.raises(NullError, match="non-zero"):
        equal_norm_vectors(torch.zeros(8), 2)


def test_permutation_is_a_derangement():
    for seed in range(20):
        p = permutation(7, seed)
        assert sorted(p.tolist()) == list(range(7)) and not np.any(p == np.arange(7))


def test_compare_gives_calibrated_p_values():
    rng = np.random.default_rng(6)
    # an observation from the null itself: p roughly uniform, so p < 0.05 about 5% of the time
    small = sum(compare(rng.normal(), rng.normal(size=199)).p_value < 0.05 for _ in range(400))
    assert 5 <= small <= 40
    strong = compare(10.0, rng.normal(size=199), null="standard normal")
    assert strong.p_value == pytest.approx(1 / 200) and strong.draws == 199
    assert strong.null_low < 0 < strong.null_high
    low = compare(-10.0, rng.normal(loc=1, size=99), alternative="less")
    assert low.p_value == pytest.approx(1 / 100)
    assert compare(2.0, [1.0, 1.0]).ratio == pytest.approx(2.0)


def test_stability_of_a_membership_matrix_is_the_stability_of_its_sets():
    from modelweave.metrics.uncertainty import stability_of_members

    rng = np.random.default_rng(3)
    member = rng.random((12, 40)) < 0.3
    labels = [f"e{j}" for j in range(40)]
    sets = [{labels[j] for j in np.flatnonzero(row)} for row in member]
    assert stability_of_members(member, labels, 0.5).to_dict() == stability(sets, 0.5).to_dict()
    with pytest.raises(ResamplingError, match=r"membership must be \[K, 39\]"):
        stability_of_members(member, labels[:-1])
