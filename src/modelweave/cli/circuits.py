"""``modelweave discover``: find a circuit, check it, save it (JSON, MIB, graph, curve)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .analysis import JsonOpt, NOpt, OutOpt, TaskOpt, _batch
from .app import DeviceOpt, DtypeOpt, ModelOpt, RemoteOpt, _load, app, console


def _save(found, model, out: Path) -> list[Path]:
    from ..circuits import to_mib
    from ..report.circuit_graph import save_circuit_graph
    from ..report.curves import save_faithfulness_curve

    circuit = found.circuit
    out.mkdir(parents=True, exist_ok=True)
    files = [circuit.save(out / "circuit.json")]
    mib = out / "circuit.mib.json"
    mib.write_text(json.dumps(to_mib(circuit, model.cfg.d_model)))
    files.append(mib)
    files.append(save_circuit_graph(circuit, out / "circuit.html"))
    files.append(save_circuit_graph(circuit, out / "circuit.svg"))
    title = (f"{circuit.method} on {circuit.task}, {circuit.model}: CPR "
             f"{circuit.curve['cpr']:.3f}, CMD {circuit.curve['cmd']:.3f}")
    files += save_faithfulness_curve(circuit.curve, title, out / "faithfulness")
    (out / "summary.json").write_text(json.dumps(found.summary(), indent=1))
    return [*files, out / "summary.json"]


@app.command()
def discover(
    model: ModelOpt = "smollm2-135m",
    task: TaskOpt = "ioi",
    method: Annotated[str, typer.Option(help="eap, eap-ig, exact, acdc, prune or path")]
    = "eap-ig",
    target: Annotated[float, typer.Option(help="Faithfulness the smallest circuit must reach "
                                          "(eap, eap-ig, exact).")] = 0.9,
    metric: Annotated[str, typer.Option(help="logit_diff, prob_diff, logprob or kl")]
    = "logit_diff",
    steps: Annotated[int, typer.Option(min=1, help="EAP-IG integration steps.")] = 5,
    threshold: Annotated[float | None, typer.Option(
        help="ACDC tau (0.01), pruning's kept fraction (0.8), path search's minimal effect "
             "(0.02).")] = None,
    intervention: Annotated[str, typer.Option(help="patching (corrupted run) or mean")]
    = "patching",
    n: NOpt = 32,
    seed: int = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts per pass.")] = 16,
    out: OutOpt = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    trust_remote_code: RemoteOpt = False,
) -> None:
    """Find the circuit of a task, measure its faithfulness curve (CPR, CMD), save it."""
    from ..circuits import METHODS, CircuitError
    from ..circuits import discover as run_discover
    from ..circuits.objective import check_metric
    from ..circuits.wiring import check_model
    from ..tasks import resolve_task

    if method not in METHODS:
        raise CircuitError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")
    check_metric(metric)
    resolve_task(task)
    loaded = _load(model, device, dtype, trust_remote_code)
    check_model(loaded)
    batch = _batch(loaded, task, n, seed)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        jobs: dict[str, int] = {}

        def progress(phase: str, k: int) -> None:
            if phase not in jobs:
                jobs[phase] = bar.add_task(f"{method}: {phase}", total=None)
            bar.advance(jobs[phase], k)

        found = run_discover(loaded, batch, method, target=target, metric=metric, steps=steps,
                             threshold=threshold, intervention=intervention,
                             batch_size=batch_size, progress=progress)
    out = out or Path("runs") / f"discover-{batch.task}-{method}"
    files = _save(found, loaded, out)
    summary = {**found.summary(), "task": batch.task, "model": loaded.name, "n": len(batch),
               "files": [str(f) for f in files]}
    if json_out:
        print(json.dumps(summary))
    else:
        console.print(f"{method} on {batch.task} ({len(batch)} prompts): {summary['n_edges']} of "
                      f"{summary['n_edges_total']} edges, {summary['n_nodes']} nodes, "
                      f"faithfulness {summary['faithfulness']:.3f}; CPR {summary['cpr']:.3f}, "
                      f"CMD {summary['cmd']:.3f}")
        console.print(f"saved: {out}")
    if not found.reached and method in ("eap", "eap-ig", "exact"):
        raise CircuitError(
            f"target faithfulness {target} not reached; the best circuit tried has faithfulness "
            f"{found.faithfulness:.3f} with {found.circuit.n_edges} edges (saved in {out})")
