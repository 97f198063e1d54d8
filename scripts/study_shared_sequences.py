"""Study (b): do seq_digits, seq_number_words and seq_months share a circuit in the embedded model?

EAP-IG circuits (smallest with faithfulness >= 0.9, signed scores) for the three
sequence-continuation tasks, their pairwise overlaps, the heads all three share and their
head-role scores (successor, induction, ...), and an UpSet figure. Prints Markdown.

    .venv/bin/python scripts/study_shared_sequences.py      # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transformers.utils import logging as hf_logging

from modelweave import load_model
from modelweave.analysis import by_role, overlap, shared_components
from modelweave.circuits import discover
from modelweave.methods.head_roles import head_roles
from modelweave.report.compare import upset_figure
from modelweave.runtime import keep_freed_memory
from modelweave.tasks import make_batch

TASKS = ("seq_digits", "seq_number_words", "seq_months")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("runs/study-shared"))
    args = parser.parse_args()
    keep_freed_memory()
    hf_logging.set_verbosity_error()
    model = load_model("smollm2-135m")
    circuits = {}
    print("| task | prompts | edges | nodes | faithfulness | CPR | CMD |")
    print("|---|---|---|---|---|---|---|")
    for task in TASKS:
        batch = make_batch(model, task, n=args.n, seed=0, same_length=True)
        found = discover(model, batch, "eap-ig", target=0.9)
        c = found.circuit
        c.save(args.out / f"{task}.json")
        circuits[task] = c
        print(f"| {task} | {len(batch)} | {c.n_edges} | {len(c.nodes)} | "
              f"{found.faithfulness:.3f} | {c.curve['cpr']:.3f} | {c.curve['cmd']:.3f} |")
    print("\n| pair | Jaccard | precision | recall |\n|---|---|---|---|")
    for i, a in enumerate(TASKS):
        for b in TASKS[i + 1:]:
            o = overlap(circuits[a], circuits[b])
            print(f"| {a} / {b} | {o.jaccard:.3f} | {o.precision:.3f} | {o.recall:.3f} |")
    shared = shared_components(circuits)
    upset_figure(shared, list(TASKS), "docs/img/shared_sequences_upset.png",
                 "heads and MLPs shared exclusively by each subset of circuits")
    every = shared.get(TASKS, [])
    roles = head_roles(model)
    print(f"\nShared by all three ({len(every)}): {', '.join(every)}\n")
    print("| head | " + " | ".join(roles.scores) + " |\n|---|" + "---|" * len(roles.scores))
    for head in (h for h in every if h.startswith("a")):
        layer, index = (int(x) for x in head[1:].split(".h"))
        print(f"| {head} | " + " | ".join(f"{float(g[layer, index]):.2f}"
                                          for g in roles.scores.values()) + " |")
    grouped = by_role([h for h in every if h.startswith("a")], roles, threshold=0.3)
    print("\nShared heads by role (score >= 0.3): " + "; ".join(
        f"{role}: {', '.join(heads) or 'none'}" for role, heads in grouped.items()))


if __name__ == "__main__":
    main()
