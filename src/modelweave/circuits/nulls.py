"""The matched null of a circuit: random circuits of the same shape, and their faithfulness.

An edge's *stratum* is (sender type, sender layer, receiver type, receiver layer), built on
:func:`modelweave.metrics.nulls.stratum`: ``a3.h1 -> a5.h0<k>`` is ``("head", 3, "head<k>",
5)``, ``input -> m2`` is ``("input", -1, "mlp", 2)``, ``m4 -> logits`` is ``("mlp", 4,
"logits", n_layers)``. A null circuit has exactly the circuit's number of edges in every
stratum, drawn uniformly from the graph's edges of that stratum (by default the circuit's own
edges may be drawn too: many strata, such as ``m{last} -> logits``, have a single edge).

A null circuit is run with exactly its edges (not pruned: pruning would cut most random edge
sets down to nothing, a null no circuit could fail to beat); the circuit itself is already
pruned, so it runs the same way. Each draw costs one circuit evaluation (the faithfulness
curve's passes, once).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from ..metrics.functional import normalize
from ..metrics.nulls import NullComparison, NullError, compare, stratum
from .evaluation import CircuitEvaluator
from .graph import Graph

#: default number of null circuits of :func:`~.discovery.discover`
NULL_DRAWS = 20

Stratum = tuple[str, int, str, int]


def _node_stratum(name: str, n_layers: int) -> tuple[str, int]:
    if name == "input":
        return "input", -1
    if name == "logits":
        return "logits", n_layers
    kind, layer = stratum(name)
    if kind == "head" and name.endswith(">"):
        kind = f"head<{name[-2]}>"  # which input of the head the edge feeds
    return kind, layer


def edge_stratum(graph: Graph, sender: int, receiver: int) -> Stratum:
    """(sender type, sender layer, receiver type, receiver layer) of edge ``sender ->
    receiver`` (indices of ``graph``)."""
    return (*_node_stratum(graph.sender_names[sender], graph.n_layers),
            *_node_stratum(graph.receiver_names[receiver], graph.n_layers))


def _strata(graph: Graph) -> dict[Stratum, list[int]]:
    """stratum -> flat indices (``s * n_receivers + r``) of the graph's edges in it."""
    out: dict[Stratum, list[int]] = defaultdict(list)
    for s, r in torch.nonzero(graph.real_edges).tolist():
        out[edge_stratum(graph, s, r)].append(s * graph.n_receivers + r)
    return out


def strata_counts(graph: Graph, in_graph: torch.Tensor) -> dict[Stratum, int]:
    """How many edges of ``in_graph`` ([S, R] bool) fall in each stratum."""
    counts: dict[Stratum, int] = defaultdict(int)
    for s, r in torch.nonzero(in_graph & graph.real_edges).tolist():
        counts[edge_stratum(graph, s, r)] += 1
    return dict(counts)


def matched_edge_draws(graph: Graph, in_graph: torch.Tensor, n_draws: int, seed: int = 0, *,
                       exclude: bool = False) -> list[torch.Tensor]:
    """``n_draws`` random edge sets ([S, R] bool each) with ``in_graph``'s count per stratum.

    ``exclude``: never draw one of the circuit's own edges.

    Raises:
        NullError: ``n_draws`` < 1, an empty circuit, or a stratum with fewer candidate edges
            than the circuit has in it (the message names the stratum).
    """
    if n_draws < 1:
        raise NullError(f"a null needs at least one draw, got {n_draws}")
    chosen = in_graph & graph.real_edges
    counts = strata_counts(graph, chosen)
    if not counts:
        raise NullError("cannot match a null to an empty circuit")
    pool = _strata(graph)
    taken = set((torch.nonzero(chosen.flatten())[:, 0]).tolist()) if exclude else set()
    candidates = {}
    for key in sorted(counts):
        members = [i for i in pool[key] if i not in taken]
        if len(members) < counts[key]:
            s_kind, s_layer, r_kind, r_layer = key
            raise NullError(
                f"cannot draw {counts[key]} random edge(s) {s_kind} of layer {s_layer} -> "
                f"{r_kind} of layer {r_layer} matched to the circuit: the graph has "
                f"{len(members)} such edge(s)"
                + (" besides the circuit's own (exclude=True)" if exclude else ""))
        candidates[key] = np.array(members)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_draws):
        mask = torch.zeros(graph.n_senders * graph.n_receivers, dtype=torch.bool)
        for key, members in candidates.items():
            mask[torch.from_numpy(rng.choice(members, size=counts[key], replace=False))] = True
        draws.append(mask.view_as(graph.real_edges))
    return draws


def circuit_null(evaluator: CircuitEvaluator, in_graph: torch.Tensor, n_draws: int = NULL_DRAWS,
                 seed: int = 0, *, exclude: bool = False) -> NullComparison:
    """The circuit's faithfulness against ``n_draws`` stratum-matched random circuits
    (module docstring), as :func:`modelweave.metrics.nulls.compare` (one-sided: is the
    circuit more faithful than chance?)."""
    draws = matched_edge_draws(evaluator.graph, in_graph, n_draws, seed, exclude=exclude)
    observed = evaluator.faithfulness(in_graph)
    values = [normalize(float(evaluator.score(d, pruned=False)[0]), evaluator.full,
                        evaluator.empty) for d in draws]
    return compare(observed, values, null=(
        f"{n_draws} random circuits with the circuit's edge count per (sender type, layer, "
        "receiver type, layer), run unpruned"))
