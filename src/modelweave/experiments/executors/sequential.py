"""The default executor: every unit in this process, one after another, one model loaded at a
time (units arrive model-major)."""

from __future__ import annotations

from ..config import Unit
from ..worker import UnitWorker
from . import Job


def open_session(job: Job):
    """Nothing to connect to; returns a no-op closer."""
    return lambda: None


def execute(units: list[Unit], job: Job) -> None:
    """Compute ``units`` in order with one in-process :class:`UnitWorker`."""
    worker = UnitWorker(job.root, job.experiment, force=job.force)
    try:
        for unit in units:
            job.report(unit, worker.run(unit, job.progress(unit) if job.progress else None))
    finally:
        worker.release()
