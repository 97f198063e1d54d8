"""Aggregates with bootstrap confidence intervals, and normalised faithfulness."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..errors import ModelWeaveError
from .functional import normalize


class StatsError(ModelWeaveError, ValueError):
    """An aggregate asked of no values, or with an unknown option."""


@dataclass(frozen=True)
class Aggregate:
    """Mean of per-example values with a percentile-bootstrap confidence interval."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    confidence: float = 0.95

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}]"


def _array(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def bootstrap(values, n_resamples: int = 2000, confidence: float = 0.95,
              seed: int = 0) -> Aggregate:
    """Mean and percentile-bootstrap CI of per-example ``values`` ([N])."""
    x = _array(values)
    if x.size == 0:
        raise StatsError("no values to aggregate: give at least one")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Aggregate(float(x.mean()), float(low), float(high), int(x.size), confidence)


#: per-prompt faithfulness leaves out prompts whose |m(M) - m(∅)| is below this fraction of
#: the median |m(M) - m(∅)| over the prompts (their ratio is noise divided by almost nothing)
MIN_DENOMINATOR = 0.1


def faithfulness(circuit, model, empty, order: str = "mean_then_ratio", *,
                 min_fraction: float = MIN_DENOMINATOR) -> float:
    """Normalised faithfulness (m(C) - m(∅)) / (m(M) - m(∅)).

    Args:
        circuit, model, empty: per-example metric values ([N]) of the circuit, the full model,
            and the empty circuit (everything ablated / corrupted).
        order: ``"mean_then_ratio"`` averages each term over examples first, then divides (as
            MIB and EAP-IG do); ``"per_prompt"`` divides per example, then averages over the
            prompts :func:`stable_prompts` keeps (NaN when it keeps none).
        min_fraction: see :func:`stable_prompts` (``per_prompt`` only).
    """
    c, m, e = _array(circuit), _array(model), _array(empty)
    if order == "mean_then_ratio":
        return float(normalize(c.mean(), m.mean(), e.mean()))
    if order == "per_prompt":
        ratios = per_prompt_faithfulness(c, m, e, min_fraction=min_fraction)
        ratios = ratios[np.isfinite(ratios)]
        return float(ratios.mean()) if ratios.size else float("nan")
    raise StatsError(f"order must be 'mean_then_ratio' or 'per_prompt', got {order!r}")


def stable_prompts(model, empty, min_fraction: float = MIN_DENOMINATOR) -> np.ndarray:
    """[N] bool: prompts whose denominator ``|m_i(M) - m_i(∅)|`` is at least ``min_fraction``
    times the median denominator (and not 0). A prompt where the model barely beats the empty
    circuit gives a ratio of noise over almost nothing (1e-9 in practice: ratios of 66 and -3
    for the same circuit); ``min_fraction=0`` keeps every non-zero denominator."""
    if min_fraction < 0:
        raise StatsError(f"min_fraction must be >= 0, got {min_fraction}")
    den = np.abs(_array(model) - _array(empty))
    if den.size == 0:
        return np.zeros(0, dtype=bool)
    floor = min_fraction * float(np.median(den))
    return (den >= floor) & (den > 0)


def per_prompt_faithfulness(circuit, model, empty, *,
                            min_fraction: float = MIN_DENOMINATOR) -> np.ndarray:
    """[..., N] per-example (m_i(C) - m_i(∅)) / (m_i(M) - m_i(∅)); NaN for the prompts
    :func:`stable_prompts` leaves out (count them with ``np.isnan``)."""
    c, m, e = _array(circuit), _array(model), _array(empty)
    keep = stable_prompts(m, e, min_fraction)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.array(normalize(c, m, e), dtype=np.float64)
    out[..., ~keep] = np.nan  # circuit values may carry leading axes ([K, N])
    return out


normalized = faithfulness
"""Patching results use the same normalisation: 1 = clean run, 0 = corrupted run."""
