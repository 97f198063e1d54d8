"""The command line: listing, predictions, and one-line errors."""

import subprocess
import sys

import pytest

from modelweave.models import embedded


def run(*args):
    code = "from modelweave.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=300)


def test_models_lists_architectures_and_the_embedded_model():
    result = run("models")
    assert result.returncode == 0
    for arch in ("llama", "gpt2", "gpt_neox", "olmo", "olmo2", "cohere"):
        assert arch in result.stdout
    assert "smollm2-135m" in result.stdout
    installed = "yes" if embedded.gguf_path() else "no"
    assert f"installed: {installed}" in result.stdout


def test_bad_model_is_one_line_without_traceback(tmp_path):
    result = run("predict", "--model", str(tmp_path / "missing.gguf"), "hello")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: no such file")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.xdist_group("smollm")
def test_predict_on_the_embedded_model():
    result = run("predict", "When Mary and John went to the store, John gave a drink to")
    assert result.returncode == 0, result.stderr
    assert "' Mary'" in result.stdout
