"""Matched nulls and intervals for CMAP and circuit overlap (tiny models, synthetic circuits)."""

import json
from collections import Counter

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from modelweave.analysis import CMAPResult, cmap, cmap_nulls, overlap, overlap_null
from modelweave.circuits import Circuit, Graph
from modelweave.cli import app
from modelweave.metrics.nulls import NullError
from modelweave.tasks import make_batch

from tiny import lora_like_pair


@pytest.fixture(scope="module")
def pair():
    base, tuned = lora_like_pair()
    return base, tuned, make_batch(base, "ioi", n=8, seed=0)


def _per_layer(heads):
    return Counter(int(h[1:].split(".h")[0]) for h in heads)


def test_cmap_null_draws_are_matched_by_layer_and_patched_like_the_group(pair):
    base, tuned, batch = pair
    groups = {"two": ["a0.h1", "a2.h3"], "three": ["a1.h0", "a1.h2", "a2.h0"]}
    result = cmap_nulls(tuned, base, batch, groups, null_draws=6, seed=3)
    for name, members in groups.items():
        g = result.groups[name]
        assert len(g.draws) == len(g.null_values) == 6 and g.null.draws == 6
        for draw in g.draws:  # the same count of heads in each layer, none of the group's
            assert _per_layer(draw) == _per_layer(members)
            assert not set(draw) & set(members) and len(set(draw)) == len(draw)
        assert len({tuple(d) for d in g.draws}) > 1  # the draws differ
        # each draw's recovery is that of patching the draw as a group
        again = cmap(tuned, base, batch, {"d": g.draws[0]})["d"]
        assert g.null_values[0] == pytest.approx(again, abs=1e-6)
        assert g.null.observed == g.recovery
        assert g.null.null_low <= g.null.null_mean <= g.null.null_high
        assert g.null.p_value == (1 + sum(v >= g.recovery for v in g.null_values)) / 7
    # the point recoveries are cmap's
    plain = cmap(tuned, base, batch, groups)
    for key, value in result.recoveries.items():
        assert value == pytest.approx(plain[key], abs=1e-9)


def test_cmap_intervals_contain_the_recovery_and_round_trip(pair, tmp_path):
    base, tuned, batch = pair
    cfg = base.cfg
    heads = [f"a{layer}.h{h}" for layer in range(cfg.n_layers) for h in range(cfg.n_heads)]
    groups = {"one": ["a1.h2"], "heads": heads, "mlps": [f"m{i}" for i in range(cfg.n_layers)]}
    result = cmap_nulls(tuned, base, batch, groups, null_draws=4, on_unmatched="skip")
    for g in result.groups.values():
        low, high = g.recovery_ci
        assert low <= g.recovery <= high and high > low
        assert len(g.per_prompt) == len(batch)
    assert result.source_ci[0] <= result.source <= result.source_ci[1]
    assert result.target_ci[0] <= result.target <= result.target_ci[1]
    # every head cannot be matched by other heads; MLPs have no random head counterpart
    assert result.groups["heads"].null is None and "layer" in result.groups["heads"].null_note
    assert result.groups["mlps"].null is None and "MLP" in result.groups["mlps"].null_note
    assert result.groups["one"].null is not None
    result.save(tmp_path / "cmap.json")
    back = CMAPResult.load(tmp_path / "cmap.json")
    assert back.groups["one"].null == result.groups["one"].null
    assert back.recoveries == result.recoveries


def test_a_group_that_cannot_be_matched_is_one_clear_error(pair):
    base, tuned, batch = pair
    layer0 = [f"a0.h{h}" for h in range(base.cfg.n_heads)]  # every head of layer 0
    with pytest.raises(NullError, match=r"layer 0 .*0 other candidate") as err:
        cmap_nulls(tuned, base, batch, {"all of layer 0": layer0}, null_draws=5)
    assert "\n" not in str(err.value) and "'all of layer 0'" in str(err.value)
    with pytest.raises(NullError, match="MLP"):
        cmap_nulls(tuned, base, batch, {"mix": ["a0.h1", "m1"]}, null_draws=5)
    with pytest.raises(NullError, match="unknown group"):
        cmap_nulls(tuned, base, batch, {"g": ["a0.h1"]}, null_groups=["h"])


def _circuit(graph: Graph, senders) -> Circuit:
    in_graph = torch.zeros_like(graph.real_edges)
    for name in ["input", *senders]:
        in_graph[graph.sender_names.index(name), graph.logits_receiver] = True
    return Circuit(graph, torch.zeros(graph.n_senders, graph.n_receivers), in_graph,
                   model="m", task="t", method="eap-ig")


