"""Uncertainty of a result: resampling over prompts, over seeds, and stability of found sets.

Three questions a reviewer asks of every number, answered here once for every method:

- **How much would it change with other prompts?** :func:`bootstrap_stat` resamples the
  prompts (rows of one or more paired per-prompt arrays, jointly) and recomputes any statistic,
  e.g. a mean-then-ratio faithfulness; :func:`bootstrap_curve` does it for a whole curve at
  once and returns a band.
- **With other seeds?** :func:`across_seeds` gives the mean over K independent runs (new
  prompts, counterfactuals, sampled nulls) and a Student-t interval of that mean.
- **Is the found set stable?** :func:`stability` takes the sets found on K resamples or
  seeds: how often each component is in (inclusion frequency), the mean pairwise Jaccard with
  a bootstrap interval over the sets, and the *stable core* (in at least 90% of them).

Everything is numpy (scipy for the t quantile); inputs may be lists, arrays or tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ModelWeaveError
from .stats import Aggregate, _array


class ResamplingError(ModelWeaveError):
    """Resampling asked for something that cannot be computed (no values, 0 seeds, ...)."""


def check_seeds(seeds: int, where: str = "seeds") -> int:
    """``seeds`` as a positive int, or a :class:`ResamplingError` naming ``where``."""
    if isinstance(seeds, bool) or not isinstance(seeds, int | np.integer) or seeds < 1:
        raise ResamplingError(f"{where} must be a positive integer (1 = a single run), "
                              f"got {seeds!r}")
    return int(seeds)


def _tails(confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise ResamplingError(f"confidence must be in (0, 1), got {confidence!r}")
    tail = (1 - confidence) / 2 * 100
    return tail, 100 - tail


def bootstrap_stat(arrays: Sequence | np.ndarray, statistic: Callable[..., float] | None = None,
                   *, n_resamples: int = 2000, confidence: float = 0.95,
                   seed: int = 0) -> Aggregate:
    """A statistic of paired per-prompt arrays with its percentile-bootstrap interval.

    Args:
        arrays: one [N] array, or a sequence of [N] arrays paired by prompt (resampled with
            the same indices, so a ratio of means keeps its pairing).
        statistic: ``statistic(*arrays) -> float`` on (resampled) arrays; default the mean of
            the single array.
        n_resamples, confidence, seed: the bootstrap's size, coverage and generator seed.

    Returns:
        :class:`Aggregate` whose ``mean`` is the statistic on the original arrays (not the
        mean of the resamples), with the interval's ends and ``n`` = N.
    """
    group = _group(arrays)
    stat = statistic or (lambda x: float(x.mean()))
    n = group[0].shape[0]
    low_q, high_q = _tails(confidence)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    values = np.array([stat(*(a[i] for a in group)) for i in idx], dtype=np.float64)
    values = values[np.isfinite(values)]
    point = float(stat(*group))
    if values.size == 0:
        return Aggregate(point, float("nan"), float("nan"), n, confidence)
    low, high = np.percentile(values, [low_q, high_q])
    return Aggregate(point, float(low), float(high), n, confidence)


def _group(arrays) -> list[np.ndarray]:
    if isinstance(arrays, np.ndarray) or hasattr(arrays, "detach") or (
            isinstance(arrays, Sequence) and arrays and np.isscalar(arrays[0])):
        arrays = [arrays]
    group = [_array(a) for a in arrays]
    if not group or group[0].ndim == 0 or group[0].shape[0] == 0:
        raise ResamplingError("no values to resample")
    n = group[0].shape[0]
    if any(a.shape[0] != n for a in group):
        raise ResamplingError(f"paired arrays differ in length: {[a.shape[0] for a in group]}")
    return group


@dataclass(frozen=True)
class Band:
    """A curve with its pointwise bootstrap band: each of ``value``, ``low``, ``high`` is one
    float per point of ``x``."""

    x: list[float]
    value: list[float]
    low: list[float]
    high: list[float]
    n: int
    confidence: float = 0.95

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_curve(per_prompt: Sequence, x: Iterable[float] | None = None,
                    reduce: Callable[[np.ndarray], np.ndarray] | None = None, *,
                    n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Band:
    """A curve computed from per-prompt values, with a pointwise percentile band.

    Args:
        per_prompt: [N, P] (or a sequence of paired [N, P] arrays): N prompts, P points.
        x: the P x positions (default 0..P-1).
        reduce: ``reduce(*arrays) -> [P]`` (default: the mean over prompts of one array), e.g.
            a mean-then-ratio faithfulness per point.
    """
    group = _group(per_prompt)
    if group[0].ndim != 2:
        raise ResamplingError(f"a curve needs [N, P] per-prompt values, got shape "
                              f"{group[0].shape}")
    fn = reduce or (lambda a: a.mean(axis=0))
    n, points = group[0].shape
    low_q, high_q = _tails(confidence)
    rng = np.random.default_rng(seed)
    draws = np.stack([np.asarray(fn(*(a[i] for a in group)), dtype=np.float64)
                      for i in rng.integers(0, n, size=(n_resamples, n))])
    low, high = np.nanpercentile(draws, [low_q, high_q], axis=0)
    xs = list(range(points)) if x is None else [float(v) for v in x]
    return Band(xs, [float(v) for v in np.asarray(fn(*group))], low.tolist(), high.tolist(),
                n, confidence)


def across_seeds(values: Sequence[float], confidence: float = 0.95) -> Aggregate:
    """Mean of one number over K independent seeds with a Student-t interval of the mean.

    One seed gives the value with an unknown (NaN) interval: a single run says nothing about
    its own spread. ``n`` is K.
    """
    from scipy import stats

    x = _array(values)
    if x.size == 0:
        raise ResamplingError("no seeds to aggregate")
    _tails(confidence)
    mean = float(x.mean())
    if x.size == 1:
        return Aggregate(mean, float("nan"), float("nan"), 1, confidence)
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return Aggregate(mean, mean - half, mean + half, int(x.size), confidence)


def jaccard(a: Iterable, b: Iterable) -> float:
    """|a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    a, b = set(a), set(b)
    union = a | b
    return 1.0 if not union else len(a & b) / len(union)


