"""Analyses across models and tasks: comparing circuits, cross-model activation patching."""

from .cmap import cmap
from .compare import (
    Overlap,
    by_role,
    components,
    depth_overlap,
    depth_profile,
    overlap,
    shared_components,
    transfer_faithfulness,
)

__all__ = ["Overlap", "by_role", "cmap", "components", "depth_overlap", "depth_profile", "overlap",
           "shared_components", "transfer_faithfulness"]
