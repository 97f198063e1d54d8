"""`modelweave patch --method atp*|locate` on a tiny model directory; the same in an experiment
file, and the report marking which values are exact."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from modelweave.cli import app
from modelweave.experiments import RunStore, build_report, parse_experiment, run_experiment
from modelweave.methods import PatchingResult

from tiny import save_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama"))


def patch(model_dir, out, *extra):
    result = CliRunner().invoke(app, ["patch", "--model", model_dir, "--n", "4",
                                      "--out", str(out), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_cli_locate_and_atp_star(model_dir, tmp_path):
    found = patch(model_dir, tmp_path / "loc", "--grid", "heads-by-pos", "--method", "locate",
                  "--k", "3")
    assert found["method"] == "locate" and found["k"] == 3
    assert 3 <= found["n_exact"] <= found["n_components"]
    exact_top = [row for row in found["top"] if row["exact"]]
    assert len(exact_top) >= 3  # the located top k are exact values
    saved = json.loads((tmp_path / "loc" / "locate.json").read_text())
    assert sum(saved["exact_mask"]) == found["n_exact"]
    star = patch(model_dir, tmp_path / "star", "--grid", "heads", "--method", "atp*")
    assert star["method"] == "atp*" and not any(row["exact"] for row in star["top"])
    assert PatchingResult.load(tmp_path / "star" / "result").method == "atp*"


def test_cli_bad_locate_input_is_one_error(model_dir, tmp_path):
    result = CliRunner().invoke(app, ["patch", "--model", model_dir, "--n", "4", "--grid",
                                      "heads", "--method", "locate", "--budget", "0",
                                      "--out", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert "budget of exact patches must be at least 1" in str(result.exception or "") + \
        result.output


def test_experiment_and_report_mark_exact_values(model_dir, tmp_path):
    spec = parse_experiment({"name": "loc", "model": model_dir, "tasks": ["ioi"], "n": 4,
                             "methods": [{"patch": {"grid": "heads-by-pos", "method": "locate",
                                                    "k": 3}},
                                         {"patch": {"grid": "heads", "method": "atp*"}}]})
    run_experiment(spec, tmp_path)
    store = RunStore(tmp_path)
    records = store.records()
    located = [r for r in records.values() if "locate" in r["summary"]]
    assert len(located) == 1 and located[0]["summary"]["locate"]["n_exact"] >= 3
    html = build_report(tmp_path).read_text()
    assert "values exact (verified), the rest AtP* estimates" in html
    assert "every value an estimate" in html
    assert "<td class='exact'>exact</td>" in html
