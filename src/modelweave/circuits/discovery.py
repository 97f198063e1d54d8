"""One call from a model and a task batch to a checked circuit: score, evaluate, select.

Scoring methods (``eap``, ``eap-ig``, ``exact``) rank every edge; the circuit is then the
smallest top-n circuit reaching the target faithfulness. Selection methods (``acdc``,
``prune``, ``path``) choose their edges themselves; their scores still give the curve.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..models import Model
from ..names import DEFAULT_METHOD, SCORING, SELECTING
from ..names import DISCOVERY_METHODS as METHODS
from ..progress import Progress
from ..tasks import TaskBatch
from .acdc import acdc
from .circuit import Circuit
from .eap import edge_attribution
from .evaluation import CircuitEvaluator, faithfulness_curve, minimal_circuit
from .exact import exact_edge_scores, path_search
from .graph import CircuitError
from .node_pruning import prune_nodes

# SCORING (eap, eap-ig, exact), SELECTING (acdc, prune, path), METHODS (both) and
# DEFAULT_METHOD are defined in :mod:`modelweave.names`
__all__ = ["DEFAULT_METHOD", "METHODS", "SCORING", "SELECTING", "Discovery", "discover"]


@dataclass
class Discovery:
    """What :func:`discover` found.

    Attributes:
        circuit: the chosen circuit (its ``curve`` holds the faithfulness curve, CPR and CMD).
        faithfulness: the chosen circuit's faithfulness; ``target`` and whether it ``reached``.
        trials: for scoring methods, circuit size tried -> faithfulness.
        seconds: wall time per phase (``score``, ``curve``, ``select``).
    """

    circuit: Circuit
    faithfulness: float
    target: float
    reached: bool
    trials: dict[int, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-ready numbers: edges, faithfulness, CPR, CMD, target."""
        curve = self.circuit.curve or {}
        return {"method": self.circuit.method, "n_edges": self.circuit.n_edges,
                "n_edges_total": self.circuit.graph.n_edges,
                "n_nodes": len(self.circuit.nodes), "faithfulness": self.faithfulness,
                "target": self.target, "reached": self.reached, "cpr": curve.get("cpr"),
                "cmd": curve.get("cmd"), "metric": curve.get("metric"),
                "seconds": self.seconds}


def _score(model: Model, batch: TaskBatch, method: str, metric: str, steps: int,
           threshold: float | None, intervention: str, batch_size: int,
           progress: Progress) -> Circuit:
    common = dict(batch_size=batch_size, progress=progress)
    if method in ("eap", "eap-ig"):
        return edge_attribution(model, batch, method=method, steps=steps, metric=metric, **common)
    if method == "exact":
        return exact_edge_scores(model, batch, metric=metric, intervention=intervention,
                                 **common)
    if method == "acdc":
        return acdc(model, batch, threshold=0.01 if threshold is None else threshold,
                    metric=metric, intervention=intervention, **common)
    if method == "prune":
        return prune_nodes(model, batch, threshold=0.8 if threshold is None else threshold,
                           metric=metric, **common)
    return path_search(model, batch, threshold=0.02 if threshold is None else threshold,
                       metric=metric, intervention=intervention, **common)


def discover(model: Model, batch: TaskBatch, method: str = DEFAULT_METHOD, *,
             target: float = 0.9, metric: str = "logit_diff", steps: int = 5,
             threshold: float | None = None, intervention: str = "patching", batch_size: int = 16,
             progress: Progress = None) -> Discovery:
    """Find a circuit for ``batch`` with ``method`` and check it.

    Args:
        method: one of :data:`METHODS`.
        target: faithfulness the smallest circuit must reach (scoring methods).
        metric: task metric (``acdc`` uses it too; ``"kl"`` is ACDC's classic choice).
        steps: EAP-IG integration steps.
        threshold: ACDC's tau (default 0.01), pruning's kept fraction (0.8), path search's
            minimal edge effect (0.02).
        progress: phases ``"score"`` (the scoring method's own, see each) and ``"curve"``
            (the faithfulness curve).

    Returns:
        a :class:`Discovery`; ``reached=False`` when no circuit tried reaches ``target``
        (then ``circuit`` is the most faithful one tried).
    """
    if method not in METHODS:
        raise CircuitError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")
    seconds = {}
    start = time.perf_counter()
    scored = _score(model, batch, method, metric, steps, threshold, intervention, batch_size,
                    progress)
    seconds["score"] = time.perf_counter() - start
    start = time.perf_counter()
    evaluator = CircuitEvaluator(model, batch, "logit_diff" if metric == "kl" else metric,
                                 intervention, batch_size)
    curve = faithfulness_curve(scored, evaluator, progress=progress)
    seconds["curve"] = time.perf_counter() - start
    start = time.perf_counter()
    trials: dict[int, float] = {}
    if method in SCORING:
        found = minimal_circuit(scored, evaluator, target)
        chosen, value, trials = found.circuit, found.faithfulness, found.trials
    else:
        chosen, value = scored, evaluator.faithfulness(scored.in_graph)
    chosen.curve = curve
    chosen.params = {**chosen.params, "target": target}
    seconds["select"] = time.perf_counter() - start
    return Discovery(chosen, value, target, value >= target, trials, seconds)
