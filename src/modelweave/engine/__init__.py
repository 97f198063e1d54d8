"""The patching engine: declarative interventions and suffix-only exact patching, batched
over many patches."""

from .attribution import attribution_sweep
from .interventions import KINDS, Intervention, intervene
from .naive import naive_patch
from .patching import GRIDS, Unit, grid_units, patch_sweep, patch_units
from .result import PatchingResult, normalize
from .suffix import BaseRun, base_run, run_suffix

__all__ = ["GRIDS", "KINDS", "BaseRun", "Intervention", "PatchingResult", "Unit",
           "attribution_sweep", "base_run",
           "grid_units", "intervene", "naive_patch", "normalize", "patch_sweep", "patch_units",
           "run_suffix"]
