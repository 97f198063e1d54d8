"""Circuit discovery and verification over the EAP-IG / MIB edge graph.

- :mod:`.graph`: senders, receivers and edges of a model; :mod:`.wiring` / :mod:`.runs`: runs in
  which every receiver reads its own input.
- Scoring methods: :func:`edge_attribution` (EAP, EAP-IG), :func:`exact_edge_scores`,
  :func:`acdc`, :func:`prune_nodes` (iterative node pruning), :func:`path_patching`.
- :class:`Circuit` (JSON, MIB format), :class:`CircuitEvaluator`, :func:`faithfulness_curve`
  (CPR, CMD), :func:`minimal_circuit`.
- Uncertainty (:mod:`.uncertainty`): bootstrap intervals of faithfulness, CPR, CMD, the curve
  as a band, within-seed edge stability; the matched null (:mod:`.nulls`): random circuits
  with the circuit's edge count per (sender type, layer, receiver type, layer).
"""

from .acdc import acdc
from .circuit import Circuit, prune
from .discovery import METHODS, Discovery, discover
from .eap import edge_attribution
from .evaluation import (
    PERCENTAGES,
    CircuitEvaluator,
    MinimalCircuit,
    area,
    faithfulness_curve,
    minimal_circuit,
)
from .exact import exact_edge_scores, path_patching, path_search
from .graph import CircuitError, Graph
from .mib import from_mib, to_mib
from .node_pruning import prune_nodes
from .nulls import circuit_null, edge_stratum, matched_edge_draws
from .runs import patched_logits, receiver_gradients, sender_outputs
from .uncertainty import curve_uncertainty, edge_stability, faithfulness_interval

__all__ = [
    "METHODS", "PERCENTAGES", "Circuit", "CircuitError", "CircuitEvaluator", "Discovery", "Graph",
    "MinimalCircuit", "acdc", "area", "circuit_null", "curve_uncertainty", "discover",
    "edge_attribution", "edge_stability", "edge_stratum", "exact_edge_scores",
    "faithfulness_curve", "faithfulness_interval", "from_mib", "matched_edge_draws",
    "minimal_circuit", "patched_logits", "path_patching", "path_search", "prune", "prune_nodes",
    "receiver_gradients", "sender_outputs", "to_mib",
]
