"""``modelweave compare CIRCUIT.json ...``: overlaps beside their chance baseline, depth
alignment, shared components; ``modelweave cmap``: cross-model activation patching with
intervals and matched nulls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..io import write_json
from .app import DeviceOpt, app, console


@app.command()
def compare(
    circuits: Annotated[list[Path], typer.Argument(help="Two or more circuit JSON files.")],
    out: Annotated[Path | None, typer.Option("--out", help="Directory for compare.json, "
                                             "upset.png and overlap_null.png (default: "
                                             "runs/compare).")] = None,
    level: Annotated[str, typer.Option(help="nodes or edges")] = "nodes",
    null_draws: Annotated[int, typer.Option(
        min=0, help="Random circuits matched by (type, layer) for the chance baseline of each "
                    "overlap (nodes only; 0 = none).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the null draws.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Compare circuits: pairwise Jaccard, precision and recall (same model) beside their
    chance baseline (a random circuit with the second circuit's count of heads and MLPs per
    layer: exact expectation, null range and p-value from matched draws), relative-depth
    overlap (any models), and the components every subset of them shares (UpSet figure)."""
    from ..analysis import depth_overlap, overlap, shared_components
    from ..circuits import Circuit, CircuitError
    from ..report.compare import overlap_cells, overlap_figure, upset_figure

    if len(circuits) < 2:
        raise CircuitError("compare needs at least two circuit files")
    loaded = {}
    for path in circuits:
        circuit = Circuit.load(path)
        name = f"{circuit.model}:{circuit.task}:{circuit.method}"
        loaded[name if name not in loaded else f"{name}:{path.stem}"] = circuit
    names = list(loaded)
    draws = null_draws if level == "nodes" else 0
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            row = {"a": a, "b": b, "depth_overlap": depth_overlap(loaded[a], loaded[b])}
            if loaded[a].graph == loaded[b].graph:
                row.update(overlap(loaded[a], loaded[b], level, null_draws=draws,
                                   seed=seed).to_dict())
            elif level == "edges":
                raise CircuitError(f"{a} and {b} come from different graphs: compare them with "
                                   "--level nodes (relative depth)")
            pairs.append(row)
    same_graph = len({c.graph for c in loaded.values()}) == 1
    shared = shared_components(loaded, level) if same_graph else {}
    out = out or Path("runs") / "compare"
    out.mkdir(parents=True, exist_ok=True)
    result = {"circuits": names, "level": level, "null_draws": draws, "pairs": pairs,
              "shared": [{"circuits": list(g), "components": c} for g, c in shared.items()]}
    write_json(out / "compare.json", result, indent=1)
    files = [out / "compare.json"]
    if shared:
        upset_figure(shared, names, out / "upset.png", f"shared {level}")
        files.append(out / "upset.png")
    if any("recall_null" in row for row in pairs):
        overlap_figure(pairs, out / "overlap_null.png")
        files.append(out / "overlap_null.png")
    if json_out:
        print(json.dumps({**result, "files": [str(f) for f in files]}))
        return
    table = Table(title=f"Circuit overlap ({level})"
                  + (f"; chance: {draws} random circuits matched by layer" if draws else ""))
    for column in ("a", "b", "jaccard", "precision", "recall", "depth overlap"):
        table.add_column(column)
    for row in pairs:
        cells = [overlap_cells(row, k) for k in ("jaccard", "precision", "recall")]
        table.add_row(row["a"], row["b"], *cells, f"{row['depth_overlap']:.3f}")
    console.print(table)
    every = shared.get(tuple(names), [])
    console.print(f"shared by all {len(names)}: {', '.join(every) or 'none'}")
    console.print(f"saved: {', '.join(str(f) for f in files)}")


