"""``modelweave finetune``: LoRA on a task or a task file; saves the adapter and a merged model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import DeviceOpt, JsonOpt, ModelOpt, _load, app, console, print_json
from .progress import progress_bars


@app.command("finetune")
def finetune_cmd(
    out: Annotated[Path, typer.Option("--out", help="Directory for adapter/, merged/ and "
                                      "finetune.json.")],
    model: ModelOpt = "smollm2-135m",
    task: Annotated[str | None, typer.Option("--task", "-t", help="A built-in task.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="A task file (JSONL, CSV or "
                                              "YAML; see docs/tasks.md).")] = None,
    lora_r: Annotated[int, typer.Option("--lora-r", min=1, help="Adapter rank.")] = 8,
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps.")] = 200,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts per step.")] = 16,
    n: Annotated[int, typer.Option(min=1, help="Examples generated for training.")] = 256,
    seed: int = 0,
    scoring: Annotated[str, typer.Option(help="Loss on the answer's 'first' token or on "
                                         "'full' answers (multi-digit numbers).")] = "first",
    save_every: Annotated[int | None, typer.Option("--save-every", min=1, help="Also save "
                          "the merged model every N steps (OUT/checkpoints/step-N/).")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="A task parameter "
                     "KEY=VALUE (repeatable), e.g. -p operators=+,- -p op_max=100.")] = None,
    schedule: Annotated[str, typer.Option(help="Learning rate: 'constant' or 'linear' decay "
                                          "to zero.")] = "constant",
    device: DeviceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Fine-tune with LoRA on a task; `load_model(OUT/merged)` loads the result. The exact
    training items go to OUT/training_data.jsonl (and beside every saved model), and analyses
    of the fine-tune leave them out."""
    from ..models.finetune import TRAINING_DATA, finetune, load_training_data
    from ..tasks import TaskError, parse_params, resolve_task

    if (task is None) == (data is None):
        raise TaskError("give exactly one of --task or --data")
    spec = task if task is not None else str(data)
    params = parse_params(param or [])
    resolve_task(spec, **params)
    loaded = _load(model, device, None)
    with progress_bars("LoRA fine-tuning") as bars:
        def on_step(step: int, loss: float) -> None:
            bars.note("train", f"loss {loss:.3f}")

        result = finetune(loaded, spec, out, steps=steps, lora_r=lora_r, lr=lr,
                          batch_size=batch_size, n=n, seed=seed, scoring=scoring,
                          save_every=save_every, task_params=params, schedule=schedule,
                          progress=bars, on_step=on_step)
    first, last = result.losses[0], sum(result.losses[-10:]) / len(result.losses[-10:])
    items = len(load_training_data(out) or [])
    if json_out:
        print_json({"steps": steps, "seconds": result.seconds, "first_loss": first,
                    "last_loss": last, "adapter": str(result.adapter),
                    "merged": str(result.merged), "training_data": str(out / TRAINING_DATA),
                    "training_items": items})
        return
    console.print(f"{steps} steps in {result.seconds:.0f} s; loss {first:.3f} -> {last:.3f} "
                  "(mean of the last 10)")
    console.print(f"adapter: {result.adapter}", highlight=False, soft_wrap=True)
    console.print(f"merged model: {result.merged}", highlight=False, soft_wrap=True)
    console.print(f"training items: {items} in {out / TRAINING_DATA} (left out of analyses)",
                  highlight=False, soft_wrap=True)
