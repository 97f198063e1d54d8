"""The patching engine: declarative interventions and suffix-only exact recomputation."""

from .interventions import KINDS, Intervention, intervene
from .suffix import BaseRun, base_run, run_suffix, supports_suffix

__all__ = ["KINDS", "BaseRun", "Intervention", "base_run", "intervene", "run_suffix",
           "supports_suffix"]
