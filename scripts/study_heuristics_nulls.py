"""Heuristic classification of a fine-tune against its nulls, over seeds (docs/heuristics.md).

For each seed of prompts and each operator: correct prompts (the fine-tune's training prompts
removed), neurons ranked by attribution on the discovery prompts, the first decodable layer
against the majority baseline on the held-out evaluation prompts, the top neurons per layer
from it classified on the operand grid (training prompts removed) beside the three nulls
(random neurons of the same layers, the same neurons on the base model, prompt-permuted maps;
``modelweave.analysis.heuristics.nulls``). Localisation, neuron curves and knockouts are not
run (they do not enter the classification). Every number is in ``OUT/nulls.json``; the last
lines print the doc's table.

    .venv/bin/python scripts/study_heuristics_nulls.py --finetune runs/arith-lora-small \\
        --out runs/heuristics-nulls --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from modelweave import load_model
from modelweave.analysis.heuristics.maps import grid_activations
from modelweave.analysis.heuristics.neurons import (
    first_decodable_layer,
    neuron_attribution,
    rank_neurons,
)
from modelweave.analysis.heuristics.pipeline import (
    Settings,
    classify_top,
    decode,
    split_prompts,
)
from modelweave.analysis.heuristics.prompts import _base_batch, answered_correctly
from modelweave.analysis.heuristics.results import OP_NAMES
from modelweave.metrics.uncertainty import across_seeds
from modelweave.tasks import get_task
from modelweave.tasks.arith import arith_grid


def training_prompts(model, operators: str, n: int) -> set:
    """(op1, op, op2) of the fine-tune's ``n`` training examples (task arith, seed 0)."""
    return {(e.meta["op1"], e.meta["op"], e.meta["op2"]) for e in get_task(
        "arith", operators=operators, end="\n").generate(n, 0, model.tokenizer)}


def without(batch, train: set):
    """``batch`` without the prompts in ``train`` (and how many were removed)."""
    keep = [i for i, e in enumerate(batch.examples)
            if (e.meta["op1"], e.meta["op"], e.meta["op2"]) not in train]
    return batch.select(keep), len(batch) - len(keep)


def held_out_accuracy(model, op: str, train: set, n: int, op_max: int, seed: int = 1) -> dict:
    unseen = [p for p in arith_grid(op, 0, op_max) if (p.op1, p.operator, p.op2) not in train]
    sample = random.Random(seed).sample(unseen, min(n, len(unseen)))
    ok = answered_correctly(model, _base_batch(model, sample, False)).float().numpy()
    from modelweave.metrics.uncertainty import bootstrap_stat

    agg = bootstrap_stat(ok)
    return {"accuracy": agg.mean, "ci": [agg.ci_low, agg.ci_high], "n": len(sample)}


def one(model, base, op: str, s: Settings, train: set, shared: dict) -> dict:
    """One seed. ``shared``: the grid (training prompts removed) and its activations on both
    models, computed once for all seeds (the grid is the seed-0 one: seeds vary the prompts,
    the ranking, the decodability split and the null draws)."""
    sec: dict = {}
    t = time.perf_counter()
    batch, removed = without(s.prompts(model, op), train)
    disc, evalset = split_prompts(batch, s)
    ranking = rank_neurons(neuron_attribution(model, disc))
    decoded = decode(model, evalset if len(evalset) >= 20 else batch, s)
    first = first_decodable_layer(decoded)
    sec["prompts_rank_decode"] = round(time.perf_counter() - t, 1)
    if "grid" not in shared:
        t = time.perf_counter()
        shared["grid"], shared["grid_removed"] = without(s.grid(model, op), train)
        layers = range(model.cfg.n_layers)
        shared["acts"] = grid_activations(model, shared["grid"], layers)
        shared["base_acts"] = grid_activations(base, shared["grid"], layers)
        sec["grid_activations_once"] = round(time.perf_counter() - t, 1)
    grid, grid_removed = shared["grid"], shared["grid_removed"]
    maps, matches, nulls = classify_top(model, op, s, ranking, first, base=base, seconds=sec,
                                        grid=grid, acts=shared["acts"],
                                        base_acts=shared["base_acts"])
    counts: dict[str, int] = {}
    for ms in matches.values():
        for m in {x.name for x in ms}:
            counts[m] = counts.get(m, 0) + 1
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    return {"operator": op, "n_discovery": len(disc), "n_eval": len(evalset),
            "train_removed_prompts": removed, "grid": len(grid),
            "train_removed_grid": grid_removed, "decoding": decoded.to_dict(),
            "first_layer": first, "classified": len(matches),
            "share_matched": sum(bool(m) for m in matches.values()) / max(len(matches), 1),
            "nulls": {k: v.to_dict() for k, v in nulls.items()},
            "top_labels": [{"label": name, "neurons": c,
                            **{k: nulls[k].labels.get(name) for k in nulls
                               if nulls[k].computed}} for name, c in top],
            "seconds": sec}


