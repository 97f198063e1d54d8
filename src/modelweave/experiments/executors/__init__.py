"""Executors: how the unfinished units of a run get computed.

- ``sequential`` (default): one after another in this process (:mod:`.sequential`).
- ``ray``: Ray actors on this machine or a cluster, model-major, recycled (:mod:`.on_ray`).

An executor is a module with ``open_session(job) -> close`` (connect to what it runs on; called
before anything is written, so a bad address leaves the run directory untouched) and
``execute(units, job)``, which computes every unit in ``units`` (all unfinished, model-major
order) and calls ``job.report(unit, report)`` once per unit as its
:class:`~modelweave.experiments.worker.UnitReport` arrives. Units commit themselves to the store
(atomically, in the worker); the driver only keeps the manifest and the progress display.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from ...errors import ModelWeaveError
from ...progress import Progress
from ..config import Experiment, Unit
from ..worker import UnitReport

EXECUTORS = ("sequential", "ray")


@dataclass
class Job:
    """What an executor needs from the driver.

    Attributes:
        root: the run directory.
        experiment: the experiment.
        force: recompute finished units (their old copies are replaced).
        report: called once per unit with its report (driver side).
        progress: ``progress(unit)`` gives the :data:`~modelweave.progress.Progress` callable
            a unit's method reports its phases to (in-process executors only; Ray workers
            report none).
        options: executor options (Ray: address, workers, recycle_after, max_worker_memory,
            resources per model).
    """

    root: Path
    experiment: Experiment
    force: bool
    report: Callable[[Unit, UnitReport], None]
    progress: Callable[[Unit], Progress] | None = None
    options: dict = field(default_factory=dict)


def get_executor(name: str) -> ModuleType:
    """The executor module called ``name`` (``sequential`` or ``ray``)."""
    if name == "sequential":
        from . import sequential as executor
    elif name == "ray":
        from . import on_ray as executor
    else:
        raise ModelWeaveError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    return executor


__all__ = ["EXECUTORS", "Job", "get_executor"]
