"""Study (b): do sequence-continuation tasks share a circuit in the embedded model?

EAP-IG circuits (smallest with faithfulness >= 0.9, signed scores) for each task and prompt
seed, their pairwise node overlaps beside the chance overlap of a random circuit with the same
count of heads and MLPs per layer (exact expectation; null range and p-value from matched
draws), the mean over seeds with a t-interval, the heads every circuit shares and their
head-role scores with bootstrap intervals over items, and an UpSet figure (first seed). Prints
Markdown.

    .venv/bin/python scripts/study_shared_sequences.py --tasks seq_digits,seq_months --n 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transformers.utils import logging as hf_logging

from modelweave import load_model
from modelweave.analysis import overlap, shared_components
from modelweave.circuits import Circuit, discover
from modelweave.methods.head_roles import head_roles
from modelweave.metrics.uncertainty import across_seeds
from modelweave.report.compare import upset_figure
from modelweave.runtime import keep_freed_memory
from modelweave.tasks import make_batch


def _ci(low: float, high: float) -> str:
    return f"[{low:.3f}, {high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="seq_digits,seq_number_words,seq_months")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--null-draws", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("runs/study-shared"))
    parser.add_argument("--figure", default="docs/img/shared_sequences_upset.png")
    parser.add_argument("--reuse", action="store_true",
                        help="load OUT/TASK-SEED.json where it exists instead of discovering")
    parser.add_argument("--circuits-only", action="store_true",
                        help="find and save the circuits, then stop")
    args = parser.parse_args()
    keep_freed_memory()
    hf_logging.set_verbosity_error()
    tasks, seeds = args.tasks.split(","), [int(s) for s in args.seeds.split(",")]
    model = load_model("smollm2-135m")
    circuits: dict[int, dict] = {}
    print("| task | seed | prompts | edges | nodes | faithfulness | CPR | CMD |")
    print("|---|---|---|---|---|---|---|---|")
    for seed in seeds:
        circuits[seed] = {}
        for task in tasks:
            path = args.out / f"{task}-{seed}.json"
            if args.reuse and path.exists():
                circuits[seed][task] = c = Circuit.load(path)
                print(f"| {task} | {seed} | - | "
                      f"{c.n_edges} | {len(c.nodes)} | (saved) | {c.curve['cpr']:.3f} | "
                      f"{c.curve['cmd']:.3f} |")
                continue
            batch = make_batch(model, task, n=args.n, seed=seed, same_length=True)
            found = discover(model, batch, "eap-ig", target=0.9)
            c = found.circuit
            c.save(path)
            circuits[seed][task] = c
            print(f"| {task} | {seed} | {len(batch)} | {c.n_edges} | {len(c.nodes)} | "
                  f"{found.faithfulness:.3f} | {c.curve['cpr']:.3f} | {c.curve['cmd']:.3f} |",
                  flush=True)
    if args.circuits_only:
        return
    print(f"\nNode overlap (a / b), seed {seeds[0]}, beside a random circuit shaped like b "
          f"(exact chance; {args.null_draws} matched draws for the 95% range and p)\n")
    print("| pair | measure | observed | chance | null 95% range | p | mean of "
          f"{len(seeds)} seeds [t] | chance, mean of seeds |\n|---|---|---|---|---|---|---|---|")
    for i, a in enumerate(tasks):
        for b in tasks[i + 1:]:
            per_seed = [overlap(circuits[s][a], circuits[s][b], null_draws=args.null_draws,
                                seed=s) for s in seeds]
            first = per_seed[0]
            for m in ("jaccard", "precision", "recall"):
                null = first.null.nulls[m]
                agg = across_seeds([getattr(o, m) for o in per_seed])
                chance = across_seeds([o.null.chance[m] for o in per_seed])
                print(f"| {a} / {b} | {m} | {getattr(first, m):.3f} | "
                      f"{first.null.chance[m]:.3f} | {_ci(null.null_low, null.null_high)} | "
                      f"{null.p_value:.3g} | {agg.mean:.3f} {_ci(agg.ci_low, agg.ci_high)} | "
                      f"{chance.mean:.3f} |")
    first = circuits[seeds[0]]
    shared = shared_components(first)
    upset_figure(shared, tasks, args.figure,
                 "heads and MLPs shared exclusively by each subset of circuits")
    every = shared.get(tuple(tasks), [])
    roles = head_roles(model)
    print(f"\nShared by all ({len(every)}, seed {seeds[0]}): {', '.join(every)}\n")
    print("| head | " + " | ".join(roles.scores) + " |\n|---|" + "---|" * len(roles.scores))
    for head in (h for h in every if h.startswith("a")):
        layer, index = (int(x) for x in head[1:].split(".h"))
        cells = []
        for role in roles.scores:
            agg = roles.interval(role, layer, index)
            cells.append(f"{agg.mean:.2f} [{agg.ci_low:.2f}, {agg.ci_high:.2f}]")
        print(f"| {head} | " + " | ".join(cells) + " |")
    if "successor" in roles.scores:
        print("\nTop successor heads of the model (score [95% CI over ordinal items]): "
              + ", ".join(f"a{h['head'].replace('.', '.h')} {h['score']:.2f} "
                          f"{_ci(*h['score_ci'])}" for h in roles.top_intervals("successor", 3)))


if __name__ == "__main__":
    main()
