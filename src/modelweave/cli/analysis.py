"""``modelweave patch``, ``lens`` and ``heads``: node-level analyses with saved results and
heatmaps (PNG + interactive HTML)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from .app import DeviceOpt, DtypeOpt, ModelOpt, RemoteOpt, _load, app, console

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


def _batch(model, task: str, n: int, seed: int):
    from ..tasks import make_batch

    return make_batch(model, task, n=n, seed=seed, same_length=True)


@app.command()
def patch(
    model: ModelOpt = "smollm2-135m",
    task: TaskOpt = "ioi",
    grid: Annotated[str, typer.Option(help="heads, heads-by-pos, resid, attn, mlp, neurons")]
    = "heads",
    method: Annotated[str, typer.Option(
        help="exact, attribution (= atp), atp* (QK fix + GradDrop estimates) or locate "
             "(exact top k, verified in AtP* order)")] = "exact",
    direction: Annotated[str, typer.Option(help="denoising or noising")] = "denoising",
    n: NOpt = 32,
    seed: int = 0,
    layers: Annotated[str | None, typer.Option(help="Only these layers, e.g. 0,5,10")] = None,
    k: Annotated[int, typer.Option(help="(locate) how many components to find")] = 20,
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
    from ..methods import GRIDS, attribution_sweep, grid_units, patch_sweep
    from ..methods.atp_star import atp_star
    from ..methods.locate import locate
    from ..report.figures import patching_figure
    from ..tasks import TaskError, resolve_task

    methods = ("exact", "attribution", "atp", "atp*", "locate")
    if grid not in GRIDS:
        raise TaskError(f"unknown grid {grid!r}; grids: {', '.join(GRIDS)}")
    if method not in methods:
        raise TaskError(f"method must be one of {', '.join(methods)}, got {method!r}")
    resolve_task(task)
    loaded = _load(model, device, dtype, trust_remote_code)
    batch = _batch(loaded, task, n, seed)
    chosen = _layers(layers)
    mask, found = None, None
    if method in ("attribution", "atp"):
        with console.status("Attribution patching (one forward and backward pass)"):
            result = attribution_sweep(loaded, batch, grid, direction=direction, layers=chosen)
    elif method == "atp*":
        with console.status("AtP* (QK fix, GradDrop)"):
            result = atp_star(loaded, batch, grid, direction=direction,
                              layers=chosen).to_result(loaded, batch)
    elif method == "locate":
        with console.status(f"locate: AtP* ranking, exact verification of the top {k}"):
            found = locate(loaded, batch, grid, k=k, budget=budget, direction=direction,
                           layers=chosen)
        result, mask = found.to_result(loaded, batch)
    else:
        total = len(grid_units(loaded, grid, batch.clean.shape[1], chosen)[0])
        with Progress(console=console, transient=True) as bar:
            job = bar.add_task(f"exact patching, {total} units", total=total)
            result = patch_sweep(loaded, batch, grid, direction=direction, layers=chosen,
                                 progress=lambda k: bar.advance(job, k))
    tag = method.replace("*", "-star")
    out = out or Path("runs") / f"patch-{result.task}-{grid}-{tag}"
    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "result")
    files = [out / "result.json", out / "result.safetensors", *patching_figure(result,
                                                                              out / "heatmap")]
    if found is not None:
        (out / "locate.json").write_text(json.dumps(
            {**found.summary(), "exact_mask": mask.flatten().tolist()}))
        files.append(out / "locate.json")

    def is_exact(idx) -> bool:
        return method == "exact" or (mask is not None and bool(mask[idx]))

    top = [{"unit": dict(zip(result.axes, [result.labels[a][i] for a, i in
                                           zip(result.axes, idx, strict=True)], strict=True)),
            "value": value, "exact": is_exact(idx)} for idx, value in result.top(10)]
    summary = {"grid": grid, "method": method, "direction": direction,
               "metric": result.metric, "n": len(batch), "clean_metric": result.clean_metric,
               "corrupt_metric": result.corrupt_metric, "top": top,
               "files": [str(f) for f in files]}
    if found is not None:
        summary.update(k=k, n_exact=found.n_exact, n_components=found.n_components,
                       stopped=found.stopped, risk=found.risk)
    if json_out:
        print(json.dumps(summary))
        return
    table = Table(title=f"Top units: {method} {direction} patching of {grid} "
                        f"({len(batch)} prompts; 1 = clean, 0 = corrupt)")
    for axis in result.axes:
        table.add_column(axis)
    table.add_column("effect")
    table.add_column("value")
    for row in top:
        table.add_row(*row["unit"].values(), f"{row['value']:.3f}",
                      "exact" if row["exact"] else "estimate")
    console.print(table)
    if found is not None:
        console.print(f"locate: {found.n_exact} of {found.n_components} units patched exactly "
                      f"(stopped: {found.stopped}); estimated risk of a miss {found.risk:.2g}")
    console.print(f"{result.metric}: clean {result.clean_metric:.3f}, corrupt "
                  f"{result.corrupt_metric:.3f}")
    console.print(f"saved: {', '.join(str(f) for f in files)}")


@app.command()
def lens(
    model: ModelOpt = "smollm2-135m",
    task: TaskOpt = "ioi",
    n: NOpt = 16,
    seed: int = 0,
    out: OutOpt = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Logit lens: the answer's probability after every layer at every position."""
    from ..methods.lens import logit_lens
    from ..report.figures import save_heatmap
    from ..tasks import resolve_task

    resolve_task(task)
    loaded = _load(model, device, dtype)
    batch = _batch(loaded, task, n, seed)
    with console.status("Logit lens"):
        result = logit_lens(loaded, batch)
    out = out or Path("runs") / f"lens-{result.task}"
    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "lens")
    files = save_heatmap(result.answer_prob, result.layers, result.positions, "layer", "pos",
                         f"Logit lens: P(answer) on {result.task}, {result.model}",
                         out / "answer_prob", center=False)
    end = result.answer_prob[:, -1].tolist()
    first_layer = next((result.layers[i] for i, r in enumerate(result.answer_rank[:, -1])
                        if r < 0.5), None)
    if json_out:
        print(json.dumps({"layers": result.layers, "answer_prob_end": end,
                          "answer_rank_end": result.answer_rank[:, -1].tolist(),
                          "first_top1_layer": first_layer, "files": [str(f) for f in files]}))
        return
    table = Table(title=f"Logit lens at the last position ({len(batch)} prompts)")
    for column in ("layer", "P(answer)", "mean rank", "top tokens (first prompt)"):
        table.add_column(column)
    for i, layer in enumerate(result.layers):
        table.add_row(layer, f"{end[i]:.3f}", f"{result.answer_rank[i, -1]:.1f}",
                      " ".join(repr(t) for t in result.top_tokens[i][-1][:3]))
    console.print(table)
    console.print(f"saved: {', '.join(str(f) for f in [out / 'lens.json', *files])}")


