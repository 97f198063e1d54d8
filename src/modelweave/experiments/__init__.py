"""Experiments as files: validated configs, units, a resumable results store, a runner.

- :func:`load_experiment` / :func:`parse_experiment`: YAML -> :class:`Experiment` -> units.
- :func:`run_experiment`: plan, then compute every unfinished unit into a :class:`RunStore`,
  by an executor (:mod:`.executors`: sequential, or Ray workers on this machine or a cluster).
- :class:`RunStore`: manifest, units staged and committed atomically, failures, records and a
  dataframe of results.
- :class:`MethodKind` + :func:`register`: what a method (``eval``, ``patch``, ...) is; one
  module per method under :mod:`.methods` (the contract is in :mod:`.methods.base`; the
  registry itself, ``METHODS`` and ``get_method``, is :mod:`.methods`'s).
- :func:`build_report`: the run page ``RUN/report.html`` (:mod:`.page`).
- :func:`plan_method`: the memory and time plan of one unit of a method (:mod:`.planning`).
"""

from .config import METHOD_PARAMS, ConfigError, Experiment, Unit, load_experiment, parse_experiment
from .methods import MethodKind, ReportContext, register, unregister
from .page import build_report
from .planning import plan_method
from .runner import RunOutcome, run_experiment
from .store import RunStore

__all__ = ["METHOD_PARAMS", "ConfigError", "Experiment", "MethodKind", "ReportContext",
           "RunOutcome", "RunStore", "Unit", "build_report", "load_experiment", "parse_experiment",
           "plan_method", "register", "run_experiment", "unregister"]
