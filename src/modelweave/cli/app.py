"""``modelweave`` commands. Every user error is one line on stderr and exit status 1."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..errors import ModelWeaveError

app = typer.Typer(
    name="modelweave",
    help="Mechanistic interpretability of Hugging Face causal LMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)


@app.callback()
def _settings(threads: Annotated[int | None, typer.Option(
        help="Torch CPU threads (default: the cores this process may use, from its CPU "
             "affinity and cgroup quota).")] = None) -> None:
    """Mechanistic interpretability of Hugging Face causal LMs."""
    from ..runtime import configure_threads

    configure_threads(threads)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="smollm2-135m, a directory, a "
                                       ".gguf file or a hub id.")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or auto.")]
DtypeOpt = Annotated[str | None, typer.Option(help="float32, bfloat16, float16 or auto.")]
RemoteOpt = Annotated[bool, typer.Option("--trust-remote-code",
                                         help="Allow code shipped with a checkpoint.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead.")]


def print_json(data) -> None:
    """One JSON object on stdout (the last line), for scripts."""
    import json

    print(json.dumps(data, default=str))


def listing(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A table for a person at a terminal; plain tab-separated lines (never wrapped, header
    first) when stdout is a pipe or a file, so ``| grep`` and ``| cut`` work."""
    if not console.is_terminal:
        print("\t".join(columns))
        for row in rows:
            print("\t".join(cell.replace("\n", " ") for cell in row))
        return
    table = Table(title=title)
    for i, column in enumerate(columns):  # names users type are never wrapped
        table.add_column(column, no_wrap=i == 0, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)

DEMO_PROMPTS = (
    "When Mary and John went to the store, John gave a drink to",
    "1 2 3 4 5 6 ",
    "January, February, March, April,",
    "The war lasted from the year 1732 to the year 17",
    "The capital of France is",
)


def _load(model: str, device: str | None, dtype: str | None, trust_remote_code: bool = False):
    from ..models import embedded, load_model

    if model.lower() in embedded.ALIASES and not embedded.is_cached():
        with console.status(f"Dequantising the embedded model once into {embedded.cached_dir()}"):
            embedded.ensure_cached()
    with console.status(f"Loading {model}"):
        return load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)


def _predictions(model, prompts: list[str], top: int) -> list[dict]:
    """Per prompt: its tokens and the ``top`` next tokens with their probabilities."""
    import torch

    out = []
    for prompt in prompts:
        probs = torch.softmax(model(prompt)[0, -1].float(), dim=-1)
        best = probs.topk(top)
        out.append({"prompt": prompt, "tokens": model.to_str_tokens(prompt),
                    "predictions": [{"token": model.to_string([i]), "prob": round(p, 6)}
                                    for p, i in zip(best.values.tolist(), best.indices.tolist(),
                                                    strict=True)]})
    return out


def _predictions_table(name: str, predictions: list[dict], top: int) -> Table:
    table = Table(title=f"Top-{top} next tokens of {name}", show_lines=True)
    table.add_column("prompt (tokens)", overflow="fold", max_width=60)
    table.add_column("predictions", overflow="fold")
    for row in predictions:
        shown = "  ".join(f"{p['token']!r} {p['prob']:.2f}" for p in row["predictions"])
        table.add_row(f"{row['prompt']!r}\n[dim]{'|'.join(row['tokens'])}[/dim]", shown)
    return table


@app.command()
def models(json_out: JsonOpt = False) -> None:
    """List supported architectures and the state of the embedded default model."""
    from ..models import embedded
    from ..models.adapters import FAMILY_EXAMPLES, supported_architectures

    gguf, cached = embedded.gguf_path(), embedded.is_cached()
    if json_out:
        print_json({"architectures": {a: FAMILY_EXAMPLES.get(a, "")
                                      for a in supported_architectures()},
                    "embedded": {"name": embedded.NAME, "installed": str(gguf) if gguf else None,
                                 "cached": cached, "cache_dir": str(embedded.cached_dir())}})
        return
    listing("Supported architectures", ["model_type", "families"],
            [[a, FAMILY_EXAMPLES.get(a, "")] for a in supported_architectures()])
    console.print(f"Embedded default: [bold]{embedded.NAME}[/bold] (SmolLM2-135M-Instruct, llama)")
    console.print(f"  installed: {'yes, ' + str(gguf) if gguf else 'no - ' + embedded.INSTALL}")
    console.print(f"  cached:    {'yes, ' if cached else 'no (first load dequantises it into) '}"
                  f"{embedded.cached_dir()}")


@app.command()
def predict(
    prompts: Annotated[list[str], typer.Argument(help="One or more prompts.")],
    model: ModelOpt = "smollm2-135m",
    top: Annotated[int, typer.Option(min=1, max=50)] = 5,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    trust_remote_code: RemoteOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Show a model's top next-token predictions for the given prompts."""
    loaded = _load(model, device, dtype, trust_remote_code)
    predictions = _predictions(loaded, prompts, top)
    if json_out:
        print_json({"model": loaded.name, "predictions": predictions})
        return
    console.print(_predictions_table(loaded.name, predictions, top))


@app.command()
def demo(model: ModelOpt = "smollm2-135m", device: DeviceOpt = None,
         dtype: DtypeOpt = None, json_out: JsonOpt = False) -> None:
    """The quick-start: load a model and show its predictions on built-in prompts."""
    loaded = _load(model, device, dtype)
    predictions = _predictions(loaded, list(DEMO_PROMPTS), 5)
    if json_out:
        print_json({"model": loaded.name, "bos_rule": loaded.tokenization.rule,
                    "predictions": predictions})
        return
    console.print(repr(loaded))
    console.print(f"BOS rule: {loaded.tokenization.rule}")
    console.print(_predictions_table(loaded.name, predictions, 5))


@app.command("tasks")
def tasks_cmd(json_out: JsonOpt = False) -> None:
    """List the built-in tasks with their default metric and corruptions."""
    from ..tasks import list_tasks

    tasks = list_tasks()
    if json_out:
        print_json({"tasks": [{"name": t.name, "description": t.description, "metric": t.metric,
                               "corruptions": list(t.corruptions), "params": dict(t.params)}
                              for t in tasks]})
        return
    listing("Built-in tasks", ["task", "description", "metric", "corruptions", "parameters"],
            [[t.name, t.description, t.metric, ", ".join(t.corruptions),
              ", ".join(f"{k}={v}" for k, v in t.params.items())] for t in tasks])
    if console.is_terminal:
        console.print("Custom tasks: pass a .jsonl/.csv record file or a .yaml template as "
                      "--task.")


def main() -> None:
    """Console-script entry point: user errors become one line, not a traceback."""
    from transformers.utils import logging as hf_logging

    from ..runtime import keep_freed_memory

    hf_logging.disable_progress_bar()
    keep_freed_memory()  # large tensors are reused, not page-faulted in again
    try:
        app()
    except ModelWeaveError as err:
        Console(stderr=True).print(f"[bold red]error:[/bold red] {err}", highlight=False,
                                   soft_wrap=True)
        sys.exit(1)
