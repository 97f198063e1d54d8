"""``modelweave eval``, ``patch``, ``lens`` and ``heads``: evaluation and node-level analyses
with saved results and heatmaps (PNG + interactive HTML)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..names import DIRECTIONS, GRIDS, PATCH_DIRECTION, PATCH_GRID, PATCH_K, PATCH_METHOD
from .app import DeviceOpt, DtypeOpt, ModelOpt, RemoteOpt, app, console
from .method_run import SeedsOpt

TaskOpt = Annotated[str, typer.Option("--task", "-t", help="Built-in task or task file.")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Directory for results and figures "
                                             "(default: runs/<command>-<task>).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
NOpt = Annotated[int, typer.Option(min=1, help="Examples to generate (those of the most "
                                   "common length are kept).")]


def _layers(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise typer.BadParameter("layers are comma-separated integers, e.g. 0,5,10") from None


@app.command("eval")
def eval_cmd(
    model: ModelOpt = "smollm2-135m",
    task: Annotated[str, typer.Option("--task", "-t", help="Built-in task or task file.")] = "ioi",
    n: Annotated[int, typer.Option(min=1, help="Examples to generate.")] = 64,
    seed: int = 0,
    seeds: SeedsOpt = 1,
    corruption: Annotated[str | None, typer.Option(help="Corruption scheme.")] = None,
    scoring: Annotated[str, typer.Option(help="first (first answer token) or full "
                                         "(teacher-forced whole answer).")] = "first",
    out: Annotated[Path | None, typer.Option("--out", help="Directory for eval.json (default: "
                                             "runs/eval-<task>).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    trust_remote_code: RemoteOpt = False,
) -> None:
    """Evaluate a model on a task: accuracy and logit difference with 95% bootstrap CIs."""
    from .method_run import default_out, run_method, task_name

    def show(done) -> None:
        from ..metrics.stats import Aggregate

        saved = done.load()
        agg = {k: str(Aggregate(**v)) for k, v in saved["aggregates"].items()}
        table = Table(title=f"{saved['task']} on {saved['model']} (seed {seed}, scoring "
                            f"{scoring})")
        table.add_column("measure")
        table.add_column("value (95% CI)")
        table.add_row("accuracy", agg["accuracy"])
        table.add_row("logit diff (clean)", agg["logit_diff"])
        table.add_row("logit diff (corrupt)", agg["logit_diff_corrupt"])
        if saved["metric"] != "logit_diff":
            table.add_row(saved["metric"], agg["metric_value"])
        table.add_row("examples kept", str(saved["n"]))
        reasons = saved["dropped_reasons"]
        dropped = "; ".join(f"{k}: {v}" for k, v in reasons.items())
        table.add_row("examples dropped", f"{sum(reasons.values())}"
                      + (f" ({dropped})" if dropped else ""))
        console.print(table)

    out = out or default_out("eval", task_name(task, corruption))
    run_method("eval", model=model, task=task, n=n, seed=seed,
               params={"scoring": scoring, "corruption": corruption}, out=out,
               json_out=json_out, device=device, dtype=dtype,
               trust_remote_code=trust_remote_code, show=show, seeds=seeds)


@app.command()
def patch(
    model: ModelOpt = "smollm2-135m",
    task: TaskOpt = "ioi",
    grid: Annotated[str, typer.Option(help=", ".join(GRIDS))] = PATCH_GRID,
    method: Annotated[str, typer.Option(
        help="exact, attribution (alias atp), atp* (QK fix + GradDrop estimates) or locate "
             "(exact top k, verified in AtP* order)")] = PATCH_METHOD,
    direction: Annotated[str, typer.Option(help=" or ".join(DIRECTIONS))] = PATCH_DIRECTION,
    n: NOpt = 32,
    seed: int = 0,
    seeds: SeedsOpt = 1,
    layers: Annotated[str | None, typer.Option(help="Only these layers, e.g. 0,5,10")] = None,
    k: Annotated[int, typer.Option(help="(locate) how many components to find")] = PATCH_K,
    budget: Annotated[int | None, typer.Option(
        help="(locate) at most this many exact patches")] = None,
    out: OutOpt = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    trust_remote_code: RemoteOpt = False,
) -> None:
    """Activation patching over a node grid; saves the result and a heatmap. Estimates
    (attribution, atp*) and locate's unverified units are marked as estimates."""
    from .method_run import default_out, run_method, task_name

    def show(done) -> None:
        s, result = done.summary, done.load()
        table = Table(title=f"Top units: {s['method']} {direction} patching of {grid} "
                            f"({s['n']} prompts; 1 = clean, 0 = corrupt)")
        for axis in result.axes:
            table.add_column(axis)
        table.add_column("effect")
        table.add_column("value")
        for row in s["top"]:
            table.add_row(*row["unit"].values(), f"{row['value']:.3f}",
                          "exact" if row["exact"] else "estimate")
        console.print(table)
        if "locate" in s:
            found = s["locate"]
            console.print(f"locate: {found['n_exact']} of {found['n_components']} units patched "
                          f"exactly (stopped: {found['stopped']}); estimated risk of a miss "
                          f"{found['risk']:.2g}")
        console.print(f"{s['metric']}: clean {s['clean_metric']:.3f}, corrupt "
                      f"{s['corrupt_metric']:.3f}")

    params = {"grid": grid, "method": method, "direction": direction, "layers": _layers(layers)}
    if method == "locate":
        params.update(k=k, budget=budget)
    out = out or default_out("patch", task_name(task), grid, method.replace("*", "-star"))
    run_method("patch", model=model, task=task, params=params, n=n, seed=seed, out=out,
               json_out=json_out, device=device, dtype=dtype,
               trust_remote_code=trust_remote_code, show=show, seeds=seeds)


