"""Toy models: ``train-toy`` (train a small transformer on an algorithmic task into HF
checkpoints), ``toy-analyse`` (Fourier/progress measures, composition, induction circuit) and
``toy-series`` (any method over a checkpoint series, with a metric-over-steps plot)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..io import write_json
from .app import app, console
from .method_run import SeedsOpt
from .progress import progress_bars

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


@app.command("train-toy")
def train_toy_cmd(
    task: Annotated[str, typer.Option(help="modular_addition, induction, sorting, reversal or "
                                      "parentheses.")] = "modular_addition",
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Task parameter "
                                                    "KEY=VALUE (p=113, frac=0.3, vocab=64, "
                                                    "length=16, n=5).")] = None,
    family: Annotated[str, typer.Option(help="gpt2 or llama.")] = "gpt2",
    layers: Annotated[int, typer.Option(help="Transformer blocks.")] = 1,
    heads: Annotated[int, typer.Option(help="Attention heads per layer.")] = 4,
    d_model: Annotated[int, typer.Option("--d-model", help="Residual width.")] = 128,
    d_mlp: Annotated[int | None, typer.Option("--d-mlp", help="MLP width (4 d_model).")] = None,
    attn_only: Annotated[bool, typer.Option("--attn-only", help="MLPs zeroed and frozen "
                                            "(kept as modules, adding exactly 0).")] = False,
    act: Annotated[str, typer.Option(help="MLP activation (relu, gelu_new, silu...).")] = "relu",
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 1000,
    lr: float = 1e-3,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 1.0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Sequences per step "
                                            "(modular addition: full batch).")] = 64,
    warmup: int = 10,
    seed: int = 0,
    save_every: Annotated[int, typer.Option("--save-every", help="Checkpoint interval.")] = 500,
    eval_every: Annotated[int, typer.Option("--eval-every", help="Evaluation interval.")] = 100,
    dense_every: Annotated[int, typer.Option(
        "--dense-every", help="Evaluation and checkpoint interval while the train set is fitted "
        "and the test set not (train acc >= 0.99 > test acc: grokking's transition); 0: off."
    )] = 25,
    out: Annotated[Path, typer.Option("--out", help="Run folder (empty, or --resume).")] = Path(
        "runs/toy"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its "
                                         "last checkpoint.")] = False,
    threads: Annotated[int | None, typer.Option(help="torch threads (default: torch's).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a small transformer on an algorithmic task on the CPU; checkpoints are HF model
    directories (safetensors + tokenizer) that every ModelWeave command loads."""
    from ..tasks import parse_params
    from ..toy.train import ToyConfig, check_output, train_toy

    cfg = ToyConfig(task=task, task_params=parse_params(param or []), family=family,
                    layers=layers, heads=heads, d_model=d_model, d_mlp=d_mlp,
                    attn_only=attn_only, act=act, steps=steps, lr=lr, weight_decay=weight_decay,
                    batch_size=batch_size, warmup=warmup, seed=seed, save_every=save_every,
                    eval_every=eval_every, dense_every=dense_every)
    cfg.validate()
    check_output(out, resume)
    if json_out:
        run = train_toy(cfg, out, resume=resume, threads=threads)
        print(json.dumps({k: v for k, v in run.to_dict().items() if k != "history"}))
        return
    with progress_bars(task, transient=False, eta=True) as bars:
        def on_step(step: int, record: dict | None) -> None:
            if record:
                bars.note("train", f"train {record['train_loss']:.3g}/{record['train_acc']:.3f}"
                          f"  test {record['test_loss']:.3g}/{record['test_acc']:.3f}")

        run = train_toy(cfg, out, resume=resume, progress=bars, on_step=on_step,
                        threads=threads)
    last = run.history[-1]
    table = Table(title=f"{task} -> {run.final}")
    subsets = [k for k in last if k.startswith("test_") and k.endswith("_acc") and k != "test_acc"]
    for col in ("step", "train loss", "train acc", "test loss", "test acc",
                *[k[5:-4].replace("_", "-") + " acc" for k in subsets], "seconds"):
        table.add_column(col)
    table.add_row(str(last["step"]), f"{last['train_loss']:.4g}", f"{last['train_acc']:.4f}",
                  f"{last['test_loss']:.4g}", f"{last['test_acc']:.4f}",
                  *[f"{last[k]:.4f}" for k in subsets], f"{run.seconds:.0f}")
    console.print(table)
    if run.resumed_from:
        console.print(f"resumed from step {run.resumed_from}")


@app.command("toy-analyse")
def toy_analyse(
    what: Annotated[str, typer.Argument(help="grokking (a modular-addition run folder), "
                                        "composition or induction (a model).")],
    target: Annotated[str, typer.Argument(help="Run folder or model (directory, hub id...).")],
    out: Annotated[Path | None, typer.Option("--out", help="Write JSON and figures here "
                                             "(default runs/toy-analyse-<analysis>).")] = None,
    json_out: JsonOpt = False,
    seeds: SeedsOpt = 1,
) -> None:
    """Ground-truth analyses of toy models: grokking (key frequencies, neuron spectra,
    restricted/excluded loss over the checkpoints), composition (Q/K/V heatmaps), induction
    (previous-token -> induction head by head roles, K-composition and EAP-IG). One analysis
    of the ``toy`` experiment method, run on any model (``require``)."""
    from ..experiments.methods import get_method
    from .method_run import default_out, run_method

    get_method("toy").check_params({"analyses": [what]}, "")  # before reading the target
    model = target
    if what == "grokking":
        from ..toy.train import load_run

        model = str(load_run(target).out / "final")

    def show(done) -> None:
        shown = done.kind.command_output(done.record, done.files)
        console.print_json(json.dumps({k: v for k, v in shown.items() if k != "files"}))

    run_method("toy", model=model, task=None, params={"analyses": [what], "require": True},
               n=32, seed=0, out=out or default_out("toy-analyse", what), json_out=json_out,
               device="cpu" if what == "grokking" else None, show=show, seeds=seeds)


@app.command("toy-series")
def toy_series(
    folder: Annotated[Path, typer.Argument(help="A run folder with checkpoints/step-N (toy or "
                                           "fine-tuning run).")],
    method: Annotated[str, typer.Option(help="eval, heads, composition or grokking.")] = "eval",
    task: Annotated[str | None, typer.Option(help="Task for eval (toy runs: their own).")] = None,
    n: Annotated[int, typer.Option(help="Examples for eval.")] = 64,
    out: Annotated[Path | None, typer.Option("--out", help="Write series.json and a plot.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Run one method over every checkpoint of a run: a metric-over-steps table and plot."""
    from ..report.toy import series_figure
    from ..toy.series import find_checkpoints, run_series

    ckpts = find_checkpoints(folder)
    with progress_bars(method, enabled=not json_out) as bars:
        rows = run_series(ckpts, method, task=task, n=n, progress=bars)
    files = []
    if out:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "series.json", rows, indent=1)
        fig = series_figure(rows, f"{method} over checkpoints of {folder}")
        fig.write_html(out / f"series_{method}.html", include_plotlyjs="directory")
        files = [out / "series.json", out / f"series_{method}.html"]
    if json_out:
        print(json.dumps({"method": method, "rows": rows, "files": [str(f) for f in files]}))
        return
    table = Table(title=f"{method} over checkpoints of {folder}")
    keys = [k for k in rows[0] if isinstance(rows[0][k], int | float)]
    for k in keys:
        table.add_column(k)
    for row in rows:
        table.add_row(*[f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k])
                        for k in keys])
    console.print(table)
