"""How much a circuit's numbers would change with other prompts: bootstrap intervals of
faithfulness, CPR and CMD, the faithfulness curve as a band, and the within-seed stability of
the edges a scoring method picks.

Everything here resamples values that were already computed, with **no extra model pass**:

- the per-prompt metric of every circuit the curve evaluated (the evaluator keeps them, see
  :meth:`~.evaluation.CircuitEvaluator.rows`), of the model and of the empty circuit; a
  statistic on a resample is *mean-then-ratio*, ``f = (mean m(C) - mean m(empty)) / (mean
  m(model) - mean m(empty))``, the three resampled with the same prompts (paired), so its
  value on the original prompts is exactly the curve's;
- the per-prompt (or per-unit of prompts) edge scores of EAP / EAP-IG
  (``edge_attribution(per_prompt=True)``): a resample's scores are the mean of its units', and
  the circuit is re-chosen from them exactly as the full-data one was (top ``n`` by signed
  score, pruned).

Intervals are 95% percentile intervals (:mod:`modelweave.metrics.uncertainty`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..metrics.stats import Aggregate
from ..metrics.uncertainty import (
    ResamplingError,
    bootstrap_curve,
    bootstrap_stat,
    stability_of_members,
)
from .circuit import Circuit, prune, top_edges
from .evaluation import CircuitEvaluator, area

#: prompt resamples of the intervals and of the edge stability
RESAMPLES, STABILITY_RESAMPLES = 1000, 200


def mean_ratio(value: np.ndarray, full: np.ndarray, empty: np.ndarray) -> np.ndarray | float:
    """Faithfulness of means: ``value`` [N] or [N, P], ``full``/``empty`` [N] -> float or [P]."""
    e = empty.mean()
    return (value.mean(axis=0) - e) / (full.mean() - e)


def faithfulness_interval(evaluator: CircuitEvaluator, in_graph: torch.Tensor, *,
                          n_resamples: int = RESAMPLES, seed: int = 0) -> Aggregate:
    """f(C) of one circuit ([N_senders, N_receivers] bool) with its bootstrap interval over
    prompts; ``mean`` equals ``evaluator.faithfulness(in_graph)`` up to float rounding."""
    rows = evaluator.rows(in_graph)
    return bootstrap_stat([rows, evaluator.full_rows, evaluator.empty_rows],
                          lambda c, f, e: float(mean_ratio(c, f, e)),
                          n_resamples=n_resamples, seed=seed)


def curve_rows(circuit: Circuit, evaluator: CircuitEvaluator,
               percentages: Sequence[float]) -> dict[str, np.ndarray]:
    """``{"signed": [N, P], "abs": [N, P]}``: per-prompt metric of each top-k circuit of the
    curve (from the evaluator's memo: the curve's own passes)."""
    return {name: np.stack([evaluator.rows(circuit.top_fraction(p, absolute).in_graph)
                            for p in percentages], axis=1)
            for name, absolute in (("signed", False), ("abs", True))}


def curve_uncertainty(circuit: Circuit, evaluator: CircuitEvaluator, *,
                      n_resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Bands of the signed and absolute faithfulness curves and intervals of CPR and CMD.

    ``circuit.curve`` must hold a curve of :func:`~.evaluation.faithfulness_curve` on this
    evaluator (its percentages are reused). All resamples share their prompt indices (one
    seed), so the bands, CPR and CMD are of the same resamples.

    Returns:
        JSON-ready ``{"band_signed", "band_abs"}`` (:class:`~modelweave.metrics.uncertainty.Band`
        dicts: ``x`` the percentages, ``value`` the curve, ``low``, ``high``) and
        ``{"cpr", "cmd"}`` (:class:`Aggregate` dicts), ``n`` prompts, ``resamples``.
    """
    if not circuit.curve:
        raise ResamplingError("the circuit has no faithfulness curve to put a band on")
    xs = list(circuit.curve["percentages"])
    rows = curve_rows(circuit, evaluator, xs)
    full, empty = evaluator.full_rows, evaluator.empty_rows
    common = dict(n_resamples=n_resamples, seed=seed)
    arrays = [rows["signed"], rows["abs"], full, empty]

    def cpr(signed, _abs, f, e) -> float:
        return area(xs, list(mean_ratio(signed, f, e)))

    def cmd(_signed, absolute, f, e) -> float:
        return area(xs, list(np.abs(1 - mean_ratio(absolute, f, e))))

    out = {f"band_{name}": bootstrap_curve([rows[name], full[:, None], empty[:, None]], xs,
                                           mean_ratio, **common).to_dict()
           for name in ("signed", "abs")}
    out["cpr"] = bootstrap_stat(arrays, cpr, **common).to_dict()
    out["cmd"] = bootstrap_stat(arrays, cmd, **common).to_dict()
    return {**out, "n": int(full.shape[0]), "resamples": n_resamples}


