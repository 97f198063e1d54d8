"""Iterative node pruning, as in the sequence-continuation circuit work (Lan et al. 2024).

Components are attention heads and MLPs. Ablating a component corrupts all its outgoing edges
(by default with its mean output over the corrupted prompts, per position: mean ablation).
A backward sweep (last layer to first) and then a forward sweep visit every component still
kept: it is removed for good if, with it and everything removed so far ablated, the circuit
keeps at least ``threshold`` (default 80%) of the model's performance, measured as
faithfulness ``(m(C) - m(empty)) / (m(model) - m(empty))``; otherwise it stays.

The circuit is every edge between kept components (plus ``input`` and ``logits``). A node's
score is how much performance dropped when it was tested; an edge's is the smaller score of
its two ends.
"""

from __future__ import annotations

import torch

from ..models import Model
from ..progress import Progress, Steps
from ..tasks import TaskBatch
from .circuit import Circuit, prune
from .evaluation import CircuitEvaluator


def prune_nodes(model: Model, batch: TaskBatch, *, threshold: float = 0.8,
                metric: str = "logit_diff", intervention: str = "mean", batch_size: int = 16,
                progress: Progress = None) -> Circuit:
    """Run backward-then-forward node pruning; returns the circuit of the kept nodes.

    ``progress`` phase ``"score"``: nodes visited of both sweeps (``2 * (n_senders - 1)``).
    """
    ev = CircuitEvaluator(model, batch, metric, intervention, batch_size)
    graph = ev.graph
    kept = torch.ones(graph.n_senders, dtype=torch.bool)
    drop = torch.zeros(graph.n_senders)

    def edges(nodes: torch.Tensor) -> torch.Tensor:
        return graph.real_edges & nodes[:, None]  # outgoing edges of ablated nodes are cut

    components = list(range(1, graph.n_senders))
    steps = Steps(progress, "score", 2 * len(components))
    for sweep in (reversed(components), components):
        for node in sweep:
            if not kept[node]:
                steps.advance()
                continue
            trial = kept.clone()
            trial[node] = False
            f = ev.faithfulness(edges(trial))
            drop[node] = 1.0 - f
            if f >= threshold:
                kept = trial
            steps.advance()
    node_of = graph.receiver_to_sender()
    receiver_score = torch.where(node_of >= 0, drop[node_of.clamp(min=0)], torch.inf)
    sender_score = drop.clone()
    sender_score[0] = torch.inf
    scores = torch.minimum(sender_score[:, None], receiver_score[None, :])
    scores = torch.where(graph.real_edges & scores.isfinite(), scores, 0.0)
    receiver_kept = torch.where(node_of >= 0, kept[node_of.clamp(min=0)], True)
    in_graph = graph.real_edges & kept[:, None] & receiver_kept[None, :]
    return Circuit(graph, scores, prune(graph, in_graph), model=model.name, task=batch.task,
                   method="prune", params={"threshold": threshold, "metric": metric,
                                           "intervention": intervention,
                                           "n_prompts": len(batch),
                                           "kept_nodes": int(kept[1:].sum())})
