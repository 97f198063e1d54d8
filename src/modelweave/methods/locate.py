"""Verified localisation: the exact top-k components of a grid from far fewer exact patches
than a sweep.

:func:`locate` ranks every unit of a grid by AtP* (:mod:`.atp_star`; plain AtP on request),
then verifies units exactly on the suffix engine (:func:`~.activation_patching.patch_units`,
batched) in that order, ``step`` units a round, and stops as soon as the ``k`` largest exact
effects found are all larger than an upper estimate of every unverified unit's effect.

**The upper estimate** (a calibrated margin). With ``s(n)`` a unit's AtP* score (a magnitude,
metric units) and ``x(n)`` its exact effect (patched minus base metric), every verified unit
gives a relative error ``e(n) = (|x(n)| - s(n)) / (s(n) + tau)``, where the floor ``tau`` is the
mean score over all units (it keeps near-zero scores from dividing by zero). With ``rho`` the
largest error seen (at least 0), an unverified unit is estimated to have
``|x(n)| <= U(n) = s(n) + rho · (s(n) + tau)``. ``U`` grows with ``s``, so the largest ``U`` of
all unverified units is that of the next unit in the ranking, and the stopping test is
``|x|_(k) > U(next)``. Assumption: no unverified unit under-estimates its effect, relative to
``s + tau``, by more than the worst verified unit below the ranking's first ``k``. Those
first ``k`` are verified whatever their error and are left out of the calibration (with
``calibrate="all"`` they are kept: a larger, more conservative margin): the margin has to bound
the units the ranking puts lower, and a head the estimate under-rates at the very top (e.g. a
saturated one) says little about them. The verified units include a uniform random sample of
``spot`` units from below the top ``k`` of the ranking (verified first), so that the errors
``rho`` is calibrated on come from the whole range of scores, not only from the top.

**The risk of a miss.** The spot checks' errors are an unbiased sample of the errors of the
unverified units (both are drawn from the ranking's tail). An exponential tail is fitted to
them, ``P(e > y) = exp(-(y - median) / beta)`` with ``beta`` the mean excess over the median
(the largest-entropy tail with that mean); ``risk`` is the sum over unverified units of
``P(e(n) > (|x|_(k) - s(n)) / (s(n) + tau))``, capped at 1: an estimate of the probability
that some unverified unit belongs in the exact top ``k``. It is an estimate, not a bound: it
assumes the errors are exchangeable between the sample and the rest and have no heavier tail
than exponential.

A ``budget`` caps the number of exact patches (spot checks included); a run that reaches it
returns the best ``k`` verified units with ``stopped == "budget"`` and its risk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..engine.suffix import base_run
from ..metrics.scores import metric_on_last
from ..models import Model
from ..tasks import TaskBatch, TaskError
from .activation_patching import patch_units
from .atp_star import AtPStarEstimate, atp_star
from .grids import SITES, Unit
from .result import PatchingResult

METHODS = ("atp*", "atp")


@dataclass
class LocateResult:
    """What :func:`locate` found and what it cost.

    Attributes:
        top: the ``k`` units with the largest exact |effect| found, with that effect (metric
            units, patched minus base run), largest first.
        exact: every verified unit's exact effect.
        n_exact: exact patches spent (spot checks included); ``n_components``: grid size.
        stopped: ``"bound"`` (the top k beat the upper estimate), ``"budget"`` or ``"all"``
            (every unit verified).
        threshold: the k-th largest exact |effect|; ``upper``: the largest upper estimate of
            an unverified unit (0 when none is left); ``rho``, ``tau``: the margin's
            parameters (module docstring); ``risk``: estimated probability of a miss.
        spot: the randomly drawn units verified for calibration.
        estimate: the AtP* (or AtP) estimates the ranking came from.
    """

    grid: str
    direction: str
    metric: str
    method: str
    k: int
    top: list[tuple[Unit, float]]
    exact: dict[Unit, float]
    n_exact: int
    n_components: int
    stopped: str
    threshold: float
    upper: float
    rho: float
    tau: float
    risk: float
    spot: list[Unit]
    estimate: AtPStarEstimate
    base_metric: float
    source_metric: float
    rounds: list[dict] = field(default_factory=list)
    #: verified unit -> [N] its exact per-prompt effect (patched minus base run)
    exact_rows: dict[Unit, torch.Tensor] = field(default_factory=dict, repr=False)

    def summary(self) -> dict:
        """JSON-ready summary (no tensors)."""
        return {"grid": self.grid, "direction": self.direction, "metric": self.metric,
                "method": self.method, "k": self.k, "n_exact": self.n_exact,
                "n_components": self.n_components, "stopped": self.stopped,
                "threshold": self.threshold, "upper": self.upper, "rho": self.rho,
                "tau": self.tau, "risk": self.risk,
                "top": [{"layer": u.layer, "pos": u.pos, "index": u.index, "effect": e}
                        for u, e in self.top]}

    def to_result(self, model: Model, batch: TaskBatch) -> tuple[PatchingResult, torch.Tensor]:
        """The grid with exact values where verified and AtP* estimates elsewhere, and a
        boolean mask of the grid's shape marking the exact ones."""
        est = self.estimate
        raw = {u: self.base_metric + self.exact.get(u, float(e))
               for u, e in zip(est.units, est.estimate, strict=True)}
        clean, corrupt = ((self.source_metric, self.base_metric)
                          if self.direction == "denoising"
                          else (self.base_metric, self.source_metric))
        result = PatchingResult.from_units(model, batch, self.grid, self.direction, self.metric,
                                           est.axes, est.units, raw, clean, corrupt,
                                           method=f"locate ({self.method})",
                                           **est.rows(self.exact_rows))
        mask = torch.tensor([u in self.exact for u in est.units]).view(result.values.shape)
        return result, mask