@dataclass(frozen=True)
class Stability:
    """How stable a found set is over K resamples or seeds.

    Attributes:
        frequency: component -> fraction of the K sets that contain it (sorted, highest
            first).
        jaccard: mean pairwise Jaccard of the K sets, with a bootstrap interval over sets.
        core: components in at least ``threshold`` of the sets.
        sizes: the K set sizes.
    """

    frequency: dict[str, float]
    jaccard: Aggregate
    core: list[str]
    sizes: list[int]
    threshold: float = 0.9

    def to_dict(self) -> dict:
        return {"frequency": self.frequency, "jaccard": self.jaccard.to_dict(),
                "core": self.core, "sizes": self.sizes, "threshold": self.threshold,
                "k": len(self.sizes)}

    @classmethod
    def from_dict(cls, data: dict) -> Stability:
        return cls(dict(data["frequency"]), Aggregate(**data["jaccard"]), list(data["core"]),
                   list(data["sizes"]), data.get("threshold", 0.9))


def _pairwise_jaccard(member: np.ndarray) -> np.ndarray:
    """[K, K] Jaccard of every pair of rows of a [K, C] 0/1 membership matrix (one matrix
    product). Float32 sums of 0/1 products are exact integers below 2**24 members."""
    dtype = np.float32 if member.shape[1] < 2**24 else np.float64
    member = member.astype(dtype, copy=False)
    inter = (member @ member.T).astype(np.float64)
    sizes = member.sum(axis=1, dtype=np.float64)
    union = sizes[:, None] + sizes[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 1.0)


def stability(sets: Sequence[Iterable], threshold: float = 0.9, *, n_resamples: int = 1000,
              confidence: float = 0.95, seed: int = 0) -> Stability:
    """Inclusion frequency, pairwise Jaccard (with interval) and stable core of K >= 2 sets.

    The Jaccard interval resamples the K sets with replacement and averages the Jaccard over
    pairs of distinct draws (a set is never compared with its own copy).
    """
    sets = [set(s) for s in sets]
    if len(sets) < 2:
        raise ResamplingError(f"stability needs at least 2 sets (seeds or resamples), "
                              f"got {len(sets)}")
    labels = sorted(set().union(*sets), key=str)
    index = {c: i for i, c in enumerate(labels)}
    member = np.zeros((len(sets), len(labels)), dtype=bool)
    for row, s in enumerate(sets):
        member[row, [index[c] for c in s]] = True
    return stability_of_members(member, labels, threshold, n_resamples=n_resamples,
                                confidence=confidence, seed=seed)


def stability_of_members(member: np.ndarray, labels: Sequence, threshold: float = 0.9, *,
                         n_resamples: int = 1000, confidence: float = 0.95,
                         seed: int = 0) -> Stability:
    """:func:`stability` of K sets given as a [K, C] boolean membership matrix over the C
    ``labels`` (no Python set per resample: for sets of 10^5 circuit edges)."""
    member = np.asarray(member, dtype=bool)
    if member.ndim != 2 or member.shape[1] != len(labels):
        raise ResamplingError(f"membership must be [K, {len(labels)}], got {member.shape}")
    k = member.shape[0]
    if k < 2:
        raise ResamplingError(f"stability needs at least 2 sets (seeds or resamples), got {k}")
    if not 0 < threshold <= 1:
        raise ResamplingError(f"threshold must be in (0, 1], got {threshold!r}")
    counts = member.sum(axis=0)
    present = [j for j in range(len(labels)) if counts[j]]
    present.sort(key=lambda j: (-counts[j], str(labels[j])))
    frequency = {labels[j]: counts[j] / k for j in present}
    low_q, high_q = _tails(confidence)
    pair = _pairwise_jaccard(member)
    upper = np.triu(np.ones((k, k), dtype=bool), 1)
    point = float(pair[upper].mean())
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_resamples):
        idx = rng.integers(0, k, size=k)
        keep = upper & (idx[:, None] != idx[None, :])   # never a set against its own copy
        if keep.any():
            draws.append(pair[np.ix_(idx, idx)][keep].mean())
    low, high = (np.percentile(draws, [low_q, high_q]) if draws
                 else (float("nan"), float("nan")))
    core = [c for c, f in frequency.items() if f >= threshold - 1e-12]
    return Stability({c: float(f) for c, f in frequency.items()},
                     Aggregate(point, float(low), float(high), k, confidence), core,
                     [int(n) for n in member.sum(axis=1)], threshold)
