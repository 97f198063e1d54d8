"""Analyses built on stored results: comparing circuits across models and tasks."""

from .compare import (
    Overlap,
    by_role,
    components,
    depth_overlap,
    depth_profile,
    overlap,
    shared_components,
    transfer_faithfulness,
    upset_figure,
)

__all__ = ["Overlap", "by_role", "components", "depth_overlap", "depth_profile", "overlap",
           "shared_components", "transfer_faithfulness", "upset_figure"]
