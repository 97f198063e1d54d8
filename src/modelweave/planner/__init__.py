"""Memory and time planning from a model's config alone (no weights): weights, activations,
caches and gradients per method, the largest batch that fits, FLOPs and estimated seconds.

``plan_unit`` plans a unit from its :class:`PlanSpec` (a memory kind, never a method name);
the experiment runner and ``modelweave plan`` reach it through the method kinds
(``modelweave.experiments.plan_method``); ``docs/planner.md``
gives the formulas and the measured check (``bench/plan.py``).
"""

from .plan import (
    CPU_RUNTIME,
    CUDA_RUNTIME,
    DEFAULT_SEQ,
    HEADROOM,
    Plan,
    PlanSpec,
    plan_unit,
)
from .shape import ModelShape, PlanError, count_params, load_config, model_shape
from .sizes import SizeError, format_size, parse_size

__all__ = ["CPU_RUNTIME", "CUDA_RUNTIME", "DEFAULT_SEQ", "HEADROOM", "ModelShape", "Plan",
           "PlanError", "PlanSpec", "SizeError", "count_params", "format_size", "load_config",
           "model_shape", "parse_size", "plan_unit"]
