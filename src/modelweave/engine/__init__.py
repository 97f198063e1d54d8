"""The patching engine: suffix-only exact patching, batched over many patches."""

from .naive import naive_patch
from .patching import GRIDS, Unit, grid_units, patch_sweep, patch_units
from .result import PatchingResult, normalize
from .suffix import BaseRun, base_run, run_suffix

__all__ = ["GRIDS", "BaseRun", "PatchingResult", "Unit", "base_run", "grid_units",
           "naive_patch", "normalize", "patch_sweep", "patch_units", "run_suffix"]
