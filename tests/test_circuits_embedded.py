"""Circuit discovery on the embedded model (trained weights)."""

import pytest
import torch

from modelweave.circuits import CircuitEvaluator, discover, edge_attribution, path_patching
from modelweave.tasks import make_batch

# its own group: the embedded model loads once more, on whichever worker is free, so the
# circuit tests need not queue behind the other embedded-model tests on one worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smollm_circuits")]


def test_eap_ig_finds_a_small_faithful_ioi_circuit(smollm):
    batch = make_batch(smollm, "ioi", n=8, seed=0, same_length=True)
    # intervals, stability and the matched null have their own tests (tiny models, planted)
    found = discover(smollm, batch, "eap-ig", target=0.8, resamples=0, null_draws=0)
    circuit = found.circuit
    assert found.reached and found.faithfulness >= 0.8
    assert circuit.n_edges < 0.1 * circuit.graph.n_edges  # a circuit, not the model
    assert circuit.graph.n_edges == 123211 and "logits" in circuit.nodes
    curve = circuit.curve
    assert curve["full"] > curve["empty"] and 0 < curve["cmd"] < 1
    # the signed top-1% circuit already recovers most of the logit difference
    assert curve["faithfulness_signed"][curve["percentages"].index(0.01)] > 0.5


def test_path_patching_of_every_direct_edge_into_logits_is_the_corrupted_run(smollm):
    batch = make_batch(smollm, "ioi", n=4, seed=1, same_length=True)
    ev = CircuitEvaluator(smollm, batch)
    assert path_patching(smollm, batch, ev.graph.sender_names, ["logits"], evaluator=ev) \
        == pytest.approx(-1.0, abs=1e-3)


def test_eap_scores_are_deterministic_and_batch_size_free(smollm):
    batch = make_batch(smollm, "seq_digits", n=6, seed=0)
    one = edge_attribution(smollm, batch, method="eap", batch_size=6)
    two = edge_attribution(smollm, batch, method="eap", batch_size=4)
    assert torch.allclose(one.scores, two.scores, atol=1e-4 * one.scores.abs().max())
