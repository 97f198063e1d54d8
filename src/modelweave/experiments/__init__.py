"""Experiments as files: validated configs, units, a resumable results store, a runner.

- :func:`load_experiment` / :func:`parse_experiment`: YAML -> :class:`Experiment` -> units.
- :func:`run_experiment`: plan, then compute every unfinished unit into a :class:`RunStore`,
  by an executor (:mod:`.executors`: sequential, or Ray workers on this machine or a cluster).
- :class:`RunStore`: manifest, units staged and committed atomically, failures, records and a
  dataframe of results.
- :class:`MethodKind` + :func:`register`: what a method (``eval``, ``patch``, ...) is; one
  module per method under :mod:`.methods` (the contract is in :mod:`.methods.base`).
"""

from .config import METHOD_PARAMS, ConfigError, Experiment, Unit, load_experiment, parse_experiment
from .methods import METHODS, MethodKind, ReportContext, get_method, register, unregister
from .runner import RunOutcome, run_experiment
from .store import RunStore

__all__ = ["METHODS", "METHOD_PARAMS", "ConfigError", "Experiment", "MethodKind", "ReportContext",
           "RunOutcome", "RunStore", "Unit", "get_method", "load_experiment", "parse_experiment",
           "register", "run_experiment", "unregister"]
