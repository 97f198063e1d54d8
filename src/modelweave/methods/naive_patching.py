"""The reference loop: one full forward pass per patch. Slow by design; the fast engine is
tested and benchmarked against it."""

from __future__ import annotations

import torch

from ..metrics.scores import metric_on_last
from ..models import Model
from ..tasks import TaskBatch
from .grids import SITES, Unit


def naive_patch(model: Model, batch: TaskBatch, grid: str, units: list[Unit],
                direction: str = "denoising", metric: str = "logit_diff") -> dict[Unit, float]:
    """Raw metric (mean over prompts) of each unit, each from a full patched forward pass."""
    base, source = ((batch.corrupt, batch.clean) if direction == "denoising"
                    else (batch.clean, batch.corrupt))
    kind = SITES[grid]
    names = sorted({f"blocks.{u.layer}.{kind}" for u in units})
    _, cache = model.run_with_cache(source, names)
    rows, last = torch.arange(len(batch)), batch.lengths - 1
    out = {}
    for unit in units:
        src = cache[f"blocks.{unit.layer}.{kind}"]

        def patch(tensor, hook, unit=unit, src=src):
            tensor = tensor.clone()
            pos = slice(None) if unit.pos is None else unit.pos
            if unit.index is None:
                tensor[:, pos] = src[:, pos]
            else:
                tensor[:, pos, unit.index] = src[:, pos, unit.index]
            return tensor

        logits = model.run_with_hooks(base, [(f"blocks.{unit.layer}.{kind}", patch)])
        out[unit] = metric_on_last(metric, logits[rows, last], batch).mean().item()
    return out
