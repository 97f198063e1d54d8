"""ACDC (Conmy et al. 2023): greedy edge removal in reverse topological order.

Start from the full graph. Visit receivers from the logits down to the first layer; for each,
try to corrupt its incoming edges one at a time (latest sender first). The removal is kept when
the circuit's distance from the model grows by less than ``threshold``:

- ``metric="kl"``: distance = KL(model || circuit) at the prediction, averaged over prompts;
- a task metric: distance = |m(circuit) - m(model)|.

A node whose outgoing edges have all been removed no longer matters: its incoming edges are
removed without a test. Each test is one batch pass, so ACDC suits graphs of up to a few
thousand edges on a CPU. An edge's score is the distance increase measured when it was tested.
"""

from __future__ import annotations

import torch

from ..models import Model
from ..progress import Progress, Steps
from ..tasks import TaskBatch
from .circuit import Circuit, prune
from .evaluation import CircuitEvaluator
from .exact import _check_size


def acdc(model: Model, batch: TaskBatch, *, threshold: float = 0.01, metric: str = "kl",
         intervention: str = "patching", batch_size: int = 16, max_edges: int = 5000,
         progress: Progress = None) -> Circuit:
    """Run ACDC and return its circuit (``in_graph``: the edges it kept, pruned).

    Args:
        threshold: tau; a removal is kept if the distance grows by less than this.
        metric: ``"kl"`` or a task metric (see the module docstring).
        max_edges: refuse graphs with more edges (one pass per edge tested).
        progress: phase ``"score"``: edges decided of all edges (those into a node
            that already feeds nothing are decided at once).
    """
    ev = CircuitEvaluator(model, batch, metric, intervention, batch_size)
    graph = ev.graph
    _check_size(graph.n_edges, max_edges, "ACDC")

    def distance(in_graph: torch.Tensor) -> float:
        value = float(ev.score(in_graph, pruned=False)[0])
        return -value if metric == "kl" else abs(value - ev.full)

    current = graph.real_edges.clone()
    scores = torch.zeros(graph.n_senders, graph.n_receivers)
    now = distance(current)
    node_of = graph.receiver_to_sender()
    steps = Steps(progress, "score", sum(graph.upstream(r) for r in range(graph.n_receivers)))
    for r in reversed(range(graph.n_receivers)):
        node = int(node_of[r])
        if node >= 0 and not current[node].any():  # the node feeds nothing any more
            current[:, r] = False
            steps.advance(graph.upstream(r))
            continue
        for s in reversed(range(graph.upstream(r))):
            trial = current.clone()
            trial[s, r] = False
            after = distance(trial)
            scores[s, r] = after - now
            if after - now < threshold:
                current, now = trial, after
            steps.advance()
    return Circuit(graph, scores, prune(graph, current), model=model.name, task=batch.task,
                   method="acdc", params={"threshold": threshold, "metric": metric,
                                          "intervention": intervention,
                                          "n_prompts": len(batch)})
