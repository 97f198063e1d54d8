"""``modelweave run EXPERIMENT.yaml``: every unit of an experiment, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import JsonOpt, app, console, print_json


@app.command("run")
def run_cmd(
    experiment: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    out: Annotated[Path | None, typer.Option("--out", help="Run directory (default: "
                                             "runs/<experiment name>).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute finished units.")] = False,
    live_report: Annotated[bool, typer.Option(help="Re-render the report after every unit, "
                                              "so it can be opened while the run goes on.")
                           ] = True,
    json_out: JsonOpt = False,
) -> None:
    """Run an experiment: skips finished units, so a killed run continues where it stopped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from ..experiments import get_method, load_experiment, run_experiment
    from ..report.html import build_report

    spec = load_experiment(experiment)
    out = out or Path("runs") / spec.name
    units = spec.units()
    if live_report and not json_out:
        page = (out / "report.html").resolve()
        console.print(f"report (filled in as units finish): {page.as_uri()}", highlight=False,
                      soft_wrap=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console) as bar:
        job = bar.add_task(f"{spec.name}: {len(units)} units", total=len(units))

        inner: dict[str, int] = {}

        def progress(unit):
            inner["job"] = bar.add_task(f"  {unit.id}", total=None)
            return lambda k: bar.advance(inner["job"], k)

        seen = [0]

        def on_unit(unit, status, summary, seconds):
            if "job" in inner:
                bar.remove_task(inner.pop("job"))
            bar.advance(job)
            seen[0] += 1
            if status == "skipped":
                bar.console.print(f"[dim]skip  {unit.id} (finished earlier)[/dim]")
            else:
                headline = get_method(unit.method).headline(summary)
                bar.console.print(f"done  {unit.id} in {seconds:.1f} s: {headline}",
                                  highlight=False)
                if live_report and seen[0] < len(units):
                    build_report(out)  # the last one is rendered by run_experiment

        outcome = run_experiment(spec, out, force=force, on_unit=on_unit, progress=progress)
    if json_out:
        print_json({"root": str(outcome.root), "report": str(outcome.report),
                    "computed": list(outcome.computed), "skipped": list(outcome.skipped)})
        return
    console.print(f"{len(outcome.computed)} units computed, {len(outcome.skipped)} skipped; "
                  f"results in {outcome.root}")
    console.print(f"report: {outcome.report}", highlight=False, soft_wrap=True)


@app.command("report")
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (from modelweave run).")],
    json_out: JsonOpt = False,
) -> None:
    """Re-render a run directory's report.html from its stored results (no model needed)."""
    from ..experiments import ConfigError
    from ..report.html import build_report

    if not (run_dir / "manifest.json").exists():
        raise ConfigError(f"{run_dir}: not a run directory (no manifest.json)")
    path = build_report(run_dir)
    if json_out:
        print_json({"report": str(path)})
        return
    console.print(f"report: {path}", highlight=False, soft_wrap=True)

