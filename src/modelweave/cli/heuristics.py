"""``modelweave heuristics``: arithmetic heuristic neurons (Nikankin et al. 2024) of a model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..io import write_json
from .app import DeviceOpt, DtypeOpt, ModelOpt, _load, app, console
from .method_run import SeedsOpt
from .progress import progress_bars

MaxOpOpt = Annotated[int, typer.Option("--max-op", min=1, help="Operands are below this.")]
StepOpt = Annotated[int, typer.Option(min=0, help="Answer token analysed (earlier ones "
                                      "teacher-forced); 0 = the first.")]
TopKOpt = Annotated[int, typer.Option("--top-k", min=1, help="Top neurons per layer classified "
                                      "(the paper: 50 to 200).")]
FirstLayerOpt = Annotated[int | None, typer.Option(help="First layer of neuron subsets "
                                                   "(default: the first layer a probe reads "
                                                   "the answer from on held-out prompts "
                                                   "better than the majority-class baseline; "
                                                   "every layer if none).")]
GridFractionOpt = Annotated[float, typer.Option(help="Share of the operand grid read for key "
                                                "maps.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


@app.command()
def heuristics(
    model: ModelOpt = "smollm2-135m",
    operators: Annotated[str, typer.Option(help="Operators, comma-separated: + - * / "
                                           "(/ is integer division).")] = "+",
    op_min: Annotated[int, typer.Option(min=0, help="Smallest operand.")] = 0,
    max_op: MaxOpOpt = 100,
    result_max: Annotated[int | None, typer.Option(help="Largest result kept (e.g. the largest "
                                                    "single-token number).")] = None,
    step: StepOpt = 0,
    n_prompts: Annotated[int, typer.Option(min=2, help="Prompts drawn per operator before "
                                           "keeping the correct ones.")] = 400,
    n_discovery: Annotated[int, typer.Option(min=1, help="Prompts for localisation and "
                                             "neuron ranking.")] = 50,
    n_eval: Annotated[int, typer.Option(min=1, help="Prompts for faithfulness.")] = 200,
    top_k: TopKOpt = 50,
    first_layer: FirstLayerOpt = None,
    grid_fraction: GridFractionOpt = 1.0,
    threshold: Annotated[float, typer.Option(help="Heuristic match threshold.")] = 0.6,
    min_neurons: Annotated[int, typer.Option(help="Knock out heuristics with at least this "
                                             "many neurons.")] = 10,
    base: Annotated[str | None, typer.Option("--base", help="The base model (e.g. "
                                             "smollm2-135m for a fine-tune of it): the same "
                                             "neurons' maps on it are a null of the "
                                             "classification (not computed without it).")]
    = None,
    null_draws: Annotated[int, typer.Option(min=1, help="Random-neuron null draws (matched "
                                            "by layer).")] = 100,
    permutation_draws: Annotated[int, typer.Option(min=1, help="Prompt-permuted null "
                                                   "draws.")] = 20,
    decodable_margin: Annotated[float, typer.Option(help="Accuracy gain over the majority "
                                                    "baseline a decodable layer needs.")]
    = 0.1,
    reference_operators: Annotated[str | None, typer.Option(help="Operators whose prompts "
                                   "give the mean-ablation means (default: --operators; the "
                                   "paper: +,-,*,/).")] = None,
    seed: int = 0,
    seeds: SeedsOpt = 1,
    out: Annotated[Path | None, typer.Option("--out", help="Results folder (default: "
                                             "runs/heuristics).")] = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
) -> None:
    """Find the MLP neurons that do arithmetic and the heuristics they implement: circuit of
    heads + MLPs, neurons per layer for faithfulness, key/key-value maps classified, knockouts.
    Writes heuristics.json, tensors and figures to --out."""
    from ..report.heuristics import null_text, share_text
    from .method_run import default_out, run_method

    def show(done) -> None:
        table = Table(title=f"Heuristic neurons of {done.model.name}")
        for col in ("op", "prompts (disc/eval)", "heads", "F heads+MLPs", "first layer",
                    "neurons/layer", "F neurons", "matched [95% CI]", "random neurons",
                    "base model", "permuted maps", "knockouts"):
            table.add_column(col)
        for s in done.summary["operators"]:
            f_neurons = s["neuron_faithfulness"]
            table.add_row(s["operator"], f"{s['n_discovery']}/{s['n_eval']}", str(s["heads"]),
                          f"{s['circuit_faithfulness']:.3f}", str(s["first_layer"]),
                          f"{s['neurons_per_layer']} ({s['neuron_share']:.1%})",
                          "-" if f_neurons is None else f"{f_neurons:.3f}",
                          f"{share_text(s)} of {s['classified']}", null_text(s, ""),
                          null_text(s, "_base"), null_text(s, "_permuted"), str(s["knockouts"]))
        console.print(table)

    params = {"operators": operators, "op_min": op_min, "max_op": max_op,
              "result_max": result_max, "step": step, "n_prompts": n_prompts,
              "n_discovery": n_discovery, "n_eval": n_eval, "top_k": top_k,
              "first_layer": first_layer, "grid_fraction": grid_fraction,
              "threshold": threshold, "min_neurons": min_neurons, "base": base,
              "null_draws": null_draws, "permutation_draws": permutation_draws,
              "decodable_margin": decodable_margin,
              "reference_operators": reference_operators}
    run_method("heuristics", model=model, task=None, params=params, n=n_eval, seed=seed,
               out=out or default_out("heuristics"), json_out=json_out, device=device,
               dtype=dtype, show=show, seeds=seeds)


@app.command("heuristics-emergence")
def heuristics_emergence(
    checkpoints: Annotated[Path, typer.Argument(help="A fine-tune's output folder (or its "
                                                "checkpoints/) with step-N model folders.")],
    operator: Annotated[str, typer.Option(help="One operator: + - * /.")] = "+",
    max_op: MaxOpOpt = 100,
    step: StepOpt = 0,
    n_prompts: Annotated[int, typer.Option(min=2, help="Prompts drawn per checkpoint.")] = 300,
    top_k: TopKOpt = 50,
    first_layer: FirstLayerOpt = None,
    grid_fraction: GridFractionOpt = 1.0,
    seed: int = 0,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for emergence.json and "
                                             "emergence.html (default: runs/emergence).")]
    = None,
    json_out: JsonOpt = False,
    device: DeviceOpt = None,
) -> None:
    """How the final checkpoint's heuristic neurons appear over training: share present and
    faithfulness of the shared neurons at each checkpoint."""
    from ..analysis.heuristics.emergence import emergence, find_checkpoints
    from ..report.heuristics import emergence_figure
    from ..tasks.arith import parse_operators

    (op,) = parse_operators(operator)
    found = find_checkpoints(checkpoints)
    with progress_bars("emergence", enabled=not json_out) as bars:
        result = emergence(found, op, load=lambda p: _load(str(p), device, None),
                           progress=bars, op_max=max_op,
                           step=step, n_prompts=n_prompts, classify_k=top_k,
                           first_layer=first_layer, grid_fraction=grid_fraction, seed=seed)
    out = out or Path("runs") / "emergence"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "emergence.json", result, indent=1)
    emergence_figure(result).write_html(out / "emergence.html", include_plotlyjs="directory")
    if json_out:
        print(json.dumps({k: v for k, v in result.items() if k != "final_matches"}
                         | {"files": [str(out / "emergence.json"), str(out / "emergence.html")]}))
        return
    table = Table(title=f"Heuristic neurons over training ({op}, top {top_k} per layer from "
                        f"layer {result['first_layer']})")
    for col in ("step", "accuracy", "matches", "final matches present", "F shared / F all"):
        table.add_column(col)
    for i, s in enumerate(result["steps"]):
        ratio = result["shared_faithfulness_ratio"][i]
        table.add_row(str(s), f"{result['accuracy'][i]:.2f}", str(result["n_matches"][i]),
                      f"{result['share_present'][i]:.0%}",
                      "-" if ratio is None else f"{ratio:.2f}")
    console.print(table)
    console.print(f"results: {out}", highlight=False, soft_wrap=True)
