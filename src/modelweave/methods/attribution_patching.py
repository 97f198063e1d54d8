"""Attribution patching: a first-order estimate of every patch from one forward and one
backward pass.

The effect of replacing an activation ``a`` of the base run by ``a'`` on the metric ``m`` is
estimated as ``(a' - a) · ∂m/∂a``, summed over the unit's slice (a head's ``d_head`` values, a
position's ``d_model`` values, a neuron...). The gradient comes from one backward pass of the
base run; ``a'`` from one forward pass of the source run. This is AtP* with both of its fixes
off (:func:`~modelweave.methods.atp_star.atp_star` with ``qk_fix=False, grad_drop=False``),
which computes it; here it is reported like exact patching: base metric + estimate,
normalised so 1 = clean, 0 = corrupted.
"""

from __future__ import annotations

from ..models import Model
from ..tasks import TaskBatch, TaskError
from .atp_star import atp_star
from .grids import GRIDS
from .result import PatchingResult


def attribution_sweep(model: Model, batch: TaskBatch, grid: str, *,
                      direction: str = "denoising", metric: str = "logit_diff",
                      layers: list[int] | None = None,
                      indices: list[int] | None = None) -> PatchingResult:
    """Attribution-patching estimate of every unit of ``grid`` (same grids, directions and
    normalisation as :func:`~modelweave.methods.activation_patching.patch_sweep`); the
    result's ``method`` is ``"attribution"``."""
    if grid not in GRIDS:
        raise TaskError(f"unknown grid {grid!r}; grids: {', '.join(GRIDS)}")
    estimate = atp_star(model, batch, grid, direction=direction, metric=metric, layers=layers,
                        indices=indices, qk_fix=False, grad_drop=False)
    return estimate.to_result(model, batch, method="attribution")
