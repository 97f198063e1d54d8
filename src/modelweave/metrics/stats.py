"""Aggregates with bootstrap confidence intervals, and normalised faithfulness."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from .functional import normalize


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
        raise ValueError("no values to aggregate")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Aggregate(float(x.mean()), float(low), float(high), int(x.size), confidence)


def faithfulness(circuit, model, empty, order: str = "mean_then_ratio") -> float:
    """Normalised faithfulness (m(C) - m(∅)) / (m(M) - m(∅)).

    Args:
        circuit, model, empty: per-example metric values ([N]) of the circuit, the full model,
            and the empty circuit (everything ablated / corrupted).
        order: ``"mean_then_ratio"`` averages each term over examples first, then divides (as
            MIB and EAP-IG do); ``"per_prompt"`` divides per example, then averages.
    """
    c, m, e = _array(circuit), _array(model), _array(empty)
    if order == "mean_then_ratio":
        return float(normalize(c.mean(), m.mean(), e.mean()))
    if order == "per_prompt":
        return float(per_prompt_faithfulness(c, m, e).mean())
    raise ValueError(f"order must be 'mean_then_ratio' or 'per_prompt', got {order!r}")


def per_prompt_faithfulness(circuit, model, empty) -> np.ndarray:
    """[N] per-example (m_i(C) - m_i(∅)) / (m_i(M) - m_i(∅))."""
    return normalize(_array(circuit), _array(model), _array(empty))


normalized = faithfulness
"""Patching results use the same normalisation: 1 = clean run, 0 = corrupted run."""
