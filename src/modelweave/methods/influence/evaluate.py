"""How well each method's ranking finds what it should, with intervals over queries.

- :func:`retrieval`: per method, the rank of each query's best known source document
  (``Query.sources``), the top-k hit counts and the mean reciprocal rank, each with its
  percentile-bootstrap interval over queries
  (:func:`~modelweave.metrics.uncertainty.bootstrap_stat`), and the paired difference of
  every method's top-1 hits
  from a reference method's;
- :func:`leave_out_correlation`: per method, the Spearman correlation over retrainings between
  the loss change a leave-k-out retraining measured and the one the scores predict, per query,
  averaged over queries with a bootstrap interval (the linear datamodelling score of
  Park et al. 2023, with ``k`` documents left out per retraining);
- :func:`retrieval_line`: ``"ekfac 8/12 [5, 11], bm25 12/12 [12, 12], ..."``.
"""

from __future__ import annotations

import numpy as np
import torch

from ...metrics.uncertainty import bootstrap_stat
from .data import InfluenceError
from .scores import InfluenceScores


def source_ranks(result: InfluenceScores, method: str, task: str | None = None) -> np.ndarray:
    """[Q'] best rank (1 = top) of any source of each query that has ``sources`` (of
    ``task`` if given); a query whose sources are not in the corpus is an error."""
    out = []
    for i, q in enumerate(result.queries):
        if not q.sources or (task is not None and q.task != task):
            continue
        rank = result.source_rank(i, method)
        if rank is None:
            raise InfluenceError(f"query {q.id!r}: none of its sources is in the corpus")
        out.append(rank)
    if not out:
        raise InfluenceError("no query has sources" + (f" in task {task!r}" if task else ""))
    return np.asarray(out, dtype=np.float64)


def retrieval(result: InfluenceScores, methods: list[str] | None = None,
              ks: tuple[int, ...] = (1, 3, 5), task: str | None = None,
              reference: str = "bm25", n_resamples: int = 2000, seed: int = 0) -> dict:
    """Per method: ``ranks`` (per query), ``top{k}`` (hits, n, share and its interval
    ``share_ci``), ``mrr`` and ``mrr_ci``; with ``reference`` among the methods, each other
    method's ``top1_minus_<reference>`` (paired difference of hit shares, with interval)."""
    methods = methods or result.methods
    ranks = {m: source_ranks(result, m, task) for m in methods}
    out: dict = {}
    for m, r in ranks.items():
        block: dict = {"ranks": r.astype(int).tolist(), "n": len(r)}
        for k in ks:
            agg = bootstrap_stat((r <= k).astype(float), n_resamples=n_resamples, seed=seed)
            block[f"top{k}"] = {"hits": int((r <= k).sum()), "n": len(r), "share": agg.mean,
                                "share_ci": [agg.ci_low, agg.ci_high]}
        agg = bootstrap_stat(1.0 / r, n_resamples=n_resamples, seed=seed)
        block["mrr"], block["mrr_ci"] = agg.mean, [agg.ci_low, agg.ci_high]
        if reference in ranks and m != reference:
            diff = bootstrap_stat([(r <= 1).astype(float), (ranks[reference] <= 1).astype(float)],
                                  lambda a, b: float(a.mean() - b.mean()),
                                  n_resamples=n_resamples, seed=seed)
            block[f"top1_minus_{reference}"] = {"value": diff.mean,
                                                "ci": [diff.ci_low, diff.ci_high]}
        out[m] = block
    return out


def retrieval_line(table: dict, k: int = 1) -> str:
    """One line: each method's top-``k`` hits with the interval in counts."""
    parts = []
    for m, block in table.items():
        t = block[f"top{k}"]
        lo, hi = (round(x * t["n"]) for x in t["share_ci"])
        parts.append(f"{m} {t['hits']}/{t['n']} [{lo}, {hi}]")
    return ", ".join(parts)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank) along the last axis."""
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def spearman_per_query(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """[Q] Spearman correlation over retrainings of ``predicted`` [R, Q] and ``measured``
    [R, Q] (columns with no variation give ``nan``)."""
    p, m = _ranks(np.asarray(predicted, float).T), _ranks(np.asarray(measured, float).T)
    p = p - p.mean(1, keepdims=True)
    m = m - m.mean(1, keepdims=True)
    denom = np.sqrt((p * p).sum(1) * (m * m).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (p * m).sum(1) / denom, np.nan)


def predicted_effects(scores: torch.Tensor, subsets: list[list[int]]) -> np.ndarray:
    """[R, Q]: the rise of each query's loss the scores predict when the documents of each
    subset are left out: the sum of their scores (a positive score raises the completion's
    log-probability, so removing the document raises its loss)."""
    m = scores.double().numpy()
    return np.stack([m[:, s].sum(1) for s in subsets])


def leave_out_correlation(result: InfluenceScores, measured: np.ndarray,
                          subsets: list[list[int]], methods: list[str] | None = None,
                          queries: list[int] | None = None, n_resamples: int = 2000,
                          seed: int = 0) -> dict:
    """Per method: the mean over queries of the per-query Spearman correlation between the
    measured loss changes ``measured`` [R, Q] (left-out model minus full model) and the
    predicted ones, ``mean`` with ``ci`` (bootstrap over queries), and ``per_query``.
    ``queries`` restricts to those rows of the result."""
    methods = methods or result.methods
    rows = list(range(len(result.queries))) if queries is None else list(queries)
    out = {}
    for m in methods:
        rho = spearman_per_query(predicted_effects(result.matrix(m), subsets)[:, rows],
                                 np.asarray(measured)[:, rows])
        finite = rho[np.isfinite(rho)]
        if finite.size == 0:
            out[m] = {"mean": float("nan"), "ci": [float("nan")] * 2, "n": 0,
                      "per_query": rho.tolist()}
            continue
        agg = bootstrap_stat(finite, n_resamples=n_resamples, seed=seed)
        out[m] = {"mean": agg.mean, "ci": [agg.ci_low, agg.ci_high], "n": int(finite.size),
                  "per_query": rho.tolist()}
    return out