def test_chance_overlap_is_the_exact_expectation_of_a_random_subset():
    """One layer of 10 heads: a random 3-head set R against a fixed 4-head set A shares
    E|A ∩ R| = 3 * 4 / 10 heads, so chance recall = 4/10 and chance precision = 3/10; the
    matched draws' mean agrees."""
    g = Graph(n_layers=1, n_heads=10)
    a = _circuit(g, ["a0.h0", "a0.h1", "a0.h2", "a0.h3"])
    b = _circuit(g, ["a0.h3", "a0.h7", "a0.h9"])
    null = overlap_null(a, b, draws=4000, seed=1)
    assert null.expected_shared == pytest.approx(1.2, abs=1e-12)
    assert null.chance["recall"] == pytest.approx(0.4, abs=1e-12)
    assert null.chance["precision"] == pytest.approx(0.3, abs=1e-12)
    # Jaccard by hand: I ~ Hypergeom(10, 4, 3), J = I / (7 - I)
    from math import comb

    pmf = [comb(4, i) * comb(6, 3 - i) / comb(10, 3) for i in range(4)]
    assert null.chance["jaccard"] == pytest.approx(sum(p * i / (7 - i)
                                                       for i, p in enumerate(pmf)), abs=1e-12)
    assert null.nulls["recall"].null_mean == pytest.approx(0.4, abs=0.02)
    assert null.nulls["recall"].observed == pytest.approx(1 / 3)


def test_a_planted_superset_beats_chance_and_a_matched_mlp_one_does_not():
    g = Graph(n_layers=6, n_heads=8)
    rng = np.random.default_rng(0)
    big = [f"a{layer}.h{h}" for layer in range(6) for h in rng.choice(8, 4, replace=False)]
    small = big[::3]  # 8 of the big circuit's 24 heads, spread over its layers
    o = overlap(_circuit(g, big), _circuit(g, small), null_draws=1000, seed=0)
    assert o.recall == 1.0 and o.null.chance["recall"] == pytest.approx(0.5, abs=1e-12)
    assert o.null.nulls["recall"].p_value < 0.01
    # MLPs matched by layer: a random set with the same MLPs has them all; no enrichment
    mlps = [f"m{layer}" for layer in range(6)]
    o = overlap(_circuit(g, big + mlps), _circuit(g, mlps[:3]), null_draws=200)
    assert o.recall == 1.0 and o.null.chance["recall"] == pytest.approx(1.0)
    assert o.null.nulls["recall"].p_value == 1.0
    with pytest.raises(NullError, match="nodes"):
        overlap(_circuit(g, big), _circuit(g, small), "edges", null_draws=10)


def test_cli_compare_prints_chance_beside_each_overlap(tmp_path):
    g = Graph(n_layers=4, n_heads=4)
    files = []
    for i, senders in enumerate((["a0.h1", "a1.h2", "a2.h0", "m2"], ["a0.h1", "m2"])):
        c = _circuit(g, senders)
        c.task = f"t{i}"
        files.append(c.save(tmp_path / f"c{i}.json"))
    result = CliRunner().invoke(app, ["compare", *map(str, files), "--out", str(tmp_path / "o"),
                                      "--null-draws", "300", "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output.strip().splitlines()[-1])["pairs"][0]
    assert row["recall"] == 1.0
    # m2 is always shared; a0.h1 with chance 1/4: E = 1.25 of 2
    assert row["recall_chance"] == pytest.approx(1.25 / 2, abs=1e-12)
    assert row["recall_null"]["draws"] == 300 and 0 < row["recall_null"]["p_value"] <= 1
    assert (tmp_path / "o" / "overlap_null.png").exists()
    text = CliRunner().invoke(app, ["compare", *map(str, files), "--out", str(tmp_path / "p")])
    assert text.exit_code == 0 and "chance" in text.output


def test_cli_cmap_json_and_an_unmatched_group_is_one_line(tmp_path):
    import subprocess
    import sys

    from tiny import save_tiny_model

    src = str(save_tiny_model(tmp_path / "src", "llama", seed=1))
    tgt = str(save_tiny_model(tmp_path / "tgt", "llama", seed=0))
    args = ["cmap", "--source", src, "--target", tgt, "--task", "ioi", "--n", "6"]
    ok = CliRunner().invoke(app, [*args, "--group", "g=a0.h1,a2.h3", "--group", "m=m1",
                                  "--null-draws", "3", "--skip-unmatched",
                                  "--out", str(tmp_path / "o"), "--json"])
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout.strip().splitlines()[-1])  # (stderr: loading bars)
    g = data["groups"]["g"]
    assert g["recovery_ci"][0] <= g["recovery"] <= g["recovery_ci"][1]
    assert g["recovery_null"]["draws"] == 3 and data["groups"]["m"]["recovery_null"] is None
    assert (tmp_path / "o" / "cmap.png").exists()
    assert CMAPResult.load(tmp_path / "o" / "cmap.json").groups["g"].draws
    bad = subprocess.run([sys.executable, "-c", "from modelweave.cli import main; main()", *args,
                          "--group", "layer0=a0.h0,a0.h1,a0.h2,a0.h3", "--out",
                          str(tmp_path / "b")], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot draw 4 random head(s) of layer 0" in lines[0]
