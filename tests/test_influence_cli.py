"""`modelweave influence` on a tiny model directory; an `influence` experiment and its report
section."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from modelweave.cli import app
from modelweave.methods.influence import InfluenceScores
from test_influence import DOCS

from tiny import save_tiny_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("influence-cli")
    save_tiny_model(root / "model", "llama")
    (root / "docs.jsonl").write_text("".join(
        json.dumps({"id": f"d{i}", "text": t, "category": "fact" if "capital" in t else "x"})
        + "\n" for i, t in enumerate(DOCS)))
    (root / "queries.jsonl").write_text(
        '{"id": "cap", "task": "fact", "prompt": "The capital of Zorbania is", '
        '"completion": " Quill"}\n{"prompt": "1 2 3", "completion": " 4 <b>"}\n')
    return root


def test_cli_json(files):
    args = ["influence", "--model", str(files / "model"), "--docs", str(files / "docs.jsonl"),
            "--queries", str(files / "queries.jsonl"), "--train-batch", "3", "--query-rank",
            "0", "--out", str(files / "out"), "--json", "--threads", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["documents"] == len(DOCS) and summary["queries"] == 2
    assert [r["query"] for r in summary["results"]] == ["cap", "queries-1"]
    assert len(summary["results"][0]["top"]) == 3 and "top_gradient" in summary["results"][0]
    assert set(summary["seconds"]) >= {"covariance", "eigendecomposition", "lambda",
                                       "query gradients", "scores", "baseline scores"}
    table = InfluenceScores.load(files / "out")
    assert table.top("cap", 1)[0].id == summary["results"][0]["top"][0]["id"]
    again = CliRunner().invoke(app, args)  # factors and scores are found by their keys
    assert json.loads(again.stdout.strip().splitlines()[-1])["keys"] == summary["keys"]


def test_cli_bad_document_line(files, tmp_path, monkeypatch, capsys):
    """One line naming the file and line, exit status 1, no traceback."""
    from modelweave.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": \n')
    monkeypatch.setattr(sys, "argv", ["modelweave", "influence", "--model", str(files / "model"),
                                      "--docs", str(bad), "--queries", "ioi"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "bad.jsonl:2: invalid JSON" in err and "Traceback" not in err


def test_experiment_method_and_report(files, tmp_path):
    """An `influence` unit per model; its report section shows the top documents (escaped,
    the answer marked), the concentration curves and the correlation heatmap."""
    from modelweave.experiments import ConfigError, RunStore, parse_experiment, run_experiment

    spec = {"name": "inf", "model": str(files / "model"), "tasks": ["seq_digits"], "n": 2,
            "methods": [{"influence": {"docs": str(files / "docs.jsonl"), "layers": "1-2",
                                       "queries": [str(files / "queries.jsonl"), "seq_digits"],
                                       "train_batch": 3, "query_rank": None, "threads": 1,
                                       "baseline": False, "top_k": 3}}]}
    experiment = parse_experiment(spec)
    (unit,) = experiment.units()
    assert unit.task is None and unit.params["layers"] == [1, 2]
    outcome = run_experiment(experiment, tmp_path)
    store = RunStore(outcome.root)
    record = next(iter(store.records().values()))
    summary = record["summary"]
    assert summary["queries"] == 4 and set(summary["tasks"]) == {"fact", "queries",
                                                                  "seq_digits"}
    assert 0 < summary["tasks"]["fact"]["top3_share"] <= 1 and "correlation" in summary
    result = store.load(unit.id)
    assert len(result.settings["resolved_modules"]) == 6
    html = outcome.report.read_text()
    section = html[html.index('<section id="influence">'):]
    section = section[:section.index("</section>")]
    assert "influence-0-conc" in section and "influence-0-corr" in section
    assert "<mark>Quill</mark>" in section and "&lt;b&gt;" in section and " 4 <b>" not in section
    with pytest.raises(ConfigError, match=r"influence.docs: required"):
        parse_experiment({**spec, "methods": [{"influence": {"layers": 1}}]})


def test_kind_accepts_the_command_spellings(files):
    from modelweave.experiments.methods import get_method
    from modelweave.experiments.methods.influence import influence_settings

    params = get_method("influence").check_params(
        {"docs": str(files / "docs.jsonl"), "modules": "a.b, c.d", "layers": "1-2",
         "query_rank": 0, "lambda_examples": 7}, "w")
    assert params["modules"] == ["a.b", "c.d"] and params["layers"] == [1, 2]
    settings = influence_settings(params, seed=3)
    assert settings.query_rank is None and settings.lambda_max_examples == 7
    assert settings.seed == 3 and settings.modules == ["a.b", "c.d"]
