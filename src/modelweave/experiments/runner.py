"""Running an experiment: every unfinished unit into a :class:`RunStore`, by an executor
(sequential in this process, or Ray), each unit by its method kind's ``run``.

The driver's steps: connect the executor (a bad Ray address fails here, before anything is
written); plan the unfinished units from their models' configs (a unit that cannot fit fails
here, before anything is written; a batch size that would not fit is lowered); open the store
(stale temporaries and staging folders of killed runs go); hand the units, model-major, to the
executor; note each finished unit in the manifest as its
report arrives; render the report. A unit whose method raises is recorded in ``failed/`` with
its traceback and the others go on; :attr:`RunOutcome.failed` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..progress import Progress
from .config import Experiment, Unit
from .executors import Job, get_executor
from .planning import check_device_map, plan_run
from .store import RunStore, remove_stale_staging, unit_settings
from .worker import UnitReport


@dataclass
class RunOutcome:
    """What :func:`run_experiment` did: units computed, skipped as already finished, failed
    (their records: ``RunStore.failures()``); ``stale``: finished units recomputed because
    their settings (parameters, seeds, ``n``, ``seed``, ``dtype``) changed."""

    root: Path
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    report: Path | None = None


def run_experiment(experiment: Experiment, out: str | Path, *, force: bool = False,
                   on_unit: Callable[[Unit, str, dict | None, float], None] | None = None,
                   report: bool = True,
                   progress: Callable[[Unit], Progress] | None = None,
                   executor: str = "sequential", options: dict | None = None,
                   memory: int | None = None, plan: bool = True) -> RunOutcome:
    """Run every unit of ``experiment`` under ``out``, skipping finished ones, then render
    ``report.html``.

    Args:
        force: recompute finished units too (each replaced when its new copy is committed).
        report: render the report at the end.
        on_unit: called after each unit as ``(unit, status, summary, seconds)``, status
            ``"done"``, ``"skipped"``, ``"failed"`` (summary: ``{"error": ...}``) or ``"taken"``
            (another worker of the same run directory finished it first).
        progress: ``progress(unit)`` gives the ``progress(phase, done, total)`` callable
            (:mod:`modelweave.progress`) a unit's method reports its phases to (sequential
            executor only).
        executor: ``"sequential"`` (this process) or ``"ray"`` (see
            :mod:`modelweave.experiments.executors.on_ray`; needs the ``ray`` extra).
        options: the executor's options (Ray: ``address``, ``workers``, ``cpus_per_worker``,
            ``gpus_per_worker``, ``recycle_after``, ``max_worker_memory``, ``retries``).
        memory: bytes each unit may use (a GPU's memory; RAM on CPU); default: what the
            device has. Units are planned against it (:mod:`.planning`).
        plan: plan units first (refuse what cannot fit, size batches, Ray memory requests).

    Raises:
        ModelWeaveError: the executor cannot start (Ray missing, address unreachable), or
            ``UnitTooLargeError``: a unit cannot fit ``memory``. Nothing is written then.
    """
    store = RunStore(out)
    outcome = RunOutcome(store.root)

    def on_report(unit: Unit, result: UnitReport) -> None:
        if result.status == "done":
            store.record_finished(unit.id, result.record)
            outcome.computed.append(unit.id)
        elif result.status == "failed":
            outcome.failed.append(unit.id)
        if on_unit:
            summary = result.summary if result.status != "failed" else {"error": result.error}
            on_unit(unit, result.status, summary, result.seconds)

    job = Job(store.root, experiment, force, on_report, progress, dict(options or {}))
    chosen = get_executor(executor)
    close = chosen.open_session(job)
    try:
        pending, skipped = [], []
        for unit in experiment.units():
            current = store.is_current(unit, unit_settings(unit, experiment))
            if not current and store.is_done(unit):
                outcome.stale.append(unit.id)  # same id, other settings: computed again
            (skipped if current and not force else pending).append(unit)
        outcome.skipped = [unit.id for unit in skipped]
        check_device_map(experiment)
        if plan and pending:
            planned = plan_run(experiment, pending, memory)
            pending = planned.units
            job.options.setdefault("memory", planned.memory)
        store.start(experiment)
        for unit in skipped if on_unit else ():
            on_unit(unit, "skipped", None, 0.0)
        if pending:
            chosen.execute(pending, job)
    finally:
        close()
    remove_stale_staging(store.root / "staging")  # workers of a killed driver, gone by now
    if report:
        from .page import build_report

        outcome.report = build_report(store.root)
    return outcome
