"""`modelweave discover` on a tiny saved model: files, JSON summary, errors."""

import json
import subprocess
import sys

import pytest
import transformers as tf
from typer.testing import CliRunner

from modelweave.circuits import Circuit, CircuitError, from_mib
from modelweave.cli import app

from tiny import save_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"))


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)


def test_discover_writes_circuit_files_and_json(model_dir, tmp_path):
    result = invoke("discover", "--model", model_dir, "--task", "ioi", "--n", 8,
                    "--target", 0.8, "--json", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    for key in ("n_edges", "n_edges_total", "faithfulness", "cpr", "cmd"):
        assert key in summary
    assert summary["faithfulness"] >= 0.8 and summary["reached"]
    circuit = Circuit.load(tmp_path / "circuit.json")
    assert circuit.n_edges == summary["n_edges"] and circuit.curve["cpr"] == summary["cpr"]
    assert from_mib(tmp_path / "circuit.mib.json").n_edges == circuit.n_edges
    for name in ("circuit.html", "circuit.svg", "faithfulness.png", "faithfulness.html",
                 "plotly.min.js", "summary.json"):
        assert (tmp_path / name).exists(), name


def test_unreachable_target_reports_the_best_circuit(model_dir, tmp_path):
    result = invoke("discover", "--model", model_dir, "--n", 8, "--method", "eap",
                    "--target", 100, "--out", tmp_path)
    assert isinstance(result.exception, CircuitError)
    assert "not reached" in str(result.exception) and "best circuit" in str(result.exception)
    assert (tmp_path / "circuit.json").exists()


def test_bad_method_and_unsupported_family_are_one_line_errors(tmp_path):
    code = "from modelweave.cli import main; main()"
    bad = subprocess.run([sys.executable, "-c", code, "discover", "--method", "magic"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "unknown method 'magic'" in bad.stderr
    assert "Traceback" not in bad.stderr
    mamba = tmp_path / "mamba"
    tf.MambaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1).save_pretrained(mamba)
    result = subprocess.run([sys.executable, "-c", code, "discover", "--model", str(mamba),
                             "--n", "4"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "'mamba' is not supported" in result.stderr
    assert "olmo2" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
