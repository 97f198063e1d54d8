"""Circuits of the embedded model: one row per (task, method) for docs/circuits.md.

Runs :func:`modelweave.circuits.discover` (same settings as ``modelweave discover``) and
prints a Markdown table: prompts, CPR, CMD, the smallest circuit reaching faithfulness 0.9
(edges, share of all edges, nodes) and the wall time. Each circuit is saved with its figures
under ``--out`` (default ``runs/circuit-table``).

    .venv/bin/python scripts/circuit_table.py                       # ~1 h on 2 cores
    .venv/bin/python scripts/circuit_table.py --tasks ioi --methods eap-ig
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from transformers.utils import logging as hf_logging

from modelweave import load_model
from modelweave.circuits import discover, to_mib
from modelweave.report.circuit_graph import save_circuit_graph
from modelweave.report.curves import save_faithfulness_curve
from modelweave.runtime import keep_freed_memory
from modelweave.tasks import make_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="ioi,seq_digits,entity_tracking")
    parser.add_argument("--methods", default="eap,eap-ig,prune")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--out", type=Path, default=Path("runs/circuit-table"))
    args = parser.parse_args()
    keep_freed_memory()
    hf_logging.set_verbosity_error()
    model = load_model("smollm2-135m")
    rows = []
    print("| task | method | prompts | CPR | CMD | edges at f ≥ 0.9 | share | nodes | f | time |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for task in args.tasks.split(","):
        batch = make_batch(model, task, n=args.n, seed=0, same_length=True)
        for method in args.methods.split(","):
            start = time.perf_counter()
            found = discover(model, batch, method, target=args.target)
            seconds = time.perf_counter() - start
            c = found.circuit
            out = args.out / f"{task}-{method}"
            c.save(out / "circuit.json")
            (out / "circuit.mib.json").write_text(json.dumps(to_mib(c, model.cfg.d_model)))
            save_circuit_graph(c, out / "circuit.html")
            save_faithfulness_curve(c.curve, f"{method} on {task}", out / "faithfulness")
            summary = {**found.summary(), "task": task, "n": len(batch), "wall": seconds}
            (out / "summary.json").write_text(json.dumps(summary, indent=1))
            rows.append(summary)
            flag = "" if found.reached else " (not reached)"
            print(f"| {task} | {method} | {len(batch)} | {summary['cpr']:.3f} | "
                  f"{summary['cmd']:.3f} | {c.n_edges}{flag} | "
                  f"{100 * c.n_edges / c.graph.n_edges:.2f}% | {len(c.nodes)} | "
                  f"{found.faithfulness:.3f} | {seconds:.0f} s |", flush=True)
    (args.out / "table.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
