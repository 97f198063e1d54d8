"""One worker's side of a run: keep a model loaded, compute units into the store.

Both executors use :class:`UnitWorker`: the sequential one in the driver's process, the Ray one
inside each worker actor. A unit is computed into a staging folder and committed atomically
(:meth:`RunStore.commit`); when its method raises, the failure is recorded with its traceback
(:meth:`RunStore.fail`) and the worker goes on with the next unit.
"""

from __future__ import annotations

import gc
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..progress import Progress
from .config import Experiment, Unit
from .methods import get_method
from .seeds import run_seeds
from .store import RunStore, unit_settings


@dataclass
class UnitReport:
    """What happened to one unit: ``done``, ``failed``, or ``taken`` (another worker
    committed it first; this worker's copy was discarded)."""

    unit_id: str
    status: str
    seconds: float = 0.0
    summary: dict | None = None
    record: dict | None = None
    error: str | None = None
    worker: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def resident_bytes() -> tuple[int, int]:
    """This process's resident memory now and its high-water mark, in bytes (Linux's
    ``/proc/self/status``; ``(0, 0)`` elsewhere)."""
    now = peak = 0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    except OSError:
        pass
    return now, peak


class UnitWorker:
    """Computes units of one run directory, keeping the last model loaded between units.

    Args:
        root: the run directory (shared by every worker of a run).
        experiment: the experiment (its device and dtype say how models load).
        force: replace finished copies (a forced recompute).
    """

    def __init__(self, root: str | Path, experiment: Experiment, *, force: bool = False):
        self.store = RunStore(root)
        self.experiment = experiment
        self.force = force
        self.model_name: str | None = None
        self.model = None
        self.units_run = 0

    def _model(self, name: str):
        if name != self.model_name:
            self.release()  # one model in memory at a time
            from ..models import load_model

            self.model = load_model(name, device=self.experiment.device,
                                    dtype=self.experiment.dtype,
                                    device_map=self.experiment.device_map)
            self.model_name = name
        return self.model

    def release(self) -> None:
        """Drop the loaded model and give its memory back (GPU caches too)."""
        self.model = self.model_name = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch is a dependency
            pass

    def facts(self) -> dict:
        """Where this worker runs: host, pid, resident memory now and at its peak."""
        now, peak = resident_bytes()
        return {"host": socket.gethostname(), "pid": os.getpid(), "rss_bytes": now,
                "peak_rss_bytes": peak, "units_run": self.units_run}

    def run(self, unit: Unit, progress: Progress = None) -> UnitReport:
        """Compute ``unit`` and commit it; a method's exception becomes a ``failed`` report
        (recorded in the store), never an exception here. Interrupts propagate (the staging
        folder is cleared when the run restarts)."""
        start = time.perf_counter()
        staged = None
        self.units_run += 1
        try:
            model = self._model(unit.model)
            start = time.perf_counter()  # the unit's time, not its model's loading
            staged = self.store.stage(unit)
            summary = run_seeds(get_method(unit.method), model, unit, self.experiment, staged,
                                progress)  # the kind's run, once per seed (K = unit.seeds)
            seconds = time.perf_counter() - start
            extra = {"run": _run_facts(model), "worker": self.facts(),
                     "settings": unit_settings(unit, self.experiment)}
            record = self.store.commit(unit, staged, summary, seconds, extra, replace=self.force)
        except Exception as err:  # noqa: BLE001 - every failure is recorded, the run goes on
            seconds = time.perf_counter() - start
            if staged is not None:
                import shutil

                shutil.rmtree(staged, ignore_errors=True)
            failure = self.store.fail(unit, err, seconds, {"worker": self.facts()})
            return UnitReport(unit.id, "failed", seconds, error=failure["error"],
                              record=failure, worker=failure["worker"])
        status = "done" if record is not None else "taken"
        return UnitReport(unit.id, status, seconds, summary, record, worker=self.facts())


def _run_facts(model) -> dict:
    """How the unit's model ran: attention implementation, dtype, devices (JSON-ready)."""
    return model.run_info()
