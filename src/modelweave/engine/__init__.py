"""The patching engine: declarative interventions, the ablation helper (zero / mean / resample)
and suffix-only exact recomputation."""

from .ablation import (
    AblationError,
    MeanAccumulator,
    Means,
    ablate,
    ablation_hook,
    reference_means,
    replacement,
)
from .interventions import KINDS, Intervention, intervene
from .suffix import BaseRun, base_run, run_suffix, supports_suffix

__all__ = ["KINDS", "AblationError", "BaseRun", "Intervention", "MeanAccumulator", "Means",
           "ablate", "ablation_hook", "base_run", "intervene", "reference_means", "replacement",
           "run_suffix", "supports_suffix"]
