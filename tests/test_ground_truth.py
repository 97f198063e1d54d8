"""Circuit methods recover a circuit planted by construction (see ``planted.py``).

To score another method, add one entry to :data:`METHODS`: a name -> ``fn(model, batch)``
returning a :class:`~modelweave.circuits.Circuit` whose ``scores`` rank the edges.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from modelweave import Model
from modelweave.circuits import (
    Circuit,
    CircuitEvaluator,
    Graph,
    acdc,
    edge_attribution,
    exact_edge_scores,
    path_search,
    prune_nodes,
)
from modelweave.tasks.batch import TaskBatch
from planted import planted_model

METHODS: dict[str, Callable[[Model, TaskBatch], Circuit]] = {
    "eap": lambda model, batch: edge_attribution(model, batch, method="eap",
                                                 metric="logit_diff"),
    "eap-ig": lambda model, batch: edge_attribution(model, batch, method="eap-ig",
                                                    metric="logit_diff"),
    "exact": lambda model, batch: exact_edge_scores(model, batch, group=16),
    "acdc": lambda model, batch: acdc(model, batch, threshold=0.01, metric="kl"),
    "prune": lambda model, batch: prune_nodes(model, batch, threshold=0.8),
    "path": lambda model, batch: path_search(model, batch, threshold=0.02),
}
MIN_AUC = 0.96  # what the README claims (node pruning, the lowest, measures 0.9655)
#: Families with structure Llama lacks (post-norms and joint q/k norms; per-head q/k norms with
#: GQA; sliding-window and global layers), each with the circuit planted (see ``planted.py``).
FAMILIES = ("olmo2", "cohere_qk_norm", "cohere2")
#: Edge methods must rank the planted edges first in every family. Node pruning is left out
#: there: under GQA the circuit has two heads per layer, and pruning (a search for a small
#: circuit, not a ranking) drops one of a redundant pair with a small score (AUC ~0.7).
FAMILY_METHODS = [m for m in METHODS if m != "prune"]
MIN_FAMILY_AUC = 0.95


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC of ``scores`` [n] against bool ``labels`` [n] (Mann-Whitney, ties count 1/2)."""
    scores = scores.double()
    order = torch.argsort(scores, stable=True)
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.double)
    values, groups = torch.unique(scores, return_inverse=True)  # average the ranks of ties
    mean_rank = torch.zeros(len(values), dtype=torch.double).index_add_(0, groups, ranks)
    mean_rank /= torch.bincount(groups, minlength=len(values)).double()
    ranks = mean_rank[groups]
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_roc_auc_helper():
    labels = torch.tensor([True, True, False, False])
    assert roc_auc(torch.tensor([4.0, 3.0, 2.0, 1.0]), labels) == 1.0
    assert roc_auc(torch.tensor([1.0, 2.0, 3.0, 4.0]), labels) == 0.0
    assert roc_auc(torch.tensor([1.0, 1.0, 1.0, 1.0]), labels) == 0.5
    assert roc_auc(torch.tensor([3.0, 1.0, 2.0, 0.0]), labels) == 0.75
    assert roc_auc(torch.tensor([2.0, 1.0, 1.0, 0.0]), labels) == 0.875


@pytest.fixture(scope="module")
def planted():
    return planted_model(seed=0)


@pytest.mark.parametrize("method", list(METHODS))
def test_method_ranks_planted_edges_first(planted, method):
    model, batch, truth = planted
    circuit = METHODS[method](model, batch)
    real = circuit.graph.real_edges
    auc = roc_auc(circuit.scores.abs()[real], truth[real])
    print(f"{method}: AUC {auc:.4f}")
    assert auc >= MIN_AUC, f"{method}: AUC {auc:.3f} < {MIN_AUC}"


@pytest.fixture(scope="module", params=FAMILIES)
def planted_family(request):
    return planted_model(seed=0, family=request.param)


def test_planted_edges_rank_first_in_every_family(planted_family):
    model, batch, truth = planted_family
    real = Graph.from_config(model.cfg).real_edges
    for method in FAMILY_METHODS:
        circuit = METHODS[method](model, batch)
        auc = roc_auc(circuit.scores.abs()[real], truth[real])
        print(f"{model.name} {method}: AUC {auc:.4f}")
        assert auc >= MIN_FAMILY_AUC, f"{model.name} {method}: AUC {auc:.3f}"


def test_planted_circuit_is_faithful_in_every_family(planted_family):
    test_planted_circuit_is_faithful(planted_family)


def test_planted_circuit_is_faithful(planted):
    model, batch, truth = planted
    assert bool(batch.answers.ne(batch.wrong_ids[:, 0]).all())
    evaluator = CircuitEvaluator(model, batch, metric="logit_diff")
    assert evaluator.full - evaluator.empty > 1.0  # the corruption matters
    kept = evaluator.faithfulness(truth)
    real = evaluator.graph.real_edges
    removed = evaluator.faithfulness(real & ~truth)  # everything but the planted edges
    print(f"faithfulness: planted {kept:.4f}, complement {removed:.4f}")
    assert kept >= 0.9
    assert abs(removed) <= 0.1


@pytest.mark.parametrize("method", list(METHODS))
def test_same_seed_same_scores(method):
    first, second = planted_model(seed=0), planted_model(seed=0)
    assert torch.equal(first[1].clean, second[1].clean)
    assert torch.equal(first[2], second[2])
    a, b = (METHODS[method](model, batch).scores for model, batch, _ in (first, second))
    assert torch.equal(a, b)
