"""One call from a model and a task batch to a patched node grid, whichever the method:
exact suffix patching, attribution patching (AtP), AtP* (QK fix and GradDrop), or ``locate``
(AtP* ranking, exact verification of the top ``k``). The command line and the experiment
method ``patch`` both call :func:`patch`, as :func:`modelweave.circuits.discover` is the one
call for circuits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ModelWeaveError
from ..models import Model
from ..names import PATCH_ALIASES as ALIASES
from ..names import PATCH_DIRECTION, PATCH_GRID, PATCH_K, PATCH_METHOD
from ..names import PATCH_METHODS as METHODS
from ..progress import Progress
from ..tasks import TaskBatch
from .result import PatchingResult

# METHODS (in order of cost; exact is the default and the reference), ALIASES (``atp``: plain
# attribution patching) and the defaults of :func:`patch` are defined in :mod:`modelweave.names`


def patch_method(method: str) -> str:
    """``method`` with its alias resolved; a ``ModelWeaveError`` names the allowed ones."""
    method = ALIASES.get(method, method)
    if method not in METHODS:
        raise ModelWeaveError(f"unknown method {method!r}; methods: "
                              f"{', '.join([*METHODS, *ALIASES])}")
    return method


@dataclass
class Patching:
    """What :func:`patch` found.

    Attributes:
        result: the grid (normalised values, 1 = clean, 0 = corrupt).
        method: the method used (aliases resolved).
        exact: boolean mask of ``result.values``' shape, True where a value is an exact patch
            (all True for ``exact``, all False for the estimates).
        located: ``locate``'s full result (the verification record), else None.
    """

    result: PatchingResult
    method: str
    exact: torch.Tensor
    located: object | None = None

    def top(self, k: int = 10) -> list[dict]:
        """The ``k`` units that move the metric most: ``{"unit": {axis: label}, "value",
        "ci" ([low, high] over prompts, or None), "exact"}``."""
        r = self.result
        return [{"unit": {a: r.labels[a][i] for a, i in zip(r.axes, idx, strict=True)},
                 "value": value, "ci": r.interval(idx), "exact": bool(self.exact[idx])}
                for idx, value in r.top(k)]

    def summary(self, n: int) -> dict:
        """JSON-ready summary over ``n`` prompts: grid, method, direction, metric, clean and
        corrupt metric, the top ten units, the largest effect ``top_effect`` (normalised)
        with its 95% interval over prompts ``top_effect_ci``; with ``locate`` its
        verification (``locate``: k, n_exact, n_components, stopped, risk, ...)."""
        r = self.result
        top = self.top(10)
        out = {"grid": r.grid, "method": self.method, "direction": r.direction,
               "metric": r.metric, "n": n, "clean_metric": r.clean_metric,
               "corrupt_metric": r.corrupt_metric,
               "top_effect": top[0]["value"] if top else None,
               "top_effect_ci": top[0]["ci"] if top else None, "top": top}
        if self.located is not None:
            out["locate"] = {k: v for k, v in self.located.summary().items() if k != "top"}
        return out


def patch(model: Model, batch: TaskBatch, grid: str = PATCH_GRID, *,
          method: str = PATCH_METHOD, direction: str = PATCH_DIRECTION,
          layers: list[int] | None = None, k: int = PATCH_K,
          budget: int | None = None, progress: Progress = None) -> Patching:
    """Patch every unit of ``grid`` (see :data:`modelweave.methods.GRIDS`) with ``method``.

    Args:
        method: one of :data:`METHODS` (or an alias of :data:`ALIASES`): ``exact`` patches
            every unit (suffix recompute), ``attribution`` estimates all from one forward and
            backward pass, ``atp*`` adds the QK fix and GradDrop, ``locate`` finds the exact
            top ``k`` (at most ``budget`` exact patches) in AtP* order.
        direction: ``denoising`` (clean into corrupt) or ``noising``.
        layers: only these layers (default: all).
        progress: phase ``"patch"``: units patched of all (exact sweeps only).

    Returns:
        A :class:`Patching` with the grid, the mask of exact values and ``locate``'s record.
    """
    from .activation_patching import patch_sweep
    from .atp_star import atp_star
    from .attribution_patching import attribution_sweep
    from .grids import GRIDS
    from .locate import locate

    if grid not in GRIDS:
        raise ModelWeaveError(f"unknown grid {grid!r}; grids: {', '.join(GRIDS)}")
    method = patch_method(method)
    located = None
    if method == "attribution":
        result = attribution_sweep(model, batch, grid, direction=direction, layers=layers)
    elif method == "atp*":
        result = atp_star(model, batch, grid, direction=direction,
                          layers=layers).to_result(model, batch)
    elif method == "locate":
        located = locate(model, batch, grid, k=k, budget=budget, direction=direction,
                         layers=layers)
        result, mask = located.to_result(model, batch)
    else:
        result = patch_sweep(model, batch, grid, direction=direction, layers=layers,
                             progress=progress)
    if method != "locate":
        mask = torch.full(result.values.shape, method == "exact", dtype=torch.bool)
    return Patching(result, method, mask, located)