def aggregate(runs: list[dict]) -> dict:
    """Across seeds (t-interval): share matched, each null's mean, ratio, p (max too)."""
    def agg(values):
        finite = [v for v in values if v is not None and np.isfinite(v)]
        if not finite:
            return {"mean": None, "ci": [None, None], "values": list(values)}
        a = across_seeds(finite)
        return {"mean": a.mean, "ci": [a.ci_low, a.ci_high], "values": list(values)}

    out = {"share_matched": agg([r["share_matched"] for r in runs]),
           "first_layer": [r["first_layer"] for r in runs],
           "decodable_layer": [r["decoding"]["first_layer"] for r in runs]}
    for null in ("random", "base", "permuted"):
        rows = [r["nulls"][null] for r in runs if r["nulls"][null]["computed"]]
        if rows:
            out[null] = {"null_mean": agg([x["share"]["null_mean"] for x in rows]),
                         "ratio": agg([x["share"]["ratio"] for x in rows]),
                         "p_values": [x["share"]["p_value"] for x in rows]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--finetune", default="runs/arith-lora-small")
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--out", default="runs/heuristics-nulls")
    parser.add_argument("--train-n", type=int, default=4096)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--operators", default="+,-")
    parser.add_argument("--grid-fraction", type=float, default=0.25)
    parser.add_argument("--n-prompts", type=int, default=300)
    parser.add_argument("--held-out", type=int, default=300, help="0: not measured")
    parser.add_argument("--max-op", type=int, default=100)
    parser.add_argument("--null-draws", type=int, default=100)
    parser.add_argument("--permutation-draws", type=int, default=20)
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    model = load_model(str(Path(args.finetune) / "merged"))
    base = load_model(args.base)
    train = training_prompts(model, args.operators, args.train_n)
    study: dict = {"model": str(Path(args.finetune) / "merged"), "base": args.base,
                   "train_prompts": len(train), "args": vars(args), "held_out": {}}
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for op in args.operators.split(",") if args.held_out else ():
        study["held_out"][op] = {
            "finetune": held_out_accuracy(model, op, train, args.held_out, args.max_op),
            "base": held_out_accuracy(base, op, train, args.held_out, args.max_op)}
    print(json.dumps(study["held_out"]), flush=True)
    study["seconds_held_out"] = round(time.perf_counter() - start, 1)
    study["runs"] = {}
    for op in args.operators.split(","):
        runs, shared = [], {}
        for seed in map(int, args.seeds.split(",")):
            s = Settings(operators=(op,), n_prompts=args.n_prompts, seed=seed, op_max=args.max_op,
                         grid_fraction=args.grid_fraction, null_draws=args.null_draws,
                         permutation_draws=args.permutation_draws)
            t = time.perf_counter()
            run = one(model, base, op, s, train, shared)
            run["seed"], run["seconds_total"] = seed, round(time.perf_counter() - t, 1)
            runs.append(run)
            study["runs"][OP_NAMES[op]] = runs  # written after every run
            (out / "nulls.json").write_text(json.dumps(study, indent=1, default=str))
            print(json.dumps({k: run[k] for k in ("operator", "seed", "first_layer",
                                                  "share_matched", "top_labels",
                                                  "seconds_total")}), flush=True)
            for name, res in run["nulls"].items():
                print(f"  {name}: {res['share'] if res['computed'] else res['reason']}",
                      flush=True)
        study["runs"][OP_NAMES[op]] = runs
        study.setdefault("aggregate", {})[OP_NAMES[op]] = aggregate(runs)
    (out / "nulls.json").write_text(json.dumps(study, indent=1, default=str))
    print(json.dumps(study["aggregate"], default=str))
    print(f"study: {out / 'nulls.json'}")


if __name__ == "__main__":
    main()
