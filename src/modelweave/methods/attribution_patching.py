"""Attribution patching: a first-order estimate of every patch from one forward and one
backward pass.

The effect of replacing an activation ``a`` of the base run by ``a'`` on the metric ``m`` is
estimated as ``(a' - a) · ∂m/∂a``, summed over the unit's slice (a head's ``d_head`` values, a
position's ``d_model`` values, a neuron...). The gradient comes from one backward pass of the
base run; ``a'`` from one forward pass of the source run. Results are reported like exact
patching: base metric + estimate, normalised so 1 = clean, 0 = corrupted.
"""

from __future__ import annotations

import torch

from ..metrics.scores import metric_on_last
from ..models import Model
from ..tasks import TaskBatch
from .grids import SITES, Unit, check_sweep, grid_units
from .result import PatchingResult


def _base_with_grads(model: Model, tokens: torch.Tensor, batch: TaskBatch, names: list[str],
                     metric: str) -> tuple[dict, dict, torch.Tensor]:
    """Activations of ``names`` in a run of ``tokens``, their gradients of the mean metric,
    and the run's last-position logits."""
    acts: dict[str, torch.Tensor] = {}

    def keep(tensor, hook):
        acts[hook.name] = tensor.clone()  # a node on the path, so it receives a gradient
        return acts[hook.name]

    with torch.enable_grad():
        logits = model.run_with_hooks(tokens, [(n, keep) for n in names], grad=True)
        last = logits[:, -1]
        value = metric_on_last(metric, last, batch).mean()
        grads = torch.autograd.grad(value, [acts[n] for n in names])
    return ({n: a.detach() for n, a in acts.items()}, dict(zip(names, grads, strict=True)),
            last.detach())


def _unit_score(unit: Unit, product: torch.Tensor) -> float:
    """Sum of (a' - a) · grad over the unit's slice and the prompts; ``product`` is that
    product, [B, P, ...] (the gradient is of the mean metric, so this is the mean effect)."""
    x = product if unit.pos is None else product[:, unit.pos: unit.pos + 1]
    if unit.index is not None:
        x = x[:, :, unit.index]
    return float(x.sum())


def attribution_sweep(model: Model, batch: TaskBatch, grid: str, *,
                      direction: str = "denoising", metric: str = "logit_diff",
                      layers: list[int] | None = None,
                      indices: list[int] | None = None) -> PatchingResult:
    """Attribution-patching estimate of every unit of ``grid`` (same grids, directions and
    normalisation as :func:`~modelweave.methods.activation_patching.patch_sweep`)."""
    check_sweep(batch, direction)
    units, axes = grid_units(model, grid, batch.clean.shape[1], layers, indices)
    names = sorted({f"blocks.{u.layer}.{SITES[grid]}" for u in units})
    base_tokens, source_tokens = ((batch.corrupt, batch.clean) if direction == "denoising"
                                  else (batch.clean, batch.corrupt))
    base_acts, grads, base_last = _base_with_grads(model, base_tokens, batch, names, metric)
    source_logits, source = model.run_with_cache(source_tokens, names)
    base_m = metric_on_last(metric, base_last, batch).mean().item()
    source_m = metric_on_last(metric, source_logits[:, -1], batch).mean().item()
    # float32 from bf16/fp16 activations: the differences, products and their sums
    products = {n: (source[n].float() - base_acts[n].float()) * grads[n].float() for n in names}
    raw = {u: base_m + _unit_score(u, products[f"blocks.{u.layer}.{SITES[grid]}"])
           for u in units}
    clean_m, corrupt_m = (source_m, base_m) if direction == "denoising" else (base_m, source_m)
    return PatchingResult.from_units(model, batch, grid, direction, metric, axes, units, raw,
                                     clean_m, corrupt_m, method="attribution")
