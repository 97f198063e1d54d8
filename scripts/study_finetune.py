"""Study (a): does a LoRA fine-tune on entity tracking re-use the base model's circuit?

Fine-tunes the embedded model with LoRA on examples of seed 0 (or reuses ``--tuned
DIR/merged`` from ``modelweave finetune --task entity_tracking``), finds both models' EAP-IG
circuits on prompts of another seed (smallest with faithfulness >= 0.9), compares them beside
the chance overlap of a random circuit matched by (type, layer), evaluates each circuit in the
other model, and runs CMAP from the fine-tune into the base for head groups (heads in both
circuits, only in one, all other heads, all MLPs, everything) on ``--seeds`` prompt seeds:
each recovery with its bootstrap interval over prompts, the mean over seeds with a t-interval,
and, for the groups that can be matched, a null of random head groups with the same count of
heads per layer. Prints Markdown.

    .venv/bin/python scripts/study_finetune.py --tuned runs/ft-entity/merged
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transformers.utils import logging as hf_logging

from modelweave import load_model
from modelweave.analysis import overlap, transfer_faithfulness
from modelweave.analysis.cmap import CMAPResult, cmap_nulls
from modelweave.circuits import Circuit, CircuitEvaluator, discover
from modelweave.metrics.uncertainty import across_seeds
from modelweave.models.finetune import finetune
from modelweave.report.compare import cmap_figure
from modelweave.runtime import keep_freed_memory
from modelweave.tasks import make_batch


def _ci(low: float, high: float) -> str:
    return f"[{low:.3f}, {high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="entity_tracking")
    parser.add_argument("--n", type=int, default=8, help="prompts for the circuits")
    parser.add_argument("--cmap-n", type=int, default=16, help="prompts per CMAP seed")
    parser.add_argument("--seeds", default="1000,1001,1002", help="CMAP prompt seeds")
    parser.add_argument("--null-draws", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--tuned", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/study-finetune"))
    parser.add_argument("--reuse", action="store_true",
                        help="load OUT/base.json, OUT/tuned.json and OUT/cmap-SEED.json where "
                             "they exist instead of computing them again")
    args = parser.parse_args()
    keep_freed_memory()
    hf_logging.set_verbosity_error()
    base = load_model("smollm2-135m")
    if args.tuned is None:
        result = finetune(base, args.task, args.out / "lora", steps=args.steps, seed=0)
        tuned = result.model
        print(f"LoRA r=8, {args.steps} steps: loss {result.losses[0]:.3f} -> "
              f"{sum(result.losses[-10:]) / 10:.3f} in {result.seconds:.0f} s\n")
    else:
        tuned = load_model(args.tuned)
    seeds = [int(s) for s in args.seeds.split(",")]
    # prompts from other seeds than the training examples (seed 0)
    batch = make_batch(base, args.task, n=args.n, seed=seeds[0], same_length=True)
    circuits, evaluators = {}, {}
    print("| model | circuit edges | nodes | faithfulness | CPR | CMD |\n|---|---|---|---|---|---|")
    for name, model in (("base", base), ("tuned", tuned)):
        path = args.out / f"{name}.json"
        if args.reuse and path.exists():
            circuits[name] = c = Circuit.load(path)
            print(f"| {name} | {c.n_edges} | {len(c.nodes)} | (saved) | {c.curve['cpr']:.3f} | "
                  f"{c.curve['cmd']:.3f} |")
            continue
        found = discover(model, batch, "eap-ig", target=0.9)
        circuits[name], evaluators[name] = found.circuit, CircuitEvaluator(model, batch)
        c = found.circuit
        c.save(path)
        print(f"| {name} | {c.n_edges} | {len(c.nodes)} | {found.faithfulness:.3f} | "
              f"{c.curve['cpr']:.3f} | {c.curve['cmd']:.3f} |")
    o = overlap(circuits["base"], circuits["tuned"], null_draws=1000)
    print("\n| measure | observed | chance (exact) | null 95% range | p |\n|---|---|---|---|---|")
    for m in ("jaccard", "precision", "recall"):
        null = o.null.nulls[m]
        print(f"| {m} | {getattr(o, m):.3f} | {o.null.chance[m]:.3f} | "
              f"{_ci(null.null_low, null.null_high)} | {null.p_value:.3g} |")
    print(f"\nshared: {', '.join(o.shared)}")
    if evaluators:
        print(f"Base circuit in the tuned model: faithfulness "
              f"{transfer_faithfulness(circuits['base'], evaluators['tuned']):.3f}; tuned "
              f"circuit in the base model: "
              f"{transfer_faithfulness(circuits['tuned'], evaluators['base']):.3f}")
    cfg = base.cfg
    heads = {f"a{layer}.h{h}" for layer in range(cfg.n_layers) for h in range(cfg.n_heads)}
    in_base = {n for n in circuits["base"].nodes if n.startswith("a")}
    in_tuned = {n for n in circuits["tuned"].nodes if n.startswith("a")}
    groups = {"heads in both circuits": sorted(in_base & in_tuned),
              "heads only in the tuned circuit": sorted(in_tuned - in_base),
              "heads only in the base circuit": sorted(in_base - in_tuned),
              "all other heads": sorted(heads - in_base - in_tuned),
              "all MLPs": [f"m{layer}" for layer in range(cfg.n_layers)],
              "everything": sorted(heads) + [f"m{layer}" for layer in range(cfg.n_layers)]}
    groups = {k: v for k, v in groups.items() if v}
    runs = []
    for seed in seeds:
        path = args.out / f"cmap-{seed}.json"
        if args.reuse and path.exists():
            runs.append(CMAPResult.load(path))
            continue
        prompts = make_batch(base, args.task, n=args.cmap_n, seed=seed, same_length=True)
        result = cmap_nulls(tuned, base, prompts, groups, null_draws=args.null_draws,
                            on_unmatched="skip", seed=seed)
        result.save(path)
        runs.append(result)
    first = runs[0]
    print(f"\nCMAP tuned -> base, {first.n} prompts per seed, seeds {args.seeds}; seed "
          f"{seeds[0]}: logit diff tuned {first.source:.3f} {_ci(*first.source_ci)}, base "
          f"{first.target:.3f} {_ci(*first.target_ci)}\n")
    print(f"| group | components | recovery (seed {seeds[0]}) [bootstrap] | mean of "
          f"{len(seeds)} seeds [t] | null mean [95% range] | p per seed |\n"
          "|---|---|---|---|---|---|")
    for name, members in groups.items():
        g = first.groups[name]
        seeds_agg = across_seeds([r.groups[name].recovery for r in runs])
        if g.null is not None:
            nulls = [r.groups[name].null for r in runs]
            null = (f"{sum(n.null_mean for n in nulls) / len(nulls):.3f} "
                    f"{_ci(g.null.null_low, g.null.null_high)}")
            ps = " / ".join(f"{n.p_value:.3g}" for n in nulls)
        else:
            null, ps = "cannot be matched", "-"
        print(f"| {name} | {len(members)} | {g.recovery:.3f} {_ci(*g.recovery_ci)} | "
              f"{seeds_agg.mean:.3f} {_ci(seeds_agg.ci_low, seeds_agg.ci_high)} | {null} | "
              f"{ps} |")
    cmap_figure(first, "docs/img/finetune_cmap.png",
                "share of the fine-tune's gain recovered in the base (CMAP)")


if __name__ == "__main__":
    main()
