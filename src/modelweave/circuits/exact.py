"""Exact edge patching and path patching: one real run per edge set, no approximation.

- :func:`exact_edge_scores`: for every edge ``e``, ``m(model) - m(model with e corrupted)``,
  the quantity EAP and EAP-IG estimate. Several edges run per pass as groups of one batch.
  It costs one batch pass per edge, so it is for small graphs and for checking other methods.
- :func:`path_patching`: corrupt the direct edges from a set of senders to a set of receivers
  (Wang et al. 2022, with every other path left clean) and report the metric change.
- :func:`path_search`: path patching as a discovery method: starting from ``logits``, keep
  every sender whose direct edge into a node already in the circuit changes the metric by at
  least ``threshold`` (as a fraction of ``m(model) - m(empty)``), then search the new nodes'
  inputs, in reverse topological order.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..models import Model
from ..progress import Progress, Steps
from ..tasks import TaskBatch
from .circuit import Circuit, prune
from .evaluation import CircuitEvaluator
from .graph import CircuitError, Graph


def _check_size(n_passes: int, limit: int, method: str) -> None:
    if n_passes > limit:
        raise CircuitError(
            f"{method} would run {n_passes} batch passes (one per edge); the limit is {limit}. "
            "Score the full graph with eap-ig, or raise the limit (max_edges) knowingly.")


def _edge_effects(ev: CircuitEvaluator, base: torch.Tensor, edges: list[tuple[int, int]],
                  group: int, steps: Steps) -> torch.Tensor:
    """[len(edges)] metric of ``base`` minus the metric with each edge set removed from it."""
    reference = float(ev.score(base, pruned=False)[0])
    out = torch.zeros(len(edges))
    for i in range(0, len(edges), group):
        part = edges[i: i + group]
        stack = base.expand(len(part), *base.shape).clone()
        for g, (s, r) in enumerate(part):
            stack[g, s, r] = False
        out[i: i + len(part)] = reference - ev.score(stack, pruned=False)
        steps.advance(len(part))
    return out


def exact_edge_scores(model: Model, batch: TaskBatch, *, metric: str = "logit_diff",
                      intervention: str = "patching", group: int = 8, batch_size: int = 16,
                      max_edges: int = 5000, progress: Progress = None) -> Circuit:
    """Score every edge by the exact metric drop when it alone is corrupted.

    Args:
        group: edges evaluated per pass (the batch runs ``group`` times in one forward).
        max_edges: refuse graphs with more edges (one pass per edge).
        progress: phase ``"score"`` (edges scored of all real edges).

    Returns:
        a :class:`Circuit` with ``scores`` set and no edges chosen yet.
    """
    ev = CircuitEvaluator(model, batch, metric, intervention, batch_size)
    graph = ev.graph
    _check_size(graph.n_edges, max_edges, "exact edge patching")
    edges = [tuple(e) for e in torch.nonzero(graph.real_edges).tolist()]
    effects = _edge_effects(ev, graph.real_edges, edges, group,
                            Steps(progress, "score", len(edges)))
    scores = torch.zeros(graph.n_senders, graph.n_receivers)
    for (s, r), value in zip(edges, effects.tolist(), strict=True):
        scores[s, r] = value
    return Circuit(graph, scores, torch.zeros_like(graph.real_edges), model=model.name,
                   task=batch.task, method="exact",
                   params={"metric": metric, "intervention": intervention,
                           "n_prompts": len(batch)})


def _receivers(graph: Graph, names: Iterable[str]) -> list[int]:
    """Receiver indices of node names (``a3.h1`` = its q, k and v) or receiver names."""
    out = []
    for name in names:
        found = [i for i, (r, node) in enumerate(zip(graph.receiver_names, graph.receiver_nodes,
                                                     strict=True)) if name in (r, node)]
        if not found:
            raise CircuitError(f"{name!r} is not a receiver of this graph (e.g. a0.h1, "
                               "a0.h1<q>, m2, logits)")
        out += found
    return out


def path_patching(model: Model, batch: TaskBatch, senders: list[str], receivers: list[str], *,
                  metric: str = "logit_diff", intervention: str = "patching",
                  evaluator: CircuitEvaluator | None = None) -> float:
    """Normalised metric change when only the direct edges ``senders -> receivers`` carry the
    senders' corrupted outputs: ``(m(path) - m(model)) / (m(model) - m(empty))`` (-1: the
    path alone does everything the full corruption does, 0: no effect)."""
    ev = evaluator or CircuitEvaluator(model, batch, metric, intervention)
    graph = ev.graph
    index = {name: i for i, name in enumerate(graph.sender_names)}
    unknown = [s for s in senders if s not in index]
    if unknown:
        raise CircuitError(f"unknown senders {unknown}; senders look like input, a0.h1, m2")
    in_graph = graph.real_edges.clone()
    for r in _receivers(graph, receivers):
        for s in senders:
            if index[s] < graph.upstream(r):
                in_graph[index[s], r] = False
    value = float(ev.score(in_graph, pruned=False)[0])
    return (value - ev.full) / (ev.full - ev.empty)


def path_search(model: Model, batch: TaskBatch, *, threshold: float = 0.02,
                metric: str = "logit_diff", intervention: str = "patching", group: int = 8,
                batch_size: int = 16, max_edges: int = 20000,
                progress: Progress = None) -> Circuit:
    """Find a circuit by path patching backwards from the logits (see the module docstring).

    Every sender's direct edge into each receiver of a circuit node is scored exactly (with
    all other edges clean); edges changing the metric by at least ``threshold * (m(model) -
    m(empty))`` are kept and their senders join the circuit. ``progress`` phase:
    ``"score"`` (edges tested; total 0, as the search decides how many it tests).
    """
    ev = CircuitEvaluator(model, batch, metric, intervention, batch_size)
    graph = ev.graph
    scale = ev.full - ev.empty
    scores = torch.zeros(graph.n_senders, graph.n_receivers)
    in_graph = torch.zeros_like(graph.real_edges)
    active = torch.zeros(graph.n_senders + 1, dtype=torch.bool)  # last: logits
    active[-1] = True
    node_of = graph.receiver_to_sender()
    tested, steps = 0, Steps(progress, "score")
    for r in reversed(range(graph.n_receivers)):
        if not active[node_of[r]]:
            continue
        edges = [(s, r) for s in range(graph.upstream(r))]
        tested += len(edges)
        _check_size(tested, max_edges, "path search")
        effects = _edge_effects(ev, graph.real_edges, edges, group, steps) / scale
        for (s, _), value in zip(edges, effects.tolist(), strict=True):
            scores[s, r] = value
            if abs(value) >= threshold:
                in_graph[s, r] = True
                active[s] = True
    return Circuit(graph, scores, prune(graph, in_graph), model=model.name, task=batch.task,
                   method="path", params={"metric": metric, "threshold": threshold,
                                          "intervention": intervention,
                                          "n_prompts": len(batch)})
