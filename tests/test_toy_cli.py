"""train-toy, toy-analyse and toy-series on the command line; the ``toy`` experiment method and
its report section."""

import json
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from modelweave.cli import app
from modelweave.toy import ToyError

TINY = ["--task", "induction", "-p", "vocab=12", "-p", "length=5", "--layers", "2", "--heads",
        "2", "--d-model", "16", "--attn-only", "--steps", "12", "--save-every", "6",
        "--eval-every", "6", "--weight-decay", "0.01", "--batch-size", "16"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "run"
    result = CliRunner().invoke(app, ["train-toy", *TINY, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_train_toy_json_and_analyses(tiny_run, tmp_path):
    out, summary = tiny_run
    assert summary["final"] == str(out / "final")
    assert [c.rsplit("/", 1)[1] for c in summary["checkpoints"]] == ["step-6", "step-12"]
    assert summary["last"]["step"] == 12 and 0 <= summary["last"]["test_acc"] <= 1
    runner = CliRunner()
    comp = runner.invoke(app, ["toy-analyse", "composition", str(out / "final"), "--json",
                               "--out", str(tmp_path / "c")])
    assert comp.exit_code == 0, comp.output
    data = json.loads(comp.stdout)
    assert len(data["top_k"]) == 3 and (tmp_path / "c" / "composition.html").is_file()
    stored = json.loads((tmp_path / "c" / "composition.json").read_text())
    assert len(stored["scores"]["k"]) == 2  # [layer, head, layer, head]
    ind = runner.invoke(app, ["toy-analyse", "induction", str(out / "final"), "--json"])
    assert ind.exit_code == 0, ind.output
    assert set(json.loads(ind.stdout)["previous_token"]) == {"head_roles", "k_composition",
                                                             "eap_ig"}
    series = runner.invoke(app, ["toy-series", str(out), "--method", "heads", "--json"])
    assert series.exit_code == 0, series.output
    rows = json.loads(series.stdout)["rows"]
    assert [r["step"] for r in rows] == [6, 12] and "max_induction" in rows[0]


def test_bad_input_is_one_clear_error(tiny_run, tmp_path):
    out, _ = tiny_run
    code = "from modelweave.cli import main; main()"
    again = subprocess.run([sys.executable, "-c", code, "train-toy", *TINY, "--out", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert "not empty" in again.stderr and "--resume" in again.stderr
    runner = CliRunner()
    for args, message in ((["--heads", "5"], "must divide"), (["-p", "p=1"], "p >= 2")):
        result = runner.invoke(app, ["train-toy", *args, "--out", str(tmp_path / "x")])
        assert isinstance(result.exception, ToyError) and message in str(result.exception)
    assert not (tmp_path / "x").exists()
    # a finished run resumed with more steps continues from its last checkpoint
    more = runner.invoke(app, ["train-toy", *TINY[:-10], "--steps", "18", "--save-every", "6",
                               "--eval-every", "6", "--weight-decay", "0.01", "--batch-size",
                               "16", "--out", str(out), "--resume", "--json"])
    assert more.exit_code == 0, more.output
    assert json.loads(more.stdout)["resumed_from"] == 12


def test_toy_experiment_method_and_report(tiny_run, tmp_path):
    from modelweave.experiments import build_report, load_experiment, run_experiment

    out, _ = tiny_run
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump({"name": "toy", "model": str(out / "final"), "n": 8,
                                    "tasks": ["toy_induction"],
                                    "methods": [{"toy": {"analyses": ["composition",
                                                                      "induction"]}}]}))
    run_experiment(load_experiment(path), tmp_path / "run")
    units = list((tmp_path / "run").glob("units/*toy*/toy.json"))
    assert len(units) == 1
    data = json.loads(units[0].read_text())
    assert set(data) == {"composition", "induction"}
    html = build_report(tmp_path / "run").read_text()
    assert "Toy models" in html and "toy-composition-0" in html
    with pytest.raises(Exception, match="unknown analysis"):
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({"name": "b", "model": str(out / "final"),
                                       "tasks": ["toy_induction"],
                                       "methods": [{"toy": {"analyses": ["fourier"]}}]}))
        load_experiment(bad)


def test_toy_analyse_errors_are_one_line(tiny_run, tmp_path):
    """A model an analysis cannot read is a ToyError (one ``error:`` line), not a traceback."""
    from modelweave.errors import ModelWeaveError

    out, _ = tiny_run
    runner = CliRunner()
    one = tmp_path / "one"
    small = [*TINY[:TINY.index("--layers")], "--layers", "1", *TINY[TINY.index("--heads"):]]
    trained = runner.invoke(app, ["train-toy", *small, "--out", str(one), "--json"])
    assert trained.exit_code == 0, trained.output
    for args, message in ((["induction", str(one / "final")], "induction: an induction "
                           "circuit needs at least two layers"),
                          (["grokking", str(out)], "grokking: "),  # an induction run
                          (["fourier", str(out)], "unknown analysis 'fourier'")):
        result = runner.invoke(app, ["toy-analyse", *args, "--out", str(tmp_path / "o")])
        assert isinstance(result.exception, ModelWeaveError), result.output
        assert str(result.exception).startswith(message)
        assert "\n" not in str(result.exception)
    assert isinstance(runner.invoke(app, ["toy-analyse", "grokking", str(out)]).exception,
                      ToyError)


def test_toy_series_out_writes_json_and_plot(tiny_run, tmp_path):
    """``toy-series --out`` saves the rows and draws them (one trace per metric) as HTML."""
    from modelweave.report.toy import series_figure

    out, _ = tiny_run
    result = CliRunner().invoke(app, ["toy-series", str(out), "--method", "composition",
                                      "--out", str(tmp_path / "s"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["files"] == [str(tmp_path / "s" / "series.json"),
                             str(tmp_path / "s" / "series_composition.html")]
    assert (tmp_path / "s" / "series_composition.html").stat().st_size > 0
    fig = series_figure(data["rows"], "t", log_y=True)
    assert [t.name for t in fig.data] == [k for k in data["rows"][0] if k != "step"]
    assert fig.layout.yaxis.type == "log"
