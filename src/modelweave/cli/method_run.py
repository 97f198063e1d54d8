"""The one path of a single-method command (``patch``, ``lens``, ``heads``, ``discover``,
``eval``, ...): flags -> a :class:`~modelweave.experiments.methods.Unit` and its
:class:`~modelweave.experiments.methods.RunSettings` -> the method kind's ``check_params`` ->
``run`` into ``--out`` -> ``draw`` -> its ``headline`` (or, with ``--json``, its
``command_output``: the summary plus ``files``). A command adds only what is its own (a table
printed from the saved result, an exit status). ``--seeds K`` (:data:`SeedsOpt`, one line in
each command) runs the unit for K seeds of prompts on the one loaded model
(:mod:`modelweave.experiments.seeds`) and prints ``x = mean [low, high] over K seeds``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from .app import _load, console
from .progress import progress_bars

#: ``--seeds K`` of every single-method command (``seeds: SeedsOpt = 1``, passed to
#: :func:`run_method`)
SeedsOpt = Annotated[int, typer.Option(
    "--seeds", min=1, help="Seeds of prompts (seed, seed+1, ...): the unit runs once per seed "
    "on the loaded model; numbers are shown as mean [95% interval] over the seeds.")]


@dataclass
class MethodRun:
    """What a single-method command ran: its kind, unit, record (as a run store's
    ``done.json``: model, task, method, params, seconds, summary, run), folder and files."""

    kind: Any
    unit: Any
    record: dict
    folder: Path
    files: list[Path] = field(default_factory=list)
    model: Any = None

    @property
    def summary(self) -> dict:
        return self.record["summary"]

    def load(self) -> Any:
        """The saved result, read back through the kind (what a report would show)."""
        return self.kind.load(self.folder, self.record)


def _stamps(folder: Path) -> dict[Path, tuple[int, int]]:
    """file -> (modification time, size) of the files directly in ``folder``, sorted."""
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.iterdir())
            if p.is_file()}


def default_out(command: str, *parts: str) -> Path:
    """``runs/<command>-<part>-...``: a command's folder when ``--out`` is not given."""
    return Path("runs") / "-".join([command, *parts])


def task_name(task: str | None, corruption: str | None = None) -> str | None:
    """The task's name as its batches carry it (a task file's declared name), checking the
    task before any model is loaded."""
    if task is None:
        return None
    from ..tasks import resolve_task

    return resolve_task(task, corruption).name


def run_method(method: str, *, model: str, task: str | None, params: dict, n: int, seed: int,
               out: Path, json_out: bool = False, device: str | None = None,
               dtype: str | None = None, trust_remote_code: bool = False,
               prepare: Callable[[Any], None] | None = None,
               show: Callable[[MethodRun], None] | None = None, seeds: int = 1) -> MethodRun:
    """Run one unit of the experiment method ``method`` as a command.

    Args:
        params: the method's parameters from the flags (None values are left out, so the
            kind's defaults apply); checked by the kind's ``check_params`` before the model
            is loaded (an error is one line naming the flag's value).
        n, seed: prompts and seed (:class:`~modelweave.experiments.methods.RunSettings`);
            ``task`` None for a per-model unit.
        out: the folder the unit writes into (created; earlier files of the same names are
            replaced).
        prepare: called with the loaded model before the unit runs (a family check).
        show: prints the command's own extras from the saved result (text mode only),
            before the headline and the ``saved:`` line.
        seeds: K seeds of prompts (``seed`` .. ``seed + K - 1``); K > 1 writes ``seeds.json``
            and the others' files under ``out/seeds/``, adds the summary's ``seeds`` block
            (also in ``--json``) and prints each headline number over the seeds.

    Returns:
        The :class:`MethodRun` (after printing), for a command's exit decision.
    """
    from ..experiments.methods import RunSettings, Unit, get_method
    from ..experiments.seeds import run_seeds, seed_lines
    from ..metrics.uncertainty import check_seeds

    kind = get_method(method)
    check_seeds(seeds, "--seeds")
    checked = kind.check_params({k: v for k, v in params.items() if v is not None}, "")
    task_name(task, checked.get("corruption"))  # a bad task fails before the model loads
    loaded = _load(model, device, dtype, trust_remote_code)
    if prepare is not None:
        prepare(loaded)
    unit = Unit(model, task, kind.name, checked, seeds)
    settings = RunSettings(n=n, seed=seed, tasks=(task,) if task else ())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    before = _stamps(out)
    start = time.perf_counter()
    with progress_bars(f"{kind.name} on {task or loaded.name}") as bars:
        summary = run_seeds(kind, loaded, unit, settings, out, progress=bars)
    record = {"model": unit.model, "task": task, "method": kind.name, "params": checked,
              "seconds": round(time.perf_counter() - start, 3), "summary": summary,
              "run": loaded.run_info()}
    written = [p for p, stamp in _stamps(out).items()
               if before.get(p) != stamp and p.name != "plotly.min.js"]
    drawn = kind.draw(out, record)
    files = [*written, *(p for p in drawn if p not in written)]
    done = MethodRun(kind, unit, record, out, files, loaded)
    if json_out:
        shown = kind.command_output(record, files)
        if "seeds" in summary:
            shown.setdefault("seeds", summary["seeds"])
        print(json.dumps(shown, default=str))
        return done
    if show is not None:
        show(done)
    console.print(f"{kind.name} on {task or loaded.name}: {kind.headline(summary)}")
    for line in seed_lines(kind, summary):
        console.print(line, highlight=False)
    console.print(f"saved: {', '.join(str(f) for f in files)}")
    return done
