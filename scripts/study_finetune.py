"""Study (a): does a LoRA fine-tune on entity tracking re-use the base model's circuit?

Fine-tunes the embedded model with LoRA, 200 steps on examples of seed 0 (or reuses
``--tuned DIR/merged`` from ``modelweave finetune --task entity_tracking``), finds both
models' EAP-IG circuits on prompts of another seed (smallest with faithfulness >= 0.9),
compares them, evaluates each
circuit in the other model, and runs CMAP from the fine-tune into the base for head groups:
heads in both circuits, heads only in the tuned circuit, all other heads, and all MLPs.
Prints Markdown.

    .venv/bin/python scripts/study_finetune.py          # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transformers.utils import logging as hf_logging

from modelweave import load_model
from modelweave.analysis import cmap, overlap, transfer_faithfulness
from modelweave.circuits import CircuitEvaluator, discover
from modelweave.models.finetune import finetune
from modelweave.runtime import keep_freed_memory
from modelweave.tasks import make_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="entity_tracking")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--tuned", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/study-finetune"))
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
    # prompts from another seed than the training examples (seed 0)
    batch = make_batch(base, args.task, n=args.n, seed=1000, same_length=True)
    circuits, evaluators = {}, {}
    print("| model | logit diff (clean) | corrupted | circuit edges | nodes | faithfulness | CPR |"
          " CMD |\n|---|---|---|---|---|---|---|---|")
    for name, model in (("base", base), ("tuned", tuned)):
        found = discover(model, batch, "eap-ig", target=0.9)
        circuits[name], evaluators[name] = found.circuit, CircuitEvaluator(model, batch)
        c, ev = found.circuit, evaluators[name]
        c.save(args.out / f"{name}.json")
        print(f"| {name} | {ev.full:.3f} | {ev.empty:.3f} | {c.n_edges} | {len(c.nodes)} | "
              f"{found.faithfulness:.3f} | {c.curve['cpr']:.3f} | {c.curve['cmd']:.3f} |")
    o = overlap(circuits["base"], circuits["tuned"])
    print(f"\nNode overlap base/tuned: Jaccard {o.jaccard:.3f}, precision {o.precision:.3f}, "
          f"recall {o.recall:.3f}; shared: {', '.join(o.shared)}")
    print(f"Base circuit in the tuned model: faithfulness "
          f"{transfer_faithfulness(circuits['base'], evaluators['tuned']):.3f}; tuned circuit in "
          f"the base model: {transfer_faithfulness(circuits['tuned'], evaluators['base']):.3f}")
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
    recovery = cmap(tuned, base, batch, groups)
    print(f"\nCMAP tuned -> base (logit diff: tuned {recovery['_source']:.3f}, base "
          f"{recovery['_target']:.3f})\n\n| group | components | recovery |\n|---|---|---|")
    for name, members in groups.items():
        print(f"| {name} | {len(members)} | {recovery[name]:.3f} |")
    _figure(groups, recovery, "docs/img/finetune_cmap.png")


def _figure(groups: dict, recovery: dict, path: str) -> None:
    """Bar chart of each group's CMAP recovery."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(groups)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.barh(range(len(names)), [recovery[n] for n in names], color="#4c72b0")
    ax.set_yticks(range(len(names)), [f"{n} ({len(groups[n])})" for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("share of the fine-tune's gain recovered in the base model (CMAP)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
