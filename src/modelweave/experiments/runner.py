"""Running an experiment: every unfinished unit, in order, into a :class:`RunStore`; each unit
by its method kind's ``run``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .config import Experiment, Unit
from .methods import get_method
from .store import RunStore


@dataclass
class RunOutcome:
    """What :func:`run_experiment` did: units computed, units skipped as already finished."""

    root: Path
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    report: Path | None = None


def run_experiment(experiment: Experiment, out: str | Path, *, force: bool = False,
                   on_unit: Callable[[Unit, str, dict | None, float], None] | None = None,
                   report: bool = True,
                   progress: Callable[[Unit], Callable[[int], None]] | None = None
                   ) -> RunOutcome:
    """Run every unit of ``experiment`` under ``out``, skipping finished ones, then render
    ``report.html``.

    Args:
        force: recompute finished units too.
        report: render the report at the end.
        on_unit: called after each unit as ``(unit, "done" | "skipped", summary, seconds)``.
        progress: ``progress(unit)`` gives the callback a unit's long method reports to.
    """
    from ..models import load_model

    store = RunStore(out)
    store.start(experiment)
    outcome = RunOutcome(store.root)
    models: dict[str, object] = {}
    for unit in experiment.units():
        if store.is_done(unit) and not force:
            outcome.skipped.append(unit.id)
            if on_unit:
                on_unit(unit, "skipped", None, 0.0)
            continue
        if unit.model not in models:
            models.clear()  # one model in memory at a time
            models[unit.model] = load_model(unit.model, device=experiment.device,
                                            dtype=experiment.dtype)
        folder = store.begin(unit)
        start = time.perf_counter()
        summary = get_method(unit.method).run(models[unit.model], unit, experiment, folder,
                                              progress(unit) if progress else None)
        seconds = time.perf_counter() - start
        store.finish(unit, summary, seconds)
        outcome.computed.append(unit.id)
        if on_unit:
            on_unit(unit, "done", summary, seconds)
    if report:
        from ..report.html import build_report

        outcome.report = build_report(store.root)
    return outcome
