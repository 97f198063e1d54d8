"""Experiments as files: validated configs, units, a resumable results store, a runner.

- :func:`load_experiment` / :func:`parse_experiment`: YAML -> :class:`Experiment` -> units.
- :func:`run_experiment`: compute every unfinished unit into a :class:`RunStore`.
- :class:`RunStore`: manifest, atomic unit folders, records and a dataframe of results.
"""

from .config import METHOD_PARAMS, ConfigError, Experiment, Unit, load_experiment, parse_experiment
from .runner import RunOutcome, run_experiment
from .store import RunStore

__all__ = ["METHOD_PARAMS", "ConfigError", "Experiment", "RunOutcome", "RunStore", "Unit",
           "load_experiment", "parse_experiment", "run_experiment"]
