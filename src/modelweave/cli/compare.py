"""``modelweave compare CIRCUIT.json ...``: overlaps, depth alignment, shared components."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..io import write_json
from .app import app, console


@app.command()
def compare(
    circuits: Annotated[list[Path], typer.Argument(help="Two or more circuit JSON files.")],
    out: Annotated[Path | None, typer.Option("--out", help="Directory for compare.json and "
                                             "upset.png (default: runs/compare).")] = None,
    level: Annotated[str, typer.Option(help="nodes or edges")] = "nodes",
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Compare circuits: pairwise Jaccard, precision and recall (same model), relative-depth
    overlap (any models), and the components every subset of them shares (UpSet figure)."""
    from ..analysis import depth_overlap, overlap, shared_components
    from ..circuits import Circuit, CircuitError
    from ..report.compare import upset_figure

    if len(circuits) < 2:
        raise CircuitError("compare needs at least two circuit files")
    loaded = {}
    for path in circuits:
        circuit = Circuit.load(path)
        name = f"{circuit.model}:{circuit.task}:{circuit.method}"
        loaded[name if name not in loaded else f"{name}:{path.stem}"] = circuit
    names = list(loaded)
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            row = {"a": a, "b": b, "depth_overlap": depth_overlap(loaded[a], loaded[b])}
            if loaded[a].graph == loaded[b].graph:
                row.update(overlap(loaded[a], loaded[b], level).to_dict())
            elif level == "edges":
                raise CircuitError(f"{a} and {b} come from different graphs: compare them with "
                                   "--level nodes (relative depth)")
            pairs.append(row)
    same_graph = len({c.graph for c in loaded.values()}) == 1
    shared = shared_components(loaded, level) if same_graph else {}
    out = out or Path("runs") / "compare"
    out.mkdir(parents=True, exist_ok=True)
    result = {"circuits": names, "level": level, "pairs": pairs,
              "shared": [{"circuits": list(g), "components": c} for g, c in shared.items()]}
    write_json(out / "compare.json", result, indent=1)
    files = [out / "compare.json"]
    if shared:
        upset_figure(shared, names, out / "upset.png", f"shared {level}")
        files.append(out / "upset.png")
    if json_out:
        print(json.dumps({**result, "files": [str(f) for f in files]}))
        return
    table = Table(title=f"Circuit overlap ({level})")
    for column in ("a", "b", "jaccard", "precision", "recall", "depth overlap"):
        table.add_column(column)
    for row in pairs:
        cells = [f"{row[k]:.3f}" if k in row else "-" for k in ("jaccard", "precision",
                                                               "recall")]
        table.add_row(row["a"], row["b"], *cells, f"{row['depth_overlap']:.3f}")
    console.print(table)
    every = shared.get(tuple(names), [])
    console.print(f"shared by all {len(names)}: {', '.join(every) or 'none'}")
    console.print(f"saved: {', '.join(str(f) for f in files)}")
