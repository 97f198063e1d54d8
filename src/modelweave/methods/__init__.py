"""Methods: activation and attribution patching over node grids, (more to come: lenses,
circuit discovery)."""

from .activation_patching import patch_sweep, patch_units
from .attribution_patching import attribution_sweep
from .grids import GRIDS, SITES, Unit, grid_units
from .naive_patching import naive_patch
from .result import PatchingResult, normalize

__all__ = ["GRIDS", "SITES", "PatchingResult", "Unit", "attribution_sweep", "grid_units",
           "naive_patch", "normalize", "patch_sweep", "patch_units"]
