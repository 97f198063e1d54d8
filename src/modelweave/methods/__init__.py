"""Methods on nodes: activation and attribution patching over node grids (:func:`patch`, the one
call for every patching method, exported here), and, by module, AtP* (:mod:`.atp_star`), locating
(:mod:`.locate`), the logit lens (:mod:`.lens`), direct logit attribution (:mod:`.dla`), head
roles (:mod:`.head_roles`); steering and function vectors (:mod:`.steering`), influence functions
(:mod:`.influence`)."""

from .activation_patching import patch_sweep, patch_units
from .attribution_patching import attribution_sweep
from .grids import GRIDS, SITES, Unit, grid_units
from .naive_patching import naive_patch
from .patching import Patching, patch
from .result import PatchingResult

__all__ = ["GRIDS", "SITES", "Patching", "PatchingResult", "Unit", "attribution_sweep",
           "grid_units", "naive_patch", "patch", "patch_sweep", "patch_units"]
