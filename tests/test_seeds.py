"""``seeds: K`` / ``--seeds K``: every method kind run for K seeds of prompts on one loaded model,
estimates over the seeds, stability of the found sets, and K = 1 exactly as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from modelweave.cli import app
from modelweave.experiments import (
    ConfigError,
    MethodKind,
    RunStore,
    parse_experiment,
    register,
    run_experiment,
    unregister,
)
from modelweave.experiments.methods import RunSettings, Unit
from modelweave.experiments.seeds import SEEDS_FILE, run_seeds, seed_lines
from modelweave.metrics.uncertainty import across_seeds, stability

from tiny import save_tiny_model

MU, SIGMA = 2.0, 0.5
UNIVERSE = [f"a{i}.h{j}" for i in range(3) for j in range(4)]


class Draw(MethodKind):
    """A value ~ N(MU, SIGMA) and a random set of components, both drawn from the seed."""

    name = "seed_draw"
    params = {"size": None}
    title = "Seed draws"

    def run(self, model, unit, experiment, folder, progress=None):
        rng = np.random.default_rng(experiment.seed)
        value = float(rng.normal(MU, SIGMA))
        found = sorted(rng.choice(UNIVERSE, size=unit.params.get("size", 5), replace=False))
        found = sorted({"a0.h0", *found})  # one component every seed finds
        (folder / "draw.json").write_text(json.dumps({"found": found, "seed": experiment.seed}))
        if progress:
            progress("draw", 1, 1)
        return {"value": value, "value_ci": [value - 1, value + 1], "n": 4,
                "null": {"p_value": value / 10}, "flag": True}

    def load(self, folder, record):
        return json.loads((folder / "draw.json").read_text())

    def components(self, folder, record):
        return self.load(folder, record)["found"]


@pytest.fixture
def draw_kind():
    register(Draw)
    yield Draw()
    unregister("seed_draw")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny-gpt2")))


def spec(model="m", **extra):
    return {"name": "s", "model": model, "tasks": ["ioi"], "n": 6, "methods": ["eval"], **extra}


# -- config -------------------------------------------------------------------------------------
def test_seeds_in_experiment_files_name_units_and_round_trip():
    one = parse_experiment(spec(methods=["eval", "lens"]))
    assert [u.id for u in one.units()] == ["m__ioi__eval", "m__ioi__lens"]  # K = 1 unchanged
    assert {u.seeds for u in one.units()} == {1} and one.seeds == 1
    three = parse_experiment(spec(seeds=3, methods=["eval", {"lens": {"seeds": 1}},
                                                    {"patch": {"seeds": 2, "grid": "heads"}}]))
    units = three.units()
    assert [(u.id, u.seeds) for u in units] == [
        ("m__ioi__eval__seeds3", 3), ("m__ioi__lens", 1), ("m__ioi__patch-heads__seeds2", 2)]
    assert units[2].params == {"grid": "heads"}  # seeds is not a parameter of the kind
    again = parse_experiment(three.to_dict())
    assert [(u.id, u.seeds) for u in again.units()] == [(u.id, u.seeds) for u in units]


@pytest.mark.parametrize("where, value", [
    ("seeds", 0), ("seeds", -2), ("seeds", True), ("seeds", "3"), ("seeds", 2.5),
    ("methods[0].eval.seeds", 0), ("methods[0].eval.seeds", False)])
def test_bad_seeds_are_one_config_error_naming_the_field(where, value):
    data = (spec(seeds=value) if where == "seeds" else spec(methods=[{"eval": {"seeds": value}}]))
    with pytest.raises(ConfigError) as err:
        parse_experiment(data)
    assert str(err.value) == (f"{where} must be a positive integer (1 = a single run), got "
                              f"{value!r}")


def test_cli_seeds_zero_is_a_usage_error():
    result = CliRunner().invoke(app, ["eval", "--seeds", "0"])
    assert result.exit_code == 2
    named = [line for line in result.output.splitlines() if "--seeds" in line]
    assert len(named) == 1 and "greater than or equal to 1" in named[0], result.output


# -- the machinery, on a kind with known answers ---------------------------------------------------
def test_estimates_cover_the_true_mean_at_the_nominal_rate(draw_kind, tmp_path, monkeypatch):
    monkeypatch.setattr(Draw, "components", MethodKind.components)  # value only: faster
    covered = 0
    for base in range(100):
        folder = tmp_path / f"u{base}"
        folder.mkdir()
        summary = run_seeds(draw_kind, None, Unit("m", "t", "seed_draw", {}, 5),
                            RunSettings(n=4, seed=1000 * base), folder)
        mean, low, high = summary["seeds"]["estimates"]["value"]
        covered += low <= MU <= high
    assert 90 <= covered <= 100  # 95% Student-t intervals of 5 normal draws


def test_seeded_unit_layout_estimates_and_stability(draw_kind, tmp_path):
    seen = []
    unit = Unit("m", "t", "seed_draw", {"size": 4}, 3)
    summary = run_seeds(draw_kind, None, unit, RunSettings(n=4, seed=7), tmp_path,
                        lambda *a: seen.append(a))
    singles = []
    for s in (7, 8, 9):  # each seed is the one-seed run of that seed
        one = tmp_path.parent / f"single-{s}"
        one.mkdir()
        singles.append(run_seeds(draw_kind, None, Unit("m", "t", "seed_draw", {"size": 4}),
                                 RunSettings(n=4, seed=s), one))
        assert sorted(p.name for p in one.iterdir()) == ["draw.json"]
        folder = tmp_path if s == 7 else tmp_path / "seeds" / f"seed-{s}"
        assert (folder / "draw.json").read_text() == (one / "draw.json").read_text()
    saved = json.loads((tmp_path / SEEDS_FILE).read_text())
    assert saved["seeds"] == [7, 8, 9] and saved["folders"] == [".", "seeds/seed-8",
                                                                 "seeds/seed-9"]
    assert saved["summaries"] == singles
    values = [s["value"] for s in singles]
    assert len(set(values)) == 3
    assert saved["estimates"]["value"] == across_seeds(values).to_dict()
    assert saved["estimates"]["null.p_value"]["mean"] == pytest.approx(np.mean(values) / 10)
    assert "flag" not in saved["estimates"] and "value_ci" not in saved["estimates"]
    assert saved["estimates"]["n"]["ci_low"] == saved["estimates"]["n"]["ci_high"] == 4
    sets = [draw_kind.components(tmp_path / f, {}) for f in saved["folders"]]
    assert saved["components"] == sets
    expected = stability(sets).to_dict()
    assert saved["stability"] == expected and "a0.h0" in expected["core"]
    # the summary: the first seed's, plus the compact block
    assert {k: v for k, v in summary.items() if k != "seeds"} == singles[0]
    block = summary["seeds"]
    agg = across_seeds(values)
    assert block["k"] == 3 and block["seeds"] == [7, 8, 9]
    assert block["estimates"]["value"] == pytest.approx([agg.mean, agg.ci_low, agg.ci_high])
    assert block["stability"]["core"] == len(expected["core"])
    assert block["stability"]["jaccard"][0] == pytest.approx(expected["jaccard"]["mean"])
    assert block["stability"]["sizes"] == [len(s) for s in sets]
    assert [a for a in seen if a[0] == "seeds"] == [("seeds", i, 3) for i in range(4)]
    assert ("seed-8/draw", 1, 1) in seen
    lines = seed_lines(draw_kind, summary)
    assert lines[0].startswith("value = ") and lines[0].endswith(" over 3 seeds")
    assert lines[1].startswith("stability over 3 seeds: Jaccard ")


def test_one_seed_is_exactly_the_kind_and_clears_old_seed_files(draw_kind, tmp_path):
    run_seeds(draw_kind, None, Unit("m", "t", "seed_draw", {}, 2), RunSettings(seed=1),
              tmp_path)
    assert (tmp_path / SEEDS_FILE).exists() and (tmp_path / "seeds").is_dir()
    summary = run_seeds(draw_kind, None, Unit("m", "t", "seed_draw", {}), RunSettings(seed=1),
                        tmp_path)  # the same --out again, one seed
    (tmp_path.parent / "direct").mkdir()
    assert summary == draw_kind.run(None, Unit("m", "t", "seed_draw", {}), RunSettings(seed=1),
                                    tmp_path.parent / "direct")
    assert "seeds" not in summary and sorted(p.name for p in tmp_path.iterdir()) == ["draw.json"]
    assert seed_lines(draw_kind, summary) == []


def test_a_kind_without_components_has_no_stability(draw_kind, tmp_path, monkeypatch):
    monkeypatch.setattr(Draw, "components", MethodKind.components)
    summary = run_seeds(draw_kind, None, Unit("m", "t", "seed_draw", {}, 2), RunSettings(),
                        tmp_path)
    assert "stability" not in summary["seeds"]
    saved = json.loads((tmp_path / SEEDS_FILE).read_text())
    assert saved["stability"] is None and saved["components"] is None


def test_experiment_runs_seeds_in_the_worker_and_reports_them(draw_kind, model_dir, tmp_path):
    data = spec(model_dir, seeds=3, methods=[{"seed_draw": {"size": 3}}, {"seed_draw": {"size": 4,
                                                                            "seeds": 1}}])
    with pytest.raises(ConfigError, match="two entries give the same unit"):
        parse_experiment({**data, "methods": [{"seed_draw": {"seeds": 2}}, "seed_draw",
                                              {"seed_draw": {"seeds": 2}}]})
    data["methods"][1]["seed_draw"]["size"] = 4
    Draw.id_params = ("size",)
    try:
        outcome = run_experiment(parse_experiment(data), tmp_path, plan=False)
    finally:
        Draw.id_params = ()
    three, one = outcome.computed
    assert three.endswith("__ioi__seed_draw-3__seeds3") and one.endswith("__ioi__seed_draw-4")
    store = RunStore(tmp_path)
    records = store.records()
    seeded, single = records[three], records[one]
    assert seeded["summary"]["seeds"]["k"] == 3 and "seeds" not in single["summary"]
    assert (store.folder(three) / "seeds" / "seed-2").is_dir()
    assert not (store.folder(one) / SEEDS_FILE).exists()
    frame = store.to_dataframe().set_index("unit")
    mean, low, high = seeded["summary"]["seeds"]["estimates"]["value"]
    row = frame.loc[three]
    assert (row["seeds"], row["value_seeds_mean"], row["value_seeds_low"]) == (3, mean, low)
    html = outcome.report.read_text()
    assert f"{mean:.3f} [{low:.3f}, {high:.3f}]" in html  # the default table, mean [low, high]
    assert "<th>seeds</th>" in html and "<th>Jaccard over seeds</th>" in html
    assert "seeds per unit</td><td>3" in html


# -- a real kind on a tiny model ----------------------------------------------------------------
def test_eval_seeds_get_distinct_prompts_and_match_single_seed_runs(model_dir, tmp_path):
    seeded = run_experiment(parse_experiment(spec(model_dir, seeds=2, seed=3)), tmp_path / "k2")
    plain = run_experiment(parse_experiment(spec(model_dir, seed=4)), tmp_path / "k1")
    (seeded_id,), (plain_id,) = seeded.computed, plain.computed
    assert plain_id.endswith("__ioi__eval") and seeded_id == plain_id + "__seeds2"
    k2, k1 = RunStore(tmp_path / "k2"), RunStore(tmp_path / "k1")
    assert sorted(p.name for p in k1.folder(plain_id).iterdir()) == [
        "done.json", "eval.json", "figures.json"]  # a one-seed unit as before
    assert "seeds" not in k1.records()[plain_id]["summary"]
    first = json.loads((k2.folder(seeded_id) / "eval.json").read_text())
    second = json.loads((k2.folder(seeded_id) / "seeds" / "seed-4" / "eval.json").read_text())
    alone = json.loads((k1.folder(plain_id) / "eval.json").read_text())
    assert first["per_example"] != second["per_example"]  # other prompts
    for key in second["per_example"]:
        np.testing.assert_allclose(second["per_example"][key], alone["per_example"][key],
                                   rtol=1e-6, atol=1e-6)
    saved = json.loads((k2.folder(seeded_id) / SEEDS_FILE).read_text())
    assert saved["summaries"][0] != saved["summaries"][1]
    assert saved["estimates"]["logit_diff"] == across_seeds(
        [s["logit_diff"] for s in saved["summaries"]]).to_dict()
    assert saved["stability"] is None  # eval finds no set
    html = seeded.report.read_text()
    assert "Across seeds" in html and "<th>accuracy</th>" in html  # under the kind's own table


def test_cli_seeds_json_and_headline(model_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "--model", model_dir, "--task", "ioi", "--n", "6",
                                 "--seeds", "2", "--json", "--out", str(tmp_path / "j")])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output.strip().splitlines()[-1])
    assert shown["seeds"]["k"] == 2 and shown["seeds"]["seeds"] == [0, 1]
    assert set(shown["seeds"]["estimates"]) >= {"accuracy", "logit_diff"}
    assert (Path(tmp_path / "j") / SEEDS_FILE).exists()
    text = runner.invoke(app, ["eval", "--model", model_dir, "--task", "ioi", "--n", "6",
                               "--seeds", "2", "--out", str(tmp_path / "t")])
    assert text.exit_code == 0, text.output
    mean, low, high = shown["seeds"]["estimates"]["accuracy"]
    assert f"accuracy = {mean:.3f} [{low:.3f}, {high:.3f}] over 2 seeds" in text.output
    assert "logit_diff = " in text.output