def _risk(spot_errors: list[float], scores: torch.Tensor, threshold: float, tau: float
          ) -> float:
    """Estimated probability that a unit of ``scores`` (unverified) exceeds ``threshold``:
    exponential tail fitted to the spot checks' relative errors (module docstring)."""
    if not len(scores):
        return 0.0
    if not spot_errors:
        return 1.0
    errors = torch.tensor(spot_errors)
    median = float(errors.median())
    beta = max(float((errors - median).clamp(min=0).mean()), 1e-12)
    need = (threshold - scores) / (scores + tau)
    p = torch.exp(-(need - median).clamp(min=0) / beta)
    return min(1.0, float(p.sum()))


def locate(model: Model, batch: TaskBatch, grid: str, *, k: int = 20, budget: int | None = None,
           direction: str = "denoising", metric: str = "logit_diff", method: str = "atp*",
           layers: list[int] | None = None, indices: list[int] | None = None,
           positions: list[int] | None = None, step: int | None = None,
           spot: int | None = None, seed: int = 0,
           max_rows: int = 512, estimate: AtPStarEstimate | None = None,
           calibrate: str = "tail") -> LocateResult:
    """The exact top-``k`` units of ``grid`` by |effect|, verifying units in AtP* order until
    the top ``k`` beat an upper estimate of every unverified unit (module docstring).

    Args:
        k: how many components to find.
        budget: at most this many exact patches (default: the grid's size).
        positions: only units at these positions (``heads``/``neurons``: one unit per
            position).
        method: ``"atp*"`` (QK fix and GradDrop) or ``"atp"`` (plain) for the ranking.
        step: units verified per round (default ``max(2k, 32)``).
        spot: random calibration units (default ``min(32, grid size // 20)``).
        estimate: a ranking already computed for this batch, grid and direction.
        calibrate: ``"tail"`` (the margin from verified units below the ranking's first
            ``k``) or ``"all"`` (from every verified unit).

    Raises:
        TaskError: for a ``k`` larger than the grid, a budget below 1 or below ``k``, an
            unknown method or a grid without an exact sweep.
    """
    if method not in METHODS:
        raise TaskError(f"locate method must be one of {', '.join(METHODS)}, got {method!r}")
    if grid not in SITES:
        raise TaskError(f"locate needs a grid with an exact sweep: {', '.join(SITES)}; "
                        f"got {grid!r}")
    if k < 1:
        raise TaskError(f"k must be at least 1, got {k}")
    if calibrate not in ("tail", "all"):
        raise TaskError(f"calibrate must be 'tail' or 'all', got {calibrate!r}")
    if budget is not None and budget < 1:
        raise TaskError(f"the budget of exact patches must be at least 1, got {budget}")
    if estimate is None:
        plain = method == "atp"
        estimate = atp_star(model, batch, grid, direction=direction, metric=metric,
                            layers=layers, indices=indices, positions=positions,
                            qk_fix=not plain,
                            grad_drop=not plain)
    units, scores = estimate.units, estimate.score
    n_units = len(units)
    if k > n_units:
        raise TaskError(f"k={k} is larger than the number of components ({n_units}) of the "
                        f"{grid!r} grid")
    budget = n_units if budget is None else min(budget, n_units)
    if budget < k:
        raise TaskError(f"a budget of {budget} exact patches cannot verify k={k} components")
    step = step or max(2 * k, 32)
    ranked = scores.argsort(descending=True, stable=True).tolist()
    tau = max(float(scores.mean()), 1e-12)

    base_tokens, source_tokens = ((batch.corrupt, batch.clean) if direction == "denoising"
                                  else (batch.clean, batch.corrupt))
    names = sorted({f"blocks.{u.layer}.{SITES[grid]}" for u in units})
    _, source_cache = model.run_with_cache(source_tokens, names)
    _, base = base_run(model, base_tokens, names)
    base_rows = metric_on_last(metric, base.last_logits, batch).reshape(-1).float().cpu()
    base_m = metric_on_last(metric, base.last_logits, batch).mean().item()

    exact: dict[int, float] = {}
    exact_rows: dict[Unit, torch.Tensor] = {}

    def verify(idx: list[int]) -> None:
        todo = [i for i in idx if i not in exact][: budget - len(exact)]
        rows: dict[Unit, torch.Tensor] = {}
        raw = patch_units(model, batch, base, source_cache, grid, [units[i] for i in todo],
                          metric, max_rows, per_prompt=rows)
        exact.update({i: raw[units[i]] - base_m for i in todo})
        exact_rows.update({u: r - base_rows for u, r in rows.items()})

    def error(i: int) -> float:
        s = float(scores[i])
        return (abs(exact[i]) - s) / (s + tau)

    head = set(ranked[:k]) if calibrate == "tail" else set()
    gen = torch.Generator().manual_seed(seed)
    tail = ranked[k:]
    n_spot = min(len(tail), budget - k,
                 min(32, n_units // 20) if spot is None else spot)
    spot_idx = [tail[i] for i in torch.randperm(len(tail), generator=gen)[:max(n_spot, 0)]]
    # the spot checks and the first round share passes (units are batched per layer)
    verify(spot_idx + [i for i in ranked[:step] if i not in set(spot_idx)])
    rounds, cursor, stopped = [], 0, "all"
    threshold = upper = rho = 0.0
    while True:
        while cursor < n_units and ranked[cursor] in exact:
            cursor += 1
        if cursor < n_units and len(exact) < budget:
            verify(ranked[cursor: cursor + step])
            while cursor < n_units and ranked[cursor] in exact:
                cursor += 1
        verified = sorted(exact, key=lambda i: -abs(exact[i]))
        rho = max(0.0, *(error(i) for i in exact if i not in head))
        remaining = [i for i in ranked[cursor:] if i not in exact]
        threshold = abs(exact[verified[k - 1]]) if len(verified) >= k else 0.0
        if remaining:
            s_next = float(scores[remaining[0]])
            upper = s_next + rho * (s_next + tau)
        else:
            upper = 0.0
        rounds.append({"n_exact": len(exact), "threshold": threshold, "upper": upper,
                       "rho": rho})
        if not remaining:
            stopped = "all"
            break
        if len(verified) >= k and threshold > upper:
            stopped = "bound"
            break
        if len(exact) >= budget:
            stopped = "budget"
            break
    spot_errors = [error(i) for i in spot_idx]
    risk = _risk(spot_errors, scores[remaining], threshold, tau) if remaining else 0.0
    if not math.isfinite(risk):
        risk = 1.0
    top = [(units[i], exact[i]) for i in verified[:k]]
    source_m = estimate.source_metric
    return LocateResult(grid, direction, metric, method, k, top,
                        {units[i]: v for i, v in exact.items()}, len(exact), n_units, stopped,
                        threshold, upper, rho, tau, risk, [units[i] for i in spot_idx],
                        estimate, base_m, source_m, rounds, exact_rows)