def _groups(specs: list[str], circuits: list[Path]) -> dict[str, list[str]]:
    """``NAME=a1.h2,m3`` specs and circuit files (their heads, named by the file's stem)."""
    from ..circuits import Circuit, CircuitError

    groups: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, members = spec.partition("=")
        if not sep or not name or not members:
            raise CircuitError(f"--group {spec!r}: expected NAME=a1.h2,a3.h0,m2")
        groups[name] = [m.strip() for m in members.split(",") if m.strip()]
    for path in circuits:
        circuit = Circuit.load(path)
        groups[f"{path.stem} heads"] = [n for n in circuit.nodes if n.startswith("a")]
    if not groups:
        raise CircuitError("cmap needs at least one --group NAME=COMPONENTS or --circuit FILE")
    return groups


@app.command()
def cmap(
    source: Annotated[str, typer.Option("--source", help="The model whose outputs are patched "
                                        "in (e.g. a fine-tune's merged directory).")],
    target: Annotated[str, typer.Option("--target", help="The model patched into (e.g. the "
                                        "base).")] = "smollm2-135m",
    task: Annotated[str, typer.Option("--task", "-t", help="Built-in task or task file.")
                    ] = "entity_tracking",
    group: Annotated[list[str] | None, typer.Option(
        "--group", help="NAME=a1.h2,a3.h0,m2 (repeatable).")] = None,
    circuit: Annotated[list[Path] | None, typer.Option(
        "--circuit", help="A circuit file whose heads form a group (repeatable).")] = None,
    n: Annotated[int, typer.Option(min=1, help="Prompts.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of the prompts, null draws and "
                                      "bootstrap.")] = 0,
    null_draws: Annotated[int, typer.Option(
        min=0, help="Random head groups per group, matched by heads per layer (0 = none).")
                          ] = 20,
    skip_unmatched: Annotated[bool, typer.Option(
        "--skip-unmatched", help="Give a group that cannot be matched no null instead of "
                                 "stopping.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Directory for cmap.json and "
                                             "cmap.png (default: runs/cmap).")] = None,
    device: DeviceOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Cross-model activation patching: the share of the source's advantage each group of
    components recovers in the target, with a bootstrap interval over prompts and a null of
    random head groups with the group's count of heads per layer."""
    from ..analysis.cmap import cmap_nulls
    from ..report.compare import cmap_figure
    from ..tasks import make_batch
    from .app import _load

    groups = _groups(group or [], circuit or [])
    source_model = _load(source, device, None)
    target_model = _load(target, device, None)
    batch = make_batch(target_model, task, n=n, seed=seed, same_length=True)
    result = cmap_nulls(source_model, target_model, batch, groups, null_draws=null_draws,
                        on_unmatched="skip" if skip_unmatched else "raise", seed=seed)
    out = out or Path("runs") / "cmap"
    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "cmap.json")
    cmap_figure(result, out / "cmap.png")
    files = [out / "cmap.json", out / "cmap.png"]
    if json_out:
        data = result.to_dict()
        for g in data["groups"].values():  # the per-draw detail stays in cmap.json
            g.pop("draws"), g.pop("per_prompt")
        data.pop("source_per_prompt"), data.pop("target_per_prompt")
        print(json.dumps({**data, "files": [str(f) for f in files]}))
        return
    table = Table(title=f"CMAP {source} -> {target} on {task} ({len(batch)} prompts): "
                        f"{result.source:.3f} vs {result.target:.3f}")
    for column in ("group", "components", "recovery [95% CI]", "null mean [95% range]", "p"):
        table.add_column(column)
    for name, g in result.groups.items():
        null = (f"{g.null.null_mean:.3f} [{g.null.null_low:.3f}, {g.null.null_high:.3f}]"
                if g.null else (g.null_note or "-"))
        table.add_row(name, str(len(g.components)),
                      f"{g.recovery:.3f} [{g.recovery_ci[0]:.3f}, {g.recovery_ci[1]:.3f}]",
                      null, f"{g.null.p_value:.3g}" if g.null else "-")
    console.print(table)
    console.print(f"saved: {', '.join(str(f) for f in files)}")
