"""``modelweave influence``: which training documents a model's completions depend on (EK-FAC
influence functions over kronfluence).

Its parameters are those of the ``influence`` experiment method (checked by that kind, settings
built by :func:`~modelweave.experiments.methods.influence.influence_settings`); the command
keeps its own run, which first times the stages (a calibrated plan, printed) and then shows
one progress bar per stage."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .app import DeviceOpt, ModelOpt, _load, app, console
from .progress import progress_bars


@app.command()
def influence(
    docs: Annotated[Path, typer.Option("--docs", help="Training documents: .jsonl (text, "
                                       "id, category), .txt (blank-line separated) or "
                                       ".parquet.")],
    queries: Annotated[list[str], typer.Option("--queries", "-q", help="A built-in task, a "
                       "task file, or a .jsonl of {prompt, completion} (repeatable).")],
    model: ModelOpt = "smollm2-135m",
    n: Annotated[int, typer.Option(min=1, help="Queries drawn from each task.")] = 8,
    seed: int = 0,
    modules: Annotated[str, typer.Option(help="mlp (the MLP projections), all (every "
                                         "linear map in the blocks) or a comma-separated "
                                         "list of module paths.")] = "mlp",
    layers: Annotated[str | None, typer.Option(help="Blocks for mlp/all, e.g. 20-29.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Results folder (scores.safetensors, "
                                      "influence.json; factors under cache/).")
                   ] = Path("runs/influence"),
    train_batch: Annotated[int, typer.Option(min=1, help="Documents per batch.")] = 4,
    query_batch: Annotated[int, typer.Option(min=1, help="Queries per batch.")] = 8,
    query_rank: Annotated[int, typer.Option(min=0, help="Rank of the low-rank query "
                                            "gradients; 0 = full rank.")] = 32,
    max_tokens: Annotated[int, typer.Option(min=2, help="Documents are cut to this many "
                                            "tokens.")] = 256,
    lambda_examples: Annotated[int, typer.Option(min=1, help="Documents used to fit the "
                                                 "eigenvalue corrections.")] = 512,
    damping: Annotated[float | None, typer.Option(help="Absolute damping (default: 0.1 x "
                                                  "the mean eigenvalue).")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Torch threads (default: "
                                                "as set).")] = None,
    eigen_threads: Annotated[int, typer.Option(min=1, help="Threads of the fp64 "
                                               "eigendecomposition.")] = 1,
    baseline: Annotated[bool, typer.Option(help="Also the plain-gradient (TracIn-style) "
                                           "baseline.")] = True,
    max_memory_gb: Annotated[float | None, typer.Option(help="Refuse runs estimated above "
                                                        "this (default: memory available).")
                             ] = None,
    top: Annotated[int, typer.Option(min=1, help="Top documents shown per query.")] = 3,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    device: DeviceOpt = None,
) -> None:
    """Attribute completions to training documents with EK-FAC influence functions: a
    [queries x documents] score table (positive = the document raises the completion's
    log-probability), with the plain-gradient, cosine-gradient, BM25 and IDF-overlap baselines
    beside it (source retrieval with intervals where queries name their sources)."""
    from ..experiments.methods import get_method
    from ..experiments.methods.influence import influence_settings
    from ..methods.influence import load_documents, plan_influence, resolve_queries, run_influence

    documents = load_documents(docs)  # bad files fail before the model loads
    params = get_method("influence").check_params(
        {"docs": str(docs), "queries": list(queries), "modules": modules, "layers": layers,
         "damping": damping, "max_tokens": max_tokens, "train_batch": train_batch,
         "query_batch": query_batch, "query_rank": query_rank,
         "lambda_examples": lambda_examples, "threads": threads, "eigen_threads": eigen_threads,
         "baseline": baseline, "max_memory_gb": max_memory_gb}, "")
    settings = influence_settings(params, seed)
    loaded = _load(model, device, None)
    found = [q for spec in queries
             for q in resolve_queries(spec, n=n, seed=seed, tokenizer=loaded.tokenizer)]
    info = Console(stderr=True) if json_out else console
    with info.status("Planning: tokenising, hashing, timing one batch"):
        plan = plan_influence(loaded, documents, found, settings)
    info.print(f"Influence of {plan.describe()}", highlight=False)
    for stage, seconds in plan.estimate_s.items():
        info.print(f"  {stage:<20} ~{seconds:8.1f} s", highlight=False)
    with progress_bars(console=info, transient=False) as bars:
        result = run_influence(plan, out, progress=bars, log=None)
    rows = result.per_query(k=min(10, len(documents)))
    summary = {"out": str(out), "model": loaded.name, "documents": len(documents),
               "queries": len(found), "modules": len(plan.modules), "keys": result.keys,
               "seconds": result.seconds, "peak_memory_gb": result.peak_memory_gb,
               "results": [{**row, "top": [{"id": t.id, "score": t.score,
                                            "category": t.category, "has_answer": t.has_answer}
                                           for t in result.top(i, top)]}
                           for i, row in enumerate(rows)]}
    for method in result.methods:
        if method != "ekfac":
            for i, entry in enumerate(summary["results"]):
                entry[f"top_{method}"] = [t.id for t in result.top(i, top, method)]
    line = None
    if any(q.sources for q in found):
        from ..experiments.methods.influence import retrieval_summary
        from ..methods.influence.evaluate import retrieval_line

        summary.update(retrieval_summary(result, seed))
        line = retrieval_line(summary["retrieval"])
    if json_out:
        json.dump(summary, sys.stdout)
        print()
        return
    table = Table(title=f"Top documents per query ({loaded.name}); positive = raises the "
                        "completion's log-probability", show_lines=True)
    for column in ("query", "completion", "top documents (score)", "top-10 share"):
        table.add_column(column, overflow="fold")
    for i, row in enumerate(rows):
        q = result.queries[i]
        shown = "\n".join(f"{t.id} ({t.score:.3g}) {t.text[:60]!r}" for t in result.top(i, top))
        share = next(v for k, v in row.items() if k.endswith("_share"))
        table.add_row(f"{q.id}\n[dim]{q.prompt[-50:]!r}[/dim]", repr(q.completion), shown,
                      f"{share:.2f}")
    console.print(table)
    if line:
        console.print(f"Source top-1 (95% CI over queries): {line}", highlight=False,
                      soft_wrap=True)
    console.print("Stage times (s): " + ", ".join(f"{k} {v:.1f}"
                                                    for k, v in result.seconds.items()),
                  highlight=False)
    console.print(f"Scores: {out}/scores.safetensors, {out}/influence.json "
                  "(InfluenceScores.load reads them without a model)", highlight=False,
                  soft_wrap=True)
