"""Metric definitions, aggregation and faithfulness."""

import math

import numpy as np
import pytest
import torch

from modelweave import Model
from modelweave.metrics import (
    accuracy,
    answer_logprobs,
    bootstrap,
    faithfulness,
    kl,
    logit_diff,
    logprob,
    per_prompt_faithfulness,
    prob_diff,
)
from modelweave.tasks import Example, materialize

from tiny import tiny_hf_model, tiny_tokenizer


@pytest.fixture(scope="module")
def model():
    tok = tiny_tokenizer(adds_bos=False)
    return Model(tiny_hf_model("llama", vocab_size=len(tok)), tok)


@pytest.fixture(scope="module")
def batch(model):
    examples = [
        Example("When Mary and John went to the store, John gave a drink to",
                "When Mary and John went to the store, Mary gave a drink to",
                [" Mary"], [" John"]),
        Example("1 2 3 4 5", "1 2 3 4 5", [" 6"], [" 5", " 4"]),
    ]
    batch = materialize("t", examples, model.tokenizer, None, 0)
    assert len(batch) == 2
    return batch


def test_logit_metrics_match_their_definitions(model, batch):
    logits = model(batch.clean, attention_mask=batch.mask)
    for i in range(len(batch)):
        last = logits[i, batch.lengths[i] - 1]
        wrong = [last[w] for w in batch.wrong_ids[i] if w >= 0]
        expected = last[batch.answers[i]] - sum(wrong) / len(wrong)
        assert math.isclose(logit_diff(logits, batch)[i].item(), expected.item(), rel_tol=1e-5)
        logp = last.log_softmax(-1)
        assert math.isclose(logprob(logits, batch)[i].item(), logp[batch.answers[i]].item(),
                            rel_tol=1e-5)
        p = last.softmax(-1)
        wrong_mass = sum(p[w] for w in set(batch.wrong_ids[i].tolist()) - {-1})
        assert math.isclose(prob_diff(logits, batch)[i].item(),
                            (p[batch.answers[i]] - wrong_mass).item(), abs_tol=1e-6)
        assert accuracy(logits, batch)[i].item() == float(last.argmax() == batch.answers[i])


def test_prob_diff_counts_a_token_once(batch):
    logits = torch.zeros(2, batch.clean.shape[1], 1500)
    doubled = batch.to("cpu")
    doubled.answer_ids = torch.stack([batch.answer_ids[:, 0]] * 2, dim=1)
    single = prob_diff(logits, batch) + 0
    assert torch.allclose(prob_diff(logits, doubled), single)


def test_kl(model, batch):
    logits = model(batch.clean, attention_mask=batch.mask)
    assert torch.allclose(kl(logits, batch, logits), torch.zeros(2), atol=1e-6)
    assert (kl(logits * 0.5, batch, logits) > 0).all()


def test_faithfulness_orders():
    circuit, full, empty = np.array([1.0, 3.0]), np.array([2.0, 4.0]), np.array([0.0, 2.0])
    assert faithfulness(circuit, full, empty) == pytest.approx((2 - 1) / (3 - 1))
    assert per_prompt_faithfulness(circuit, full, empty).tolist() == [0.5, 0.5]
    assert faithfulness(circuit, full, empty, "per_prompt") == pytest.approx(0.5)
    skewed = np.array([1.0, 3.9])
    assert faithfulness(skewed, full, empty) != faithfulness(skewed, full, empty, "per_prompt")
    with pytest.raises(ValueError, match="order"):
        faithfulness(circuit, full, empty, "ratio_of_sums")


def test_bootstrap():
    rng = np.random.default_rng(0)
    small, large = rng.normal(1, 1, 20), rng.normal(1, 1, 2000)
    a, b = bootstrap(small, seed=1), bootstrap(small, seed=1)
    assert a == b and a.ci_low < a.mean < a.ci_high
    wide, narrow = a.ci_high - a.ci_low, bootstrap(large).ci_high - bootstrap(large).ci_low
    assert narrow < wide / 4
    assert bootstrap(torch.ones(5)).ci_low == 1.0


def test_full_answer_scoring_is_teacher_forced(model, batch):
    scores = answer_logprobs(model, batch, "wrong")
    i, j = 1, 1
    prompt = batch.clean[i, : batch.lengths[i]].tolist()
    answer = batch.wrong_tokens[i][j]
    logp = model(torch.tensor([prompt + answer]))[0].log_softmax(-1)
    expected = sum(logp[len(prompt) - 1 + k, t].item() for k, t in enumerate(answer))
    assert scores[i][j] == pytest.approx(expected, rel=1e-5)


def test_plain_metric_functions_match_their_definitions():
    from modelweave.metrics.functional import (
        kl_divergence,
        normalizable,
        normalize,
        top1_accuracy,
    )

    ref, run = torch.randn(3, 7), torch.randn(2, 3, 7)
    p, q = ref.softmax(-1), run.softmax(-1)
    want = (p * (p.log() - q.log())).sum(-1)
    assert torch.allclose(kl_divergence(ref, run), want, atol=1e-6)  # [3] against [2, 3]
    assert torch.allclose(kl_divergence(ref, ref), torch.zeros(3), atol=1e-6)
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    assert top1_accuracy(logits, torch.tensor([1, 2])).tolist() == [1.0, 0.0]
    assert top1_accuracy(logits, torch.tensor([[2, 1], [2, -1]])).tolist() == [1.0, 0.0]
    assert normalize(torch.tensor([1.0, 3.0]), 3.0, 1.0).tolist() == [0.0, 1.0]
    assert normalize(2.0, 3.0, 1.0) == 0.5
    assert normalizable(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.0])).tolist() == [False,
                                                                                          True]