@app.command()
def heads(
    model: ModelOpt = "smollm2-135m",
    task: Annotated[str | None, typer.Option("--task", "-t", help="Also attribute the task's "
                                             "logit difference to each head.")] = None,
    n: NOpt = 16,
    seed: int = 0,
    out: OutOpt = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Head-role scores (previous-token, duplicate, induction, copying, successor) and, with a
    task, each head's direct logit attribution."""
    from ..methods.dla import direct_logit_attribution
    from ..methods.head_roles import head_roles
    from ..report.figures import save_heatmap
    from ..tasks import resolve_task

    if task:
        resolve_task(task)
    loaded = _load(model, device, dtype)
    with console.status("Scoring head roles"):
        roles = head_roles(loaded, seed=seed)
    out = out or Path("runs") / "heads"
    out.mkdir(parents=True, exist_ok=True)
    roles.to_dataframe().to_csv(out / "head_roles.csv", index=False)
    grids = dict(roles.scores)
    dla = None
    if task:
        batch = _batch(loaded, task, n, seed)
        dla = direct_logit_attribution(loaded, batch)
        if dla.heads is not None:
            grids["dla"] = dla.heads
    files = [out / "head_roles.csv"]
    if dla is not None and dla.heads is not None:  # patterns of the 3 strongest heads
        from ..methods.patterns import attention_patterns

        order = dla.heads.flatten().abs().argsort(descending=True)[:3].tolist()
        chosen = [(i // loaded.cfg.n_heads, i % loaded.cfg.n_heads) for i in order]
        prompt = batch.clean[0, : batch.lengths[0]]
        patterns, tokens = attention_patterns(loaded, prompt, chosen)
        labels = [f"{i}: {t}" for i, t in enumerate(tokens)]
        for (layer, head), pattern in patterns.items():
            files += save_heatmap(pattern, labels, labels, "query", "key",
                                  f"attention of head {layer}.{head} (|DLA| top-3)",
                                  out / f"pattern_{layer}_{head}", center=False)
    layers = [str(i) for i in range(loaded.cfg.n_layers)]
    heads_ = [str(h) for h in range(loaded.cfg.n_heads)]
    for name, values in grids.items():
        files += save_heatmap(values, layers, heads_, "layer", "head",
                              f"{name} score per head, {loaded.name}", out / name,
                              center=name == "dla")
    summary = {role: [{"layer": layer, "head": head, "score": score}
                      for layer, head, score in roles.top(role, 5)] for role in roles.scores}
    if json_out:
        extra = {"dla_logit_diff": dla.logit_diff} if dla else {}
        print(json.dumps({"top": summary, **extra, "files": [str(f) for f in files]}))
        return
    table = Table(title=f"Top heads per role, {loaded.name}")
    table.add_column("role")
    table.add_column("top heads (layer.head: score)")
    for role, rows in summary.items():
        table.add_row(role, "  ".join(f"{r['layer']}.{r['head']}: {r['score']:.2f}"
                                      for r in rows))
    console.print(table)
    console.print(f"saved: {', '.join(str(f) for f in files)}")
