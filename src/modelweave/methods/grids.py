"""Node grids for patching: which units a sweep patches and along which axes."""

from __future__ import annotations

from dataclasses import dataclass

from ..models import Model
from ..names import DIRECTIONS, GRIDS, SITES
from ..tasks import TaskBatch, TaskError

__all__ = ["DIRECTIONS", "GRIDS", "SITES", "Unit", "check_sweep", "grid_units"]


@dataclass(frozen=True)
class Unit:
    """One patch: a site of ``layer``, at ``pos`` (``None``: every position), on one head or
    neuron ``index`` (``None``: the whole site)."""

    layer: int
    pos: int | None
    index: int | None


def grid_units(model: Model, grid: str, length: int, layers: list[int] | None = None,
               indices: list[int] | None = None) -> tuple[list[Unit], tuple[str, ...]]:
    """Units of a grid, in row-major order of its axes, and the axis names."""
    if grid not in SITES:
        raise TaskError(f"unknown grid {grid!r}; grids: {', '.join(GRIDS)}")
    cfg = model.cfg
    layers = list(range(cfg.n_layers)) if layers is None else layers
    bad = [layer for layer in layers if not 0 <= layer < cfg.n_layers]
    if bad:
        raise TaskError(f"layer {bad[0]} out of range: layers are 0..{cfg.n_layers - 1}")
    width = cfg.n_heads if grid.startswith("heads") else cfg.d_mlp
    indices = list(range(width)) if indices is None else indices
    bad = [i for i in indices if not 0 <= i < width]
    if bad and grid in ("heads", "heads-by-pos", "neurons"):
        what = "head" if grid.startswith("heads") else "neuron"
        raise TaskError(f"{what} index {bad[0]} out of range (0..{width - 1})")
    positions = range(length)
    if grid in ("resid", "attn", "mlp"):
        return [Unit(L, p, None) for L in layers for p in positions], ("layer", "pos")
    if grid == "heads":
        return [Unit(L, None, h) for L in layers for h in indices], ("layer", "head")
    if grid == "heads-by-pos":
        return ([Unit(L, p, h) for L in layers for h in indices for p in positions],
                ("layer", "head", "pos"))
    return [Unit(L, None, n) for L in layers for n in indices], ("layer", "neuron")


def check_sweep(batch: TaskBatch, direction: str) -> None:
    """The preconditions every sweep shares: a known direction, prompts of one length."""
    if direction not in DIRECTIONS:
        raise TaskError(f"direction must be {' or '.join(map(repr, DIRECTIONS))}, got "
                        f"{direction!r}")
    if not batch.same_length:
        raise TaskError("patching needs prompts of one length: make_batch(..., "
                        "same_length=True)")
