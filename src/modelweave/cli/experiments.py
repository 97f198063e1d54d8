"""``modelweave run EXPERIMENT.yaml``: every unit of an experiment, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import JsonOpt, app, console, print_json
from .progress import progress_bars


@app.command("run")
def run_cmd(
    experiment: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    out: Annotated[Path | None, typer.Option("--out", help="Run directory (default: "
                                             "runs/<experiment name>).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute finished units.")] = False,
    live_report: Annotated[bool, typer.Option(help="Re-render the report after every unit, "
                                              "so it can be opened while the run goes on.")
                           ] = True,
    executor: Annotated[str, typer.Option(
        "--executor", help="sequential (this process) or ray (Ray workers on this machine, or "
        "on the cluster at --address; pip install -e '.[ray]').")] = "sequential",
    address: Annotated[str | None, typer.Option(
        "--address", help="Ray cluster address (HOST:PORT, ray://HOST:PORT or auto); default: "
        "a local Ray started for this run. --out must be on a file system every node mounts."
    )] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Ray workers at once (default: one per GPU, else 1).")] = None,
    gpus_per_worker: Annotated[int | None, typer.Option(
        "--gpus-per-worker", min=1, help="Ray: GPUs each worker holds (default 1 where there "
        "are GPUs; more for a model split over GPUs with `device: auto`).")] = None,
    recycle_after: Annotated[int, typer.Option(
        "--recycle-after", min=0, help="Ray: replace a worker after this many units (0: never)."
    )] = 25,
    max_worker_memory: Annotated[str | None, typer.Option(
        "--max-worker-memory", help="Ray: replace a worker whose resident memory passes this "
        "(e.g. 20GB) after a unit.")] = None,
    memory: Annotated[str | None, typer.Option(
        "--memory", help="Memory each unit may use, e.g. 80GB (a GPU's; RAM on CPU); default: "
        "what the device has. Units are planned against it: one that cannot fit stops the run "
        "before anything is computed, saying what would fit.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run an experiment: skips finished units, so a killed run continues where it stopped.
    A unit that fails is recorded (RUN/failed/UNIT.json, with its traceback) and the others go
    on; the command then exits 1."""
    from ..experiments import load_experiment, run_experiment
    from ..experiments.methods import get_method
    from ..experiments.page import build_report
    from ..experiments.seeds import seed_lines
    from ..planner import parse_size

    spec = load_experiment(experiment)
    out = out or Path("runs") / spec.name
    units = spec.units()
    if live_report and not json_out:
        page = (out / "report.html").resolve()
        console.print(f"report (filled in as units finish): {page.as_uri()}", highlight=False,
                      soft_wrap=True)
    with progress_bars(transient=False) as shown:
        bar = shown.display
        job = bar.add_task(f"{spec.name}: {len(units)} units", total=len(units), note="")

        inner: list = []

        def progress(unit):  # the unit's phases, one bar each, until it is done
            inner.append(shown.scoped(f"  {unit.id}"))
            return inner[-1]

        seen = [0]

        def on_unit(unit, status, summary, seconds):
            while inner:
                inner.pop().clear()
            bar.advance(job)
            seen[0] += 1
            if status == "skipped":
                bar.console.print(f"[dim]skip  {unit.id} (finished earlier)[/dim]")
            elif status == "taken":
                bar.console.print(f"[dim]taken {unit.id} (another worker finished it)[/dim]")
            elif status == "failed":
                bar.console.print(f"[red]FAIL[/red]  {unit.id} after {seconds:.1f} s: "
                                  f"{summary['error']}", highlight=False, soft_wrap=True)
            else:
                headline = get_method(unit.method).headline(summary)
                bar.console.print(f"done  {unit.id} in {seconds:.1f} s: {headline}",
                                  highlight=False)
                for line in seed_lines(get_method(unit.method), summary):
                    bar.console.print(f"      {line}", highlight=False)
                if live_report and seen[0] < len(units):
                    build_report(out)  # the last one is rendered by run_experiment

        options = {"address": address, "workers": workers, "recycle_after": recycle_after,
                   "gpus_per_worker": gpus_per_worker,
                   "max_worker_memory": parse_size(max_worker_memory)
                   if max_worker_memory else 0}
        outcome = run_experiment(spec, out, force=force, on_unit=on_unit, progress=progress,
                                 executor=executor, options=options,
                                 memory=parse_size(memory) if memory else None)
    if json_out:
        print_json({"root": str(outcome.root), "report": str(outcome.report),
                    "computed": list(outcome.computed), "skipped": list(outcome.skipped),
                    "failed": list(outcome.failed)})
    else:
        console.print(f"{len(outcome.computed)} units computed, {len(outcome.skipped)} skipped"
                      + (f", {len(outcome.failed)} failed" if outcome.failed else "")
                      + f"; results in {outcome.root}")
        for unit_id in outcome.failed:
            console.print(f"  failed: {unit_id} (traceback: "
                          f"{outcome.root / 'failed' / (unit_id + '.json')})", highlight=False,
                          soft_wrap=True)
        console.print(f"report: {outcome.report}", highlight=False, soft_wrap=True)
    if outcome.failed:
        raise typer.Exit(1)


@app.command("report")
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (from modelweave run).")],
    json_out: JsonOpt = False,
) -> None:
    """Re-render a run directory's report.html from its stored results (no model needed)."""
    from ..experiments import ConfigError
    from ..experiments.page import build_report

    if not (run_dir / "manifest.json").exists():
        raise ConfigError(f"{run_dir}: not a run directory (no manifest.json)")
    path = build_report(run_dir)
    if json_out:
        print_json({"report": str(path)})
        return
    console.print(f"report: {path}", highlight=False, soft_wrap=True)

