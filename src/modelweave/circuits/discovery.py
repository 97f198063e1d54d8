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
from .nulls import NULL_DRAWS, circuit_null
from .uncertainty import (
    STABILITY_RESAMPLES,
    ResamplingError,
    curve_uncertainty,
    edge_stability,
    faithfulness_interval,
)

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
        seconds: wall time per phase (``score``, ``curve``, ``select``, ``uncertainty``,
            ``null``).
        uncertainty: bootstrap intervals over prompts (``faithfulness``, ``cpr``, ``cmd``:
            :class:`~modelweave.metrics.stats.Aggregate` dicts; the curve's bands are in
            ``circuit.curve``), ``stability`` (:func:`~.uncertainty.edge_stability`, scoring
            methods with per-prompt scores) and ``null`` (:func:`~.nulls.circuit_null`).
    """

    circuit: Circuit
    faithfulness: float
    target: float
    reached: bool
    trials: dict[int, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    uncertainty: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-ready numbers: edges, faithfulness, CPR, CMD, target; with their 95%
        intervals over prompts (``faithfulness_ci``, ``cpr_ci``, ``cmd_ci``: [low, high]),
        the edge stability (``stable_core_size``, ``jaccard_ci``: the Jaccard of resampled
        circuits to this one, its mean as ``jaccard``) and the matched null
        (``faithfulness_null``) when computed (else None)."""
        curve = self.circuit.curve or {}
        u = self.uncertainty

        def ci(name: str) -> list[float] | None:
            agg = u.get(name)
            return None if agg is None else [agg["ci_low"], agg["ci_high"]]

        stab = u.get("stability") or {}
        overlap = stab.get("jaccard_full")
        return {"method": self.circuit.method, "n_edges": self.circuit.n_edges,
                "n_edges_total": self.circuit.graph.n_edges,
                "n_nodes": len(self.circuit.nodes), "faithfulness": self.faithfulness,
                "faithfulness_ci": ci("faithfulness"), "target": self.target,
                "reached": self.reached, "cpr": curve.get("cpr"), "cpr_ci": ci("cpr"),
                "cmd": curve.get("cmd"), "cmd_ci": ci("cmd"), "metric": curve.get("metric"),
                "faithfulness_null": u.get("null"), "stable_core_size": stab.get("core_size"),
                "jaccard": None if overlap is None else overlap["mean"],
                "jaccard_ci": None if overlap is None else [overlap["ci_low"],
                                                            overlap["ci_high"]],
                "seconds": self.seconds}


def _score(model: Model, batch: TaskBatch, method: str, metric: str, steps: int,
           threshold: float | None, intervention: str, batch_size: int,
           progress: Progress, per_prompt: bool = False) -> Circuit:
    common = dict(batch_size=batch_size, progress=progress)
    if method in ("eap", "eap-ig"):
        return edge_attribution(model, batch, method=method, steps=steps, metric=metric,
                                per_prompt=per_prompt, **common)
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
             resamples: int = STABILITY_RESAMPLES, null_draws: int = NULL_DRAWS,
             progress: Progress = None) -> Discovery:
    """Find a circuit for ``batch`` with ``method`` and check it.

    Args:
        method: one of :data:`METHODS`.
        target: faithfulness the smallest circuit must reach (scoring methods).
        metric: task metric (``acdc`` uses it too; ``"kl"`` is ACDC's classic choice).
        steps: EAP-IG integration steps.
        threshold: ACDC's tau (default 0.01), pruning's kept fraction (0.8), path search's
            minimal edge effect (0.02).
        resamples: prompt resamples of the edge stability (EAP, EAP-IG; 0: none). Intervals
            of faithfulness, CPR, CMD and the curve's bands are always computed (1000
            resamples of the per-prompt values the curve already has: no extra pass).
        null_draws: stratum-matched random circuits for ``faithfulness_null`` (0: none);
            each costs one circuit evaluation (a curve has 20).
        progress: phases ``"score"`` (the scoring method's own, see each) and ``"curve"``
            (the faithfulness curve).

    Returns:
        a :class:`Discovery`; ``reached=False`` when no circuit tried reaches ``target``
        (then ``circuit`` is the most faithful one tried).
    """
    if method not in METHODS:
        raise CircuitError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")
    for name, value in (("resamples", resamples), ("null_draws", null_draws)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CircuitError(f"{name} must be a non-negative integer (0: off), got {value!r}")
    seconds = {}
    start = time.perf_counter()
    per_prompt = resamples > 0 and method in ("eap", "eap-ig")
    scored = _score(model, batch, method, metric, steps, threshold, intervention, batch_size,
                    progress, per_prompt)
    seconds["score"] = time.perf_counter() - start
    start = time.perf_counter()
    evaluator = CircuitEvaluator(model, batch, "logit_diff" if metric == "kl" else metric,
                                 intervention, batch_size)
    curve = faithfulness_curve(scored, evaluator, progress=progress)
    seconds["curve"] = time.perf_counter() - start
    start = time.perf_counter()
    trials: dict[int, float] = {}
    size = None
    if method in SCORING:
        found = minimal_circuit(scored, evaluator, target)
        chosen, value, trials, size = found.circuit, found.faithfulness, found.trials, found.size
    else:
        chosen, value = scored, evaluator.faithfulness(scored.in_graph)
    seconds["select"] = time.perf_counter() - start
    start = time.perf_counter()
    uncertainty = _uncertainty(scored, chosen, evaluator, size if per_prompt else None,
                               resamples)
    curve.update({k: uncertainty.pop(k) for k in ("band_signed", "band_abs")})
    curve.update(cpr_ci=uncertainty["cpr"], cmd_ci=uncertainty["cmd"])
    seconds["uncertainty"] = time.perf_counter() - start
    if null_draws and not chosen.n_edges:
        uncertainty["null_note"] = "no null for an empty circuit"
    elif null_draws:
        start = time.perf_counter()
        uncertainty["null"] = circuit_null(evaluator, chosen.in_graph, null_draws).to_dict()
        curve["null"] = {**uncertainty["null"], "n_edges": chosen.n_edges,
                         "percentage": chosen.n_edges / chosen.graph.n_edges}
        seconds["null"] = time.perf_counter() - start
    chosen.curve = curve
    chosen.params = {**chosen.params, "target": target}
    return Discovery(chosen, value, target, value >= target, trials, seconds, uncertainty)


def _uncertainty(scored: Circuit, chosen: Circuit, evaluator: CircuitEvaluator,
                 size: int | None, resamples: int) -> dict:
    """Intervals of faithfulness, CPR, CMD, the curve's bands and (``size`` given) the
    edge stability; from values already computed."""
    out = curve_uncertainty(scored, evaluator)
    out["faithfulness"] = faithfulness_interval(evaluator, chosen.in_graph).to_dict()
    if size is not None and scored.unit_scores is not None:
        try:
            out["stability"] = edge_stability(scored, size, n_resamples=resamples)
        except ResamplingError as err:  # e.g. one unit of prompts: said, not fatal
            out["stability_note"] = str(err)
    return out