def resampled_scores(unit_scores: torch.Tensor, n_resamples: int, seed: int = 0,
                     chunk: int = 16):
    """Yields ``[n_senders, n_receivers]`` edge scores of ``n_resamples`` bootstrap resamples
    of the units ([U, S, R] summed scores): the mean of the drawn units' (ranking is scale
    free)."""
    n_units = unit_scores.shape[0]
    flat = unit_scores.reshape(n_units, -1).double()
    rng = np.random.default_rng(seed)
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        idx = rng.integers(0, n_units, size=(size, n_units))
        counts = torch.from_numpy(np.stack([np.bincount(i, minlength=n_units) for i in idx]))
        yield from (counts.double() @ flat / n_units).float().view(size,
                                                                    *unit_scores.shape[1:])


def edge_names(circuit: Circuit, in_graph: torch.Tensor) -> list[str]:
    """Names of the edges of ``in_graph`` (graph order)."""
    return [circuit.graph.edge_name(int(s), int(r)) for s, r in torch.nonzero(in_graph)]


def edge_stability(circuit: Circuit, size: int, *, absolute: bool = False,
                   n_resamples: int = STABILITY_RESAMPLES, seed: int = 0,
                   threshold: float = 0.9) -> dict:
    """Within-seed stability of a top-``size`` circuit over bootstrap resamples of prompts.

    Each resample re-ranks every edge by the resampled scores and takes the same-size top
    circuit (``top(size, absolute)``, pruned), as the full-data circuit was chosen.

    Args:
        circuit: scored with ``unit_scores`` (``edge_attribution(per_prompt=True)``).
        size: the top-n the circuit was chosen with (before pruning).

    Returns:
        JSON-ready: ``unit`` (what was resampled: ``"prompt"`` or ``"k prompts"``),
        ``resamples``, ``size``, ``n_edges`` (of the full-data circuit), ``jaccard_full``
        (Jaccard of a resample's circuit to the full-data one: mean over resamples and its
        2.5-97.5% range, an :class:`Aggregate` dict), ``stability`` (a
        :class:`~modelweave.metrics.uncertainty.Stability` dict: inclusion frequency and
        core (>= ``threshold``) and the mean pairwise Jaccard with its interval, over every
        resample), ``core_size``,
        ``circuit_frequency`` (inclusion frequency of each full-data circuit edge).
    """
    units = circuit.unit_scores
    if units is None:
        raise ResamplingError(f"{circuit.method or 'this'} circuit has no per-prompt edge "
                              "scores to resample (EAP and EAP-IG keep them)")
    if units.shape[0] < 2:
        raise ResamplingError("edge stability needs at least 2 resampling units of prompts")
    graph = circuit.graph
    full = prune(graph, top_edges(graph, circuit.scores, size, absolute)).flatten()
    # [K, N*R] bool masks, not name sets: a circuit can be the whole graph (10^5 edges)
    masks = torch.stack([prune(graph, top_edges(graph, scores, size, absolute)).flatten()
                         for scores in resampled_scores(units, n_resamples, seed)])
    columns = torch.nonzero(masks.any(dim=0)).squeeze(1)
    stab = stability_of_members(masks[:, columns].numpy(), _flat_names(graph, columns),
                                threshold, seed=seed)
    inter = (masks & full).sum(dim=1).double()
    union = masks.sum(dim=1).double() + full.sum() - inter
    overlap = torch.where(union > 0, inter / union.clamp(min=1), 1.0).numpy()
    low, high = np.percentile(overlap, [2.5, 97.5])
    full_columns = torch.nonzero(full).squeeze(1)
    included = masks[:, full_columns].double().mean(dim=0).tolist()
    unit_size = int(circuit.params.get("unit_size", 1))
    return {"unit": "prompt" if unit_size == 1 else f"{unit_size} prompts",
            "resamples": n_resamples, "size": size, "n_edges": len(full_columns),
            "jaccard_full": Aggregate(float(overlap.mean()), float(low), float(high),
                                      n_resamples).to_dict(),
            "stability": stab.to_dict(),
            "core_size": len(stab.core),
            "circuit_frequency": dict(zip(_flat_names(graph, full_columns), included,
                                          strict=True))}


def _flat_names(graph, flat: torch.Tensor) -> list[str]:
    """Edge names of flat ``[N * R]`` indices."""
    n_receivers = graph.n_receivers
    return [graph.edge_name(i // n_receivers, i % n_receivers) for i in flat.tolist()]
