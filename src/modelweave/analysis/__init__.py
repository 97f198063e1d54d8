"""Analyses across models and tasks: comparing circuits, cross-model activation patching."""

from .cmap import CMAPResult, GroupRecovery, cmap, cmap_nulls
from .compare import (
    Overlap,
    OverlapNull,
    by_role,
    components,
    depth_overlap,
    depth_profile,
    node_universe,
    overlap,
    overlap_null,
    shared_components,
    transfer_faithfulness,
)

__all__ = ["CMAPResult", "GroupRecovery", "Overlap", "OverlapNull", "by_role", "cmap",
           "cmap_nulls", "components", "depth_overlap", "depth_profile", "node_universe",
           "overlap", "overlap_null", "shared_components", "transfer_faithfulness"]
