"""evaluate() and `modelweave eval` on the embedded model."""

import json
import subprocess
import sys

import pytest
import torch

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
    """For one-token answers the whole-answer log-probability difference is the first-token
    logit difference (the log-softmax normaliser cancels), example by example."""
    from modelweave.metrics import scores
    from modelweave.metrics.evaluate import _full_scores
    from modelweave.tasks import make_batch

    batch = make_batch(smollm, "country_capital", n=16, seed=1, scoring="full")
    full, _ = _full_scores(smollm, batch, corrupt=False)
    first = scores.logit_diff(smollm(batch.clean, attention_mask=batch.mask), batch)
    single = [i for i in range(len(batch)) if all(
        len(t) == 1 for t in batch.answer_tokens[i] + batch.wrong_tokens[i])]
    multi = [i for i in range(len(batch)) if i not in single]
    assert len(single) >= 3 and multi  # both kinds occur, so the comparison means something
    assert torch.allclose(full[single], first[single].float(), atol=1e-3)
    assert full.mean() > 0


def test_cli_eval_json():
    code = "from modelweave.cli import main; main()"
    out = subprocess.run([sys.executable, "-c", code, "eval", "--task", "seq_digits", "--n",
                          "8", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"accuracy", "logit_diff", "n", "dropped"} <= set(data)
    assert data["n"] == 8 and data["accuracy"] > 0.9
