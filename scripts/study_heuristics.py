"""The bag-of-heuristics study on a LoRA fine-tune of the embedded model (docs/heuristics.md).

First fine-tune (about 40-60 min on 2 cores):

    .venv/bin/modelweave finetune --task arith -p operators=+,- -p 'end=\\n' --scoring full \\
        --lora-r 16 --lr 2e-3 --batch-size 32 --n 8192 --steps 2400 --save-every 300 \\
        --schedule linear --out runs/arith-lora

then:

    .venv/bin/python scripts/study_heuristics.py --finetune runs/arith-lora --out runs/heuristics

It measures held-out accuracy (prompts the fine-tune never saw), runs the whole analysis for
+ and - on the fine-tuned model, the emergence of the final heuristic neurons over the saved
checkpoints, and draws the figures of the docs. Every number it prints is in ``study.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from modelweave import load_model
from modelweave.analysis.heuristics.emergence import emergence, find_checkpoints
from modelweave.analysis.heuristics.pipeline import find_heuristics
from modelweave.analysis.heuristics.prompts import _base_batch, answered_correctly
from modelweave.analysis.heuristics.results import save_results, summary
from modelweave.tasks import get_task
from modelweave.tasks.arith import arith_grid


def held_out_accuracy(model, operators: str, n: int, train_n: int, op_max: int = 100,
                      seed: int = 1) -> dict:
    """Greedy accuracy (whole answer, number ends) on ``n`` random prompts per operator that
    are not among the fine-tune's ``train_n`` training examples (seed 0)."""
    train = {(e.meta["op1"], e.meta["op"], e.meta["op2"]) for e in get_task(
        "arith", operators=operators, end="\n").generate(train_n, 0, model.tokenizer)}
    out = {}
    for op in operators.split(","):
        unseen = [p for p in arith_grid(op, 0, op_max) if (p.op1, p.operator, p.op2) not in train]
        sample = random.Random(seed).sample(unseen, min(n, len(unseen)))
        ok = answered_correctly(model, _base_batch(model, sample, False))
        out[op] = {"accuracy": float(ok.float().mean()), "n": len(sample),
                   "unseen_in_grid": len(unseen)}
    return out


