"""The analyses of Ruis et al. (2024) over an influence table.

- :func:`query_correlations`: Pearson correlation of the queries' influence vectors;
  :func:`task_correlation_test`: same-task vs different-task pairs, with a permutation test over
  the queries' task labels; :func:`pair_contrast_test`: within-task pairs of one group of tasks
  against another (e.g. procedural vs factual), likewise.
- :func:`~.scores.top_share` / :func:`concentration_curve`: the share of a query's total positive
  influence that its top-k documents carry; :func:`power_law_slope`: the slope of log score
  against log rank over the top documents (more negative = more concentrated).
- :func:`answer_in_top`: how many top-k documents contain the answer text;
  :func:`category_counts`: the categories of the top-k documents;
  :func:`source_hit_rate`: the share of queries whose source document ranks in the top k.
"""

from __future__ import annotations

import random
from collections import Counter

import torch

from .scores import InfluenceScores


def query_correlations(scores: torch.Tensor) -> torch.Tensor:
    """[Q, Q] Pearson correlations between rows of a [Q, D] score matrix."""
    m = scores.double()
    m = m - m.mean(dim=1, keepdim=True)
    m = m / m.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return (m @ m.T).float()


def _pair_mean(corr: torch.Tensor, labels: list[str], keep) -> float:
    """Mean of ``corr[i, j]`` over pairs i < j with ``keep(labels[i], labels[j])``."""
    names = sorted(set(labels))
    code = torch.tensor([names.index(x) for x in labels])
    allowed = torch.tensor([[bool(keep(a, b)) for b in names] for a in names])
    mask = allowed[code][:, code] & torch.ones_like(corr, dtype=torch.bool).triu(1)
    return float(corr[mask].mean()) if mask.any() else float("nan")


def _permutation_p(observed: float, statistic, labels: list[str], n_perm: int,
                   seed: int) -> float:
    rng = random.Random(seed)
    shuffled = list(labels)
    hits = 0
    for _ in range(n_perm):
        rng.shuffle(shuffled)
        if statistic(shuffled) >= observed - 1e-12:
            hits += 1
    return (hits + 1) / (n_perm + 1)


def task_correlation_test(scores: torch.Tensor, tasks: list[str], n_perm: int = 2000,
                          seed: int = 0) -> dict:
    """Mean correlation of same-task pairs minus that of different-task pairs, with a
    one-sided permutation p-value (task labels shuffled over queries). Also the mean
    within-task correlation of each task."""
    corr = query_correlations(scores)

    def statistic(labels):
        return (_pair_mean(corr, labels, lambda a, b: a == b)
                - _pair_mean(corr, labels, lambda a, b: a != b))

    observed = statistic(tasks)
    per_task = {t: _pair_mean(corr, tasks, lambda a, b, t=t: a == b == t)
                for t in dict.fromkeys(tasks)}
    return {"same_task": _pair_mean(corr, tasks, lambda a, b: a == b),
            "different_task": _pair_mean(corr, tasks, lambda a, b: a != b),
            "difference": observed, "p_value": _permutation_p(observed, statistic, tasks,
                                                              n_perm, seed),
            "n_perm": n_perm, "per_task": per_task}


def pair_contrast_test(scores: torch.Tensor, tasks: list[str], group_a: set[str],
                       group_b: set[str], n_perm: int = 2000, seed: int = 0) -> dict:
    """Mean correlation of within-task pairs whose task is in ``group_a`` minus that of
    within-task pairs in ``group_b``; one-sided permutation p-value with the task labels
    shuffled over the queries of both groups."""
    corr = query_correlations(scores)
    rows = [i for i, t in enumerate(tasks) if t in group_a or t in group_b]
    sub = corr[rows][:, rows]
    labels = [tasks[i] for i in rows]

    def statistic(lab):
        return (_pair_mean(sub, lab, lambda a, b: a == b and a in group_a)
                - _pair_mean(sub, lab, lambda a, b: a == b and a in group_b))

    observed = statistic(labels)
    return {"a": _pair_mean(sub, labels, lambda a, b: a == b and a in group_a),
            "b": _pair_mean(sub, labels, lambda a, b: a == b and a in group_b),
            "difference": observed,
            "p_value": _permutation_p(observed, statistic, labels, n_perm, seed),
            "n_perm": n_perm}


def concentration_curve(row: torch.Tensor, ks: list[int] | None = None) -> list[float]:
    """:func:`~.scores.top_share` at each ``k`` (default 1..D)."""
    positive = row.double().clamp_min(0).sort(descending=True).values
    total = float(positive.sum())
    cumulative = positive.cumsum(0) / total if total > 0 else positive * float("nan")
    ks = ks or list(range(1, len(row) + 1))
    return [float(cumulative[min(k, len(row)) - 1]) for k in ks]


def power_law_slope(row: torch.Tensor, top: int = 50) -> float:
    """Least-squares slope of log(score) against log(rank) over the ``top`` most positive
    documents (positive scores only); ``nan`` with fewer than 3."""
    positive = row.double()
    positive = positive[positive > 0].sort(descending=True).values[:top]
    if len(positive) < 3:
        return float("nan")
    x = torch.log(torch.arange(1, len(positive) + 1, dtype=torch.float64))
    y = torch.log(positive)
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x * x).sum())


def answer_in_top(result: InfluenceScores, query: int | str, k: int = 10,
                  method: str = "ekfac") -> int:
    """How many of the query's top-``k`` documents contain its answer text."""
    return sum(t.has_answer for t in result.top(query, k, method))


def category_counts(result: InfluenceScores, query: int | str, k: int = 10,
                    method: str = "ekfac") -> dict[str, int]:
    """Categories of the query's top-``k`` documents."""
    return dict(Counter(t.category or "(none)" for t in result.top(query, k, method)))


def source_hit_rate(result: InfluenceScores, k: int = 3, method: str = "ekfac",
                    task: str | None = None) -> float:
    """Share of queries (with ``sources``; of ``task`` if given) whose best source document
    ranks in the top ``k``."""
    ranks = [result.source_rank(i, method) for i, q in enumerate(result.queries)
             if q.sources and (task is None or q.task == task)]
    if not ranks:
        return float("nan")
    return sum(r is not None and r <= k for r in ranks) / len(ranks)
