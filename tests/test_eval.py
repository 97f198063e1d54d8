"""evaluate() and `modelweave eval` on the embedded model."""

import json
import subprocess
import sys

import pytest

from modelweave.metrics import evaluate

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smollm")]


def test_ioi_is_solved(smollm):
    result = evaluate(smollm, "ioi", n=32, seed=0)
    assert result.n == 32 and result.accuracy.mean > 0.8
    assert result.logit_diff.ci_low > 2 > abs(result.logit_diff_corrupt.mean)


def test_digits_and_greater_than(smollm):
    assert evaluate(smollm, "seq_digits", n=16).accuracy.mean > 0.9
    gt = evaluate(smollm, "greater_than", n=16)
    assert gt.metric == "prob_diff" and gt.metric_value.mean > 0.5


def test_full_scoring_agrees_on_single_token_answers(smollm):
    first = evaluate(smollm, "country_capital", n=8, seed=1)
    full = evaluate(smollm, "country_capital", n=8, seed=1, scoring="full")
    assert full.n == first.n and full.logit_diff.mean > 0


def test_cli_eval_json():
    code = "from modelweave.cli import main; main()"
    out = subprocess.run([sys.executable, "-c", code, "eval", "--task", "seq_digits", "--n",
                          "8", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"accuracy", "logit_diff", "n", "dropped"} <= set(data)
    assert data["n"] == 8 and data["accuracy"] > 0.9
