"""A circuit: edge scores over a model's graph, the chosen edges, and how it was found.

Edge selection follows MIB: take the top ``n`` edges by score (signed, or by absolute value),
then *prune*: repeatedly drop nodes that have no incoming or no outgoing edge (``input`` needs
no incoming edge, ``logits`` is always kept) and every edge touching a dropped node.

A circuit saves to one JSON file (:meth:`Circuit.save`) and converts to and from the MIB
circuit-submission format (:mod:`.mib`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..io import read_json, write_json
from .graph import CircuitError, Graph

FORMAT = "modelweave.circuit/1"


def prune(graph: Graph, in_graph: torch.Tensor) -> torch.Tensor:
    """[N, R] bool edges -> the same minus edges of nodes without an input or an output path."""
    node_of = graph.receiver_to_sender()  # [R], -1 for logits
    is_logits = node_of < 0
    in_graph = in_graph & graph.real_edges
    while True:
        has_out = in_graph.any(dim=1)
        has_in = torch.zeros(graph.n_senders, dtype=torch.bool)
        fed = in_graph.any(dim=0) & ~is_logits
        has_in[node_of[fed]] = True
        has_in[0] = True
        alive = has_out & has_in
        receiver_alive = is_logits | alive[node_of.clamp(min=0)]
        new = in_graph & alive[:, None] & receiver_alive[None, :]
        if torch.equal(new, in_graph):
            return new
        in_graph = new


def top_edges(graph: Graph, scores: torch.Tensor, n: int, absolute: bool = True) -> torch.Tensor:
    """[N, R] bool: the ``n`` best-scoring real edges (ties broken by index), before pruning."""
    values = scores.abs() if absolute else scores.clone()
    values = values.masked_fill(~graph.real_edges, float("-inf")).flatten()
    order = torch.argsort(values, descending=True, stable=True)[: max(0, n)]
    chosen = torch.zeros(values.numel(), dtype=torch.bool)
    chosen[order] = True
    return chosen.view_as(scores)


@dataclass
class Circuit:
    """Edge scores and a chosen edge set over a :class:`Graph`.

    Attributes:
        graph: the model's graph.
        scores: [n_senders, n_receivers] float; ``scores[s, r]`` estimates how much the metric
            drops when edge ``s -> r`` carries the corrupted value (positive: the edge carries
            the clean behaviour); 0 where there is no edge.
        in_graph: [n_senders, n_receivers] bool, the circuit's edges (after pruning).
        model, task, method: what it was found on and how; ``params``: the method's settings.
        curve: the faithfulness curve, when evaluated (see :mod:`.evaluation`).
    """

    graph: Graph
    scores: torch.Tensor
    in_graph: torch.Tensor
    model: str = ""
    task: str = ""
    method: str = ""
    params: dict = field(default_factory=dict)
    curve: dict | None = None
    #: [U, n_senders, n_receivers] summed scores of each resampling unit of prompts, when the
    #: method kept them (EAP, EAP-IG with ``per_prompt=True``); not saved
    unit_scores: torch.Tensor | None = field(default=None, repr=False, compare=False)

    # selection ---------------------------------------------------------------------------
    def top(self, n: int, absolute: bool = True) -> Circuit:
        """The circuit of the ``n`` best edges, pruned (MIB's ``apply_topn``)."""
        return replace(self, in_graph=prune(self.graph, top_edges(self.graph, self.scores, n,
                                                                  absolute)))

    def top_fraction(self, fraction: float, absolute: bool = True) -> Circuit:
        """The circuit of the best ``int(fraction * n_edges_total)`` edges, pruned."""
        return self.top(int(fraction * self.graph.n_edges), absolute)

    @property
    def n_edges(self) -> int:
        return int(self.in_graph.sum())

    @property
    def nodes(self) -> list[str]:
        """Nodes with at least one circuit edge, in graph order."""
        senders = self.in_graph.any(dim=1)
        receivers = self.in_graph.any(dim=0)
        names = {self.graph.receiver_nodes[r] for r in torch.nonzero(receivers).flatten()}
        names |= {self.graph.sender_names[s] for s in torch.nonzero(senders).flatten()}
        return [n for n in self.graph.node_names if n in names]

    def edges(self, all_edges: bool = False) -> list[tuple[str, float]]:
        """(edge name, score) of the circuit's edges (or every edge), best score first."""
        mask = self.graph.real_edges if all_edges else self.in_graph
        idx = torch.nonzero(mask)
        values = self.scores[mask]
        order = torch.argsort(values.abs(), descending=True, stable=True)
        return [(self.graph.edge_name(int(idx[i, 0]), int(idx[i, 1])), float(values[i]))
                for i in order]

    def node_scores(self) -> dict[str, float]:
        """Per node, the summed absolute score of its incoming and outgoing edges."""
        s = self.scores.abs() * self.graph.real_edges
        out = s.sum(dim=1)
        totals = {name: float(out[i]) for i, name in enumerate(self.graph.sender_names)}
        totals["logits"] = 0.0
        incoming = s.sum(dim=0)
        for r, node in enumerate(self.graph.receiver_nodes):
            totals[node] += float(incoming[r])
        return totals

    # files -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready form; edges are listed by name with their score and membership."""
        real = torch.nonzero(self.graph.real_edges)
        edges = {self.graph.edge_name(int(s), int(r)): {
            "score": float(self.scores[s, r]), "in_graph": bool(self.in_graph[s, r])}
            for s, r in real}
        return {"format": FORMAT, "model": self.model, "task": self.task, "method": self.method,
                "params": self.params, "graph": self.graph.to_dict(),
                "n_edges": self.n_edges, "n_edges_total": self.graph.n_edges,
                "nodes": self.nodes, "curve": self.curve, "edges": edges}

    @classmethod
    def from_dict(cls, data: dict, source: str = "circuit") -> Circuit:
        if data.get("format") != FORMAT:
            raise CircuitError(f"{source}: not a ModelWeave circuit (format "
                               f"{data.get('format')!r}, expected {FORMAT!r}); for MIB files use "
                               "Circuit.from_mib")
        g = data["graph"]
        graph = Graph(int(g["n_layers"]), int(g["n_heads"]), bool(g["parallel_attn_mlp"]))
        scores, in_graph = _fill(graph, data["edges"], source)
        return cls(graph, scores, in_graph, data.get("model", ""), data.get("task", ""),
                   data.get("method", ""), data.get("params", {}), data.get("curve"))

    def save(self, path: str | Path) -> Path:
        """Write the circuit as JSON (atomically)."""
        return write_json(path, self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: str | Path) -> Circuit:
        """Read a circuit saved by :meth:`save`; a clear error for anything else."""
        path = Path(path)
        return cls.from_dict(read_json(path, error=CircuitError), str(path))

    def check_model(self, graph: Graph, name: str = "") -> None:
        """Raise unless this circuit's graph is ``graph`` (same layers, heads, residual)."""
        if graph != self.graph:
            raise CircuitError(
                f"circuit was found on {self.model or 'a model'} with graph {self.graph.to_dict()}"
                f"; {name or 'this model'} has {graph.to_dict()}")


def _fill(graph: Graph, edges: dict, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge dict ``{name: {"score", "in_graph"}}`` -> (scores, in_graph) matrices."""
    scores = torch.zeros(graph.n_senders, graph.n_receivers)
    in_graph = torch.zeros_like(scores, dtype=torch.bool)
    for name, entry in edges.items():
        try:
            s, r = graph.parse_edge(name)
        except CircuitError as err:
            raise CircuitError(f"{source}: {err}") from err
        scores[s, r] = float(entry.get("score") or 0.0)
        in_graph[s, r] = bool(entry.get("in_graph", False))
    return scores, in_graph