@app.command()
def lens(
    model: ModelOpt = "smollm2-135m",
    task: TaskOpt = "ioi",
    n: NOpt = 16,
    seed: int = 0,
    seeds: SeedsOpt = 1,
    out: OutOpt = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Logit lens: the answer's probability after every layer at every position."""
    from .method_run import default_out, run_method, task_name

    def show(done) -> None:
        result, end = done.load(), done.summary["answer_prob_end"]
        table = Table(title=f"Logit lens at the last position ({done.summary['n']} prompts)")
        for column in ("layer", "P(answer)", "mean rank", "top tokens (first prompt)"):
            table.add_column(column)
        for i, layer in enumerate(result.layers):
            table.add_row(layer, f"{end[i]:.3f}", f"{result.answer_rank[i, -1]:.1f}",
                          " ".join(repr(t) for t in result.top_tokens[i][-1][:3]))
        console.print(table)

    out = out or default_out("lens", task_name(task))
    run_method("lens", model=model, task=task, params={}, n=n, seed=seed, out=out,
               json_out=json_out, device=device, dtype=dtype, show=show, seeds=seeds)


@app.command()
def heads(
    model: ModelOpt = "smollm2-135m",
    task: Annotated[str | None, typer.Option("--task", "-t", help="Also attribute the task's "
                                             "logit difference to each head.")] = None,
    n: NOpt = 16,
    seed: int = 0,
    seeds: SeedsOpt = 1,
    out: OutOpt = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Head-role scores (previous-token, duplicate, induction, copying, successor) and, with a
    task, each head's direct logit attribution."""
    from .method_run import default_out, run_method

    def show(done) -> None:
        table = Table(title=f"Top heads per role, {done.model.name}")
        table.add_column("role")
        table.add_column("top heads (layer.head: score)")
        for role, rows in done.kind.command_output(done.record, [])["top"].items():
            table.add_row(role, "  ".join(f"{r['layer']}.{r['head']}: {r['score']:.2f}"
                                          for r in rows))
        console.print(table)

    run_method("heads", model=model, task=task, params={}, n=n, seed=seed,
               out=out or default_out("heads"), json_out=json_out, device=device, dtype=dtype,
               show=show, seeds=seeds)
