"""``modelweave discover``: find a circuit, check it, save it (JSON, MIB, graph, curve)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..names import DEFAULT_METHOD, GRADIENT_METRICS, INTERVENTIONS, SCORING, SELECTING
from ..names import DISCOVERY_METHODS as METHODS
from .analysis import JsonOpt, NOpt, OutOpt, TaskOpt
from .app import DeviceOpt, DtypeOpt, ModelOpt, RemoteOpt, app, console
from .method_run import SeedsOpt


@app.command()
def discover(
    model: ModelOpt = "smollm2-135m",
    task: TaskOpt = "ioi",
    method: Annotated[str, typer.Option(help=", ".join(METHODS))] = DEFAULT_METHOD,
    target: Annotated[float, typer.Option(help="Faithfulness the smallest circuit must reach "
                                          f"({', '.join(SCORING)}).")] = 0.9,
    metric: Annotated[str, typer.Option(help=f"{', '.join(GRADIENT_METRICS[:-1])} or "
                                        f"{GRADIENT_METRICS[-1]}")] = "logit_diff",
    steps: Annotated[int, typer.Option(min=1, help="EAP-IG integration steps.")] = 5,
    threshold: Annotated[float | None, typer.Option(
        help=f"The threshold of {', '.join(SELECTING)}: ACDC's tau (0.01), pruning's kept "
             "fraction (0.8), path search's minimal effect (0.02).")] = None,
    intervention: Annotated[str, typer.Option(
        help=f"{' or '.join(INTERVENTIONS)}: what missing edges carry, the corrupted run's "
             "values or the senders' means")] = "patching",
    n: NOpt = 32,
    seed: int = 0,
    seeds: SeedsOpt = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts per pass.")] = 16,
    out: OutOpt = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    trust_remote_code: RemoteOpt = False,
) -> None:
    """Find the circuit of a task, measure its faithfulness curve (CPR, CMD), save it."""
    from ..circuits import CircuitError
    from ..circuits.wiring import check_model
    from .method_run import default_out, run_method, task_name

    def show(done) -> None:
        s = done.summary
        console.print(f"{method} on {done.unit.task} ({s['n']} prompts): {s['n_edges']} of "
                      f"{s['n_edges_total']} edges, {s['n_nodes']} nodes, faithfulness "
                      f"{s['faithfulness']:.3f}; CPR {s['cpr']:.3f}, CMD {s['cmd']:.3f}")

    params = {"method": method, "target": target, "metric": metric, "steps": steps,
              "threshold": threshold, "intervention": intervention, "batch_size": batch_size}
    out = out or default_out("discover", task_name(task), method)
    done = run_method("discover", model=model, task=task, params=params, n=n, seed=seed,
                      out=out, json_out=json_out, device=device, dtype=dtype,
                      trust_remote_code=trust_remote_code, prepare=check_model, show=show,
                      seeds=seeds)
    if not done.summary["reached"] and method in SCORING:
        raise CircuitError(
            f"target faithfulness {target} not reached; the best circuit tried has faithfulness "
            f"{done.summary['faithfulness']:.3f} with {done.summary['n_edges']} edges (saved in "
            f"{out})")
