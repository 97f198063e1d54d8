"""Exact activation-patching sweeps over node grids, on the suffix-only fast path.

Grids (each unit is one patch; its result is the task metric, normalised so 1 = clean run,
0 = corrupted run):

=============  =====================================  ===========================
grid           unit                                   axes
=============  =====================================  ===========================
resid          ``hook_resid_pre`` of layer L at pos p  layer x pos
attn           ``hook_attn_out`` of layer L at pos p   layer x pos
mlp            ``hook_mlp_out`` of layer L at pos p    layer x pos
heads          ``hook_z`` of head h, every position    layer x head
heads-by-pos   ``hook_z`` of head h at pos p           layer x head x pos
neurons        ``mlp.hook_post`` neuron n, every pos   layer x neuron
=============  =====================================  ===========================

*Denoising* patches clean activations into the corrupted run; *noising* patches corrupted
activations into the clean run. Units are grouped by layer and sorted by position; a chunk of
units runs as one suffix pass (:func:`~modelweave.engine.suffix.run_suffix`) starting at the
chunk's earliest position, with the batch stacked once per unit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..engine.suffix import BaseRun, base_run, run_suffix, supports_suffix
from ..metrics.scores import metric_on_last
from ..models import Model
from ..progress import Progress, Steps
from ..tasks import TaskBatch
from .grids import SITES, Unit, check_sweep, grid_units
from .result import PatchingResult


def _patch_hook(units: list[Unit], start: int, batch: int, source: torch.Tensor
                ) -> Callable:
    """A hook writing each unit's source values into its own copy of the batch.

    ``source``: the site in the source run, [batch, pos, ...]."""

    def hook(tensor: torch.Tensor, _hook) -> torch.Tensor:
        out = tensor.clone()
        src = source.to(out.device)  # the site's layer may sit on another device
        view = out.view(len(units), batch, *out.shape[1:])
        for g, unit in enumerate(units):
            pos = slice(start, None) if unit.pos is None else unit.pos
            rel = slice(None) if unit.pos is None else unit.pos - start
            if unit.index is None:
                view[g, :, rel] = src[:, pos]
            else:  # heads and neurons are axis 2 of their sites
                view[g, :, rel, unit.index] = src[:, pos, unit.index]
        return out

    return hook


def _first_change(unit: Unit, source: torch.Tensor, base: torch.Tensor) -> int | None:
    """First position at which the unit's source values differ from the base run's, or None
    when they are identical (then the patch changes nothing and needs no pass)."""
    pos = slice(None) if unit.pos is None else slice(unit.pos, unit.pos + 1)
    src, old = source[:, pos], base[:, pos]
    if unit.index is not None:
        src, old = src[:, :, unit.index], old[:, :, unit.index]
    changed = (src != old).transpose(0, 1)
    differs = changed.reshape(changed.shape[0], -1).any(dim=1).nonzero()
    if not len(differs):
        return None
    return int(differs[0]) + (unit.pos or 0)


def _chunks(starts: dict[Unit, int], size: int) -> list[list[Unit]]:
    by_layer: dict[int, list[Unit]] = {}
    for unit in starts:
        by_layer.setdefault(unit.layer, []).append(unit)
    out = []
    for layer_units in by_layer.values():
        ordered = sorted(layer_units, key=starts.__getitem__)
        out += [ordered[i:i + size] for i in range(0, len(ordered), size)]
    return out


def patch_units(model: Model, batch: TaskBatch, base: BaseRun, source_cache, grid: str,
                units: list[Unit], metric: str = "logit_diff", max_rows: int = 512,
                progress: Progress = None,
                per_prompt: dict[Unit, torch.Tensor] | None = None) -> dict[Unit, float]:
    """Metric (mean over the batch, raw) of each unit's patched run, on the fast path.

    ``base`` must hold the patched sites (``base_run(..., sites=...)``): units whose source
    values equal the base run's get the base run's metric without a pass. ``progress`` phase
    ``"patch"``: units done of ``len(units)``. ``per_prompt``: a dict that receives each
    unit's [N] per-prompt metric (float32, CPU) from the same passes."""
    kind, n = SITES[grid], len(batch)
    base_rows = metric_on_last(metric, base.last_logits, batch)
    base_metric = base_rows.mean().item()
    if per_prompt is not None:
        base_rows = base_rows.reshape(-1).detach().float().cpu()
    size = max(1, max_rows // n)
    results: dict[Unit, float] = {}
    starts = {}
    for unit in units:
        name = f"blocks.{unit.layer}.{kind}"
        first = _first_change(unit, source_cache[name], base.sites[name])
        if first is None:
            results[unit] = base_metric
            if per_prompt is not None:
                per_prompt[unit] = base_rows
        else:
            starts[unit] = first
    steps = Steps(progress, "patch", len(units), len(results))
    # Layer kinds the suffix runner cannot start mid-model (chunked or linear attention; see
    # supports_suffix) get batched full passes instead. Full and sliding-window layers, mixed
    # or not, take the suffix path.
    skip_layers = supports_suffix(model)
    for chunk in _chunks(starts, size):
        layer = chunk[0].layer
        first_layer = layer if skip_layers else 0
        start = min(starts[u] for u in chunk) if skip_layers else 0
        source = source_cache[f"blocks.{layer}.{kind}"]
        hook = _patch_hook(chunk, start, n, source)
        if kind == "hook_resid_pre" and skip_layers:
            resid = base.resid_pre[layer][:, start:].repeat(len(chunk), 1, 1)
            last = run_suffix(model, base, layer, start, len(chunk), resid=hook(resid, None))
        else:
            with model.hooks([(f"blocks.{layer}.{kind}", hook)]):
                last = run_suffix(model, base, first_layer, start, len(chunk))
        rows = metric_on_last(metric, last, batch)
        values = rows.mean(dim=1)
        results.update(zip(chunk, values.tolist(), strict=True))
        if per_prompt is not None:
            per_prompt.update(zip(chunk, rows.detach().float().cpu(), strict=True))
        steps.advance(len(chunk))
    return results


def patch_sweep(model: Model, batch: TaskBatch, grid: str, *, direction: str = "denoising",
                metric: str = "logit_diff", layers: list[int] | None = None,
                indices: list[int] | None = None, max_rows: int = 512,
                progress: Progress = None) -> PatchingResult:
    """Exact activation patching of every unit of ``grid`` (see the module docstring).

    Args:
        direction: ``"denoising"`` (clean into corrupted) or ``"noising"`` (corrupted into
            clean).
        layers, indices: restrict the grid to these layers / heads / neurons.
        max_rows: rows per forward pass (units x prompts); bounds memory.
        progress: phase ``"patch"``: units patched of all.

    Returns:
        :class:`PatchingResult` with the normalised grid (1 = clean, 0 = corrupted).
    """
    check_sweep(batch, direction)
    units, axes = grid_units(model, grid, batch.clean.shape[1], layers, indices)
    clean_tokens, corrupt_tokens = batch.clean, batch.corrupt
    base_tokens, source_tokens = ((corrupt_tokens, clean_tokens) if direction == "denoising"
                                  else (clean_tokens, corrupt_tokens))
    site_names = sorted({f"blocks.{u.layer}.{SITES[grid]}" for u in units})
    source_logits, source_cache = model.run_with_cache(source_tokens, site_names)
    base_logits, base = base_run(model, base_tokens, site_names)
    clean_logits, corrupt_logits = ((source_logits, base_logits) if direction == "denoising"
                                    else (base_logits, source_logits))
    last = batch.lengths - 1
    rows = torch.arange(len(batch))
    clean_rows = metric_on_last(metric, clean_logits[rows, last], batch).reshape(-1)
    corrupt_rows = metric_on_last(metric, corrupt_logits[rows, last], batch).reshape(-1)
    per_prompt: dict[Unit, torch.Tensor] = {}
    raw = patch_units(model, batch, base, source_cache, grid, units, metric, max_rows, progress,
                      per_prompt)
    return PatchingResult.from_units(model, batch, grid, direction, metric, axes, units, raw,
                                     clean_rows.mean().item(), corrupt_rows.mean().item(),
                                     per_prompt=per_prompt,
                                     clean_rows=clean_rows, corrupt_rows=corrupt_rows)
