"""`modelweave patch`, `lens`, `heads` on the embedded model."""

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smollm")]


def run(*args):
    code = "from modelweave.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_patch_exact_and_attribution(tmp_path):
    exact = run("patch", "--grid", "heads", "--layers", "22,23", "--n", "8", "--json",
                "--out", str(tmp_path / "exact"))
    assert exact["top"][0]["unit"]["layer"] in ("22", "23")
    assert exact["clean_metric"] > exact["corrupt_metric"]
    for f in exact["files"]:
        assert (tmp_path / "exact" / f.split("/")[-1]).exists()
    assert (tmp_path / "exact" / "plotly.min.js").exists()
    approx = run("patch", "--grid", "mlp", "--method", "attribution", "--n", "8", "--json",
                 "--out", str(tmp_path / "attr"))
    assert approx["method"] == "attribution" and len(approx["top"]) == 10


def test_lens_and_heads(tmp_path):
    lens = run("lens", "--n", "4", "--json", "--out", str(tmp_path / "lens"))
    assert len(lens["layers"]) == 31 and lens["answer_prob_end"][-1] > 0.2
    heads = run("heads", "--task", "ioi", "--n", "4", "--json", "--out", str(tmp_path / "h"))
    assert heads["top"]["induction"][0]["score"] > 0.5 and "dla_logit_diff" in heads


def test_bad_grid_is_one_line():
    code = "from modelweave.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", code, "patch", "--grid", "edges"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "unknown grid 'edges'" in result.stderr
    assert "Traceback" not in result.stderr
