"""``modelweave plan``: memory and time of a method on a model, from its config alone."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from ..names import DEFAULT_METHOD, EAP_METHODS, PATCH_METHODS
from .app import JsonOpt, app, console, print_json

#: sub-methods the help text names, as examples (every kind's ``method`` value is accepted)
_EXAMPLES = ", ".join((*EAP_METHODS, *PATCH_METHODS[2:]))


def _params(pairs: list[str]) -> dict:
    from ..planner import PlanError

    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PlanError(f"--param takes KEY=VALUE, got {pair!r}")
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


@app.command("plan")
def plan_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="config.json, an HF directory, "
                                       "smollm2-135m, a preset (llama-3-8b, olmo-2-7b, "
                                       "pythia-6.9b, command-r7b, aya-23-8b...) or a cached "
                                       "hub id.")] = "smollm2-135m",
    method: Annotated[str, typer.Option(help="eval, patch, discover, lens, heads... or "
                                        f"{_EXAMPLES}.")] = DEFAULT_METHOD,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="Method parameter KEY=VALUE (method=eap, grid=heads, steps=5, "
        "batch_size=16).")] = None,
    n: Annotated[int, typer.Option(min=1, help="Prompts in the unit.")] = 64,
    seq: Annotated[int, typer.Option(min=1, help="Tokens per prompt.")] = 32,
    dtype: Annotated[str | None, typer.Option(help="float32, bfloat16 (bf16) or float16 "
                                              "(default: float32 on CPU, the checkpoint's on "
                                              "a GPU).")] = None,
    gpu_memory: Annotated[str | None, typer.Option(
        "--gpu-memory", help="Plan for a GPU with this memory (80GB, 24GiB).")] = None,
    memory: Annotated[str | None, typer.Option(
        help="Plan for a CPU with this memory (default: this machine's RAM).")] = None,
    flops: Annotated[float | None, typer.Option(
        help="Throughput in FLOP/s for the time estimate (default: 5e10 on CPU, 4e14 on a "
             "GPU).")] = None,
    headroom: Annotated[float, typer.Option(
        min=0.0, max=0.9, help="Share of the memory to leave free (measured CPU peaks ran up "
        "to 14% above the prediction).")] = 0.15,
    json_out: JsonOpt = False,
) -> None:
    """Peak memory (weights, activations, caches, gradients), the largest batch that fits and
    the estimated time of a method on a model, reading only its config (no weights). Exit
    status 1 when it does not fit."""
    from ..experiments.planning import plan_method
    from ..planner import format_size, parse_size

    device = "cuda" if gpu_memory else "cpu"
    size = parse_size(gpu_memory or memory) if (gpu_memory or memory) else None
    plan = plan_method(model, method, _params(param or []), n, seq, dtype, size, device=device,
                       flops_per_second=flops, headroom=headroom)
    if json_out:
        print_json(plan.to_dict())
    else:
        where = "GPU" if device == "cuda" else "CPU"
        table = Table(title=f"{plan.method} on {plan.model} ({plan.dtype}, n={plan.n}, "
                      f"seq={plan.seq}, {where} with {format_size(plan.memory_bytes)})")
        table.add_column("component")
        table.add_column("bytes", justify="right")
        for key, value in plan.breakdown.items():
            table.add_row(key, format_size(value))
        table.add_row(f"[bold]peak[/bold] ({plan.phase})", f"[bold]"
                      f"{format_size(plan.peak_bytes)}[/bold]")
        console.print(table)
        s = plan.shape
        console.print(f"model: {s['family']}, {s['n_params'] / 1e9:.3g}B parameters, "
                      f"{s['n_layers']} layers, d_model {s['d_model']}, {s['n_heads']} heads "
                      f"({s['n_kv_heads']} kv), d_mlp {s['d_mlp']}, vocab {s['d_vocab']}")
        if plan.batch_param:
            console.print(f"{plan.batch_param}: {plan.batch} (largest that fits: "
                          f"{plan.batch_size})")
        console.print(f"work: {plan.flops:.3g} FLOP, ~{plan.seconds:.3g} s at "
                      f"{plan.flops_per_second:.3g} FLOP/s")
        if plan.note:
            console.print(f"note: {plan.note}")
    if not plan.fits:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/bold red] {plan.message}",
                                   highlight=False, soft_wrap=True)
        sys.exit(1)
