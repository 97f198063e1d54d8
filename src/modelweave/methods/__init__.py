"""Methods: activation and attribution patching over node grids (:func:`patch`, the one call
for every patching method), lenses, head roles, steering, influence."""

from .activation_patching import patch_sweep, patch_units
from .attribution_patching import attribution_sweep
from .grids import GRIDS, SITES, Unit, grid_units
from .naive_patching import naive_patch
from .patching import Patching, patch
from .result import PatchingResult, normalize

__all__ = ["GRIDS", "SITES", "Patching", "PatchingResult", "Unit", "attribution_sweep",
           "grid_units", "naive_patch", "normalize", "patch", "patch_sweep", "patch_units"]
