"""The MIB circuit-submission format (EAP-IG's ``Graph.to_json``), both ways.

A MIB file is ``{"cfg": {n_layers, n_heads, parallel_attn_mlp, d_model}, "nodes": {name:
{"in_graph": bool}}, "edges": {name: {"score": float, "in_graph": bool}}}`` with the node and
edge names of :mod:`.graph`. Scores carry over unchanged (MIB's attribute the loss
``-metric`` and are divided once more by the batch size, so they differ by a positive factor).
"""

from __future__ import annotations

import json
from pathlib import Path

from .circuit import Circuit, _fill, prune
from .graph import CircuitError, Graph


def to_mib(circuit: Circuit, d_model: int) -> dict:
    """The circuit as a MIB submission dict (every edge, with its score and membership)."""
    graph = circuit.graph
    in_nodes = set(circuit.nodes) | {"logits"}
    nodes = {name: {"in_graph": name in in_nodes} for name in graph.node_names}
    edges = circuit.to_dict()["edges"]
    return {"cfg": {**graph.to_dict(), "d_model": d_model}, "nodes": nodes, "edges": edges}


def from_mib(data: dict | str | Path, model: str = "", task: str = "") -> Circuit:
    """A :class:`Circuit` from a MIB submission (a dict or a JSON file path)."""
    source = "MIB circuit"
    if not isinstance(data, dict):
        source = str(data)
        try:
            data = json.loads(Path(data).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CircuitError(f"{source}: cannot read: {err}") from err
    missing = {"cfg", "nodes", "edges"} - set(data)
    if missing:
        raise CircuitError(f"{source}: not a MIB circuit file (missing "
                           f"{', '.join(sorted(missing))})")
    cfg = data["cfg"]
    try:
        graph = Graph(int(cfg["n_layers"]), int(cfg["n_heads"]), bool(cfg["parallel_attn_mlp"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CircuitError(f"{source}: bad cfg {cfg!r}: {err}") from err
    scores, in_graph = _fill(graph, data["edges"], source)
    return Circuit(graph, scores, prune(graph, in_graph), model=model, task=task, method="mib")