def draw_figures(results, emerged: dict | None, folder: Path) -> list[Path]:
    """PNG figures for the docs: key maps of the top neurons and the faithfulness curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in results:
        ranked = sorted(range(len(r.maps.neurons)), key=lambda i: -max(
            (m.score for m in r.matches.get(r.maps.neurons[i], [])), default=0))[:6]
        fig, axes = plt.subplots(2, 6, figsize=(18, 6.5))
        for col, i in enumerate(ranked):
            L, n = r.maps.neurons[i]
            label = r.matches.get((L, n), [])
            for row, which in enumerate(("key", "kv")):
                ax = axes[row, col]
                grid = r.maps.grid(i, which).numpy()
                bound = float(abs(grid[grid == grid]).max()) or 1.0
                ax.imshow(grid, cmap="RdBu_r", aspect="auto", vmin=-bound, vmax=bound)
                result_side = row == 1  # result heuristics are read on key-value maps
                name = next((m.name for m in label
                             if m.name.startswith("result") == result_side), "")
                ax.set_title(f"m{L}.n{n} {'key' if row == 0 else 'key-value'}\n{name}",
                             fontsize=8)
                ax.set_xlabel("op2", fontsize=7)
                ax.set_ylabel("op1", fontsize=7)
                ax.tick_params(labelsize=6)
        fig.suptitle(f"{r.operator}: top neurons' key maps (top) and key-value maps (bottom)")
        fig.tight_layout()
        path = folder / f"heuristics_maps_{'add' if r.operator == '+' else 'sub'}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    fig, axes = plt.subplots(1, 3 if emerged else 2, figsize=(15 if emerged else 10, 3.8))
    for r in results:
        axes[0].plot(r.heads.counts, r.heads.faithfulness, "o-", label=r.operator)
        axes[1].plot(r.neurons.counts, r.neurons.faithfulness, "o-", label=r.operator)
    axes[0].set(xlabel="heads (every MLP kept)", ylabel="faithfulness (NL)", xscale="symlog")
    axes[1].set(xlabel="neurons per layer", ylabel="faithfulness (NL)", xscale="symlog")
    if emerged:
        axes[2].plot(emerged["steps"], emerged["share_present"], "o-",
                     label="final matches present")
        axes[2].plot(emerged["steps"], emerged["accuracy"], "s-", label="accuracy")
        ratio = [x if x is not None else float("nan")
                 for x in emerged["shared_faithfulness_ratio"]]
        axes[2].plot(emerged["steps"], ratio, "^-", label="F shared / F all")
        axes[2].set(xlabel="fine-tuning step", ylim=(0, 1.05))
        axes[2].legend(fontsize=7)
    for ax in axes[:2]:
        ax.axhline(0.9, color="grey", lw=0.5)
        ax.legend()
    fig.tight_layout()
    path = folder / "heuristics_curves.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [*paths, path]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--finetune", default="runs/arith-lora")
    parser.add_argument("--out", default="runs/heuristics")
    parser.add_argument("--train-n", type=int, default=8192)
    parser.add_argument("--grid-fraction", type=float, default=0.25)
    parser.add_argument("--figures", default="docs/img")
    parser.add_argument("--skip-emergence", action="store_true")
    parser.add_argument("--max-op", type=int, default=100)
    parser.add_argument("--model", default=None,
                        help="the model analysed (default: FINETUNE/merged; a checkpoint "
                             "FINETUNE/checkpoints/step-N ends the emergence curve at N)")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    out = Path(args.out)
    finetuned = Path(args.finetune)
    analysed = Path(args.model) if args.model else finetuned / "merged"
    model = load_model(str(analysed))
    base = load_model("smollm2-135m")
    study: dict = {"model": str(analysed)}
    start = time.perf_counter()
    study["held_out"] = held_out_accuracy(model, "+,-", 500, args.train_n, args.max_op)
    study["held_out_base"] = held_out_accuracy(base, "+,-", 500, args.train_n, args.max_op)
    study["seconds_held_out"] = time.perf_counter() - start
    print(json.dumps({k: study[k] for k in ("held_out", "held_out_base")}), flush=True)
    start = time.perf_counter()
    results = find_heuristics(model, "+,-", base=base, grid_fraction=args.grid_fraction,
                              op_max=args.max_op,
                              progress=lambda msg, *_: print(
                                  f"[{time.perf_counter() - start:.0f}s] {msg}", flush=True))
    study["seconds_pipeline"] = time.perf_counter() - start
    save_results(results, out, {"model": study["model"], "settings": {
        "operators": ["+", "-"], "grid_fraction": args.grid_fraction}})
    study["operators"] = [summary(r, model.cfg.d_mlp) for r in results]
    for r, s in zip(results, study["operators"], strict=True):
        s["heads_curve"] = r.heads.to_dict()
        s["neuron_curve"] = r.neurons.to_dict()
        s["decodability"] = r.decodability
        s["knockouts"] = [k.to_dict() for k in r.knockouts]
        s["prompt_knockouts"] = [k.to_dict() for k in r.prompt_knockouts]
        s["family_counts"] = r.family_counts()
        s["top_heuristics"] = sorted(((len(v), k) for k, v in r.heuristic_neurons().items()),
                                     reverse=True)[:15]
        exact, approx = torch.tensor(r.confirm["exact"]), torch.tensor(r.confirm["attribution"])
        s["confirm_sign_agreement"] = float(((exact > 0) == (approx > 0)).float().mean())
        print(json.dumps({k: v for k, v in s.items() if k not in (
            "heads_curve", "decodability", "family_counts")}), flush=True)
    emerged = None
    if not args.skip_emergence:
        start = time.perf_counter()
        found = find_checkpoints(finetuned)
        if analysed.name.startswith("step-"):
            found = [(step, p) for step, p in found if step <= int(analysed.name[5:])]
        emerged = emergence(found, "+", grid_fraction=args.grid_fraction / 2,
                            op_max=args.max_op, n_reference=128,
                            first_layer=results[0].neurons.first_layer,
                            progress=lambda msg: print(msg, flush=True))
        study["emergence"] = {k: v for k, v in emerged.items() if k != "final_matches"}
        study["seconds_emergence"] = time.perf_counter() - start
        print(json.dumps(study["emergence"]), flush=True)
    study["figures"] = [str(p) for p in draw_figures(results, emerged, Path(args.figures))]
    (out / "study.json").write_text(json.dumps(study, indent=1, default=str))
    print(f"study: {out / 'study.json'}")


if __name__ == "__main__":
    main()
