"""Verified localisation on the embedded model: ``locate`` (AtP* ranking + exact verification)
vs the full exact sweep, side by side in one run.

For each task (IOI, seq_digits, entity tracking; ``--prompts`` prompts of one length,
denoising, logit diff), the head x position grid (``hook_z`` of every head at every position,
all layers): the full exact sweep on the suffix engine (the truth), then ``locate`` for the
exact top ``k`` (AtP* ranking, QK fix has nothing to fix on ``hook_z``, GradDrop on), once
with each margin calibration (``tail``, the default, and ``all``); the time ratio, the recall
of the true top ``k`` and the exact patches spent. AtP* vs plain AtP at equal budgets: how many
of the true top ``k`` lie within each ranking's first ``b`` units, for ``b`` = what locate
spent, and how deep in each ranking the last of them lies. Then neurons at the last position
(``mlp.hook_post``, layers 20-29 by default, one task) the same way. Timings are ratios
measured in the same process, one after the other.

    .venv/bin/python bench/locate.py        # default: 4 prompts, neurons of layers 20-29
    .venv/bin/python bench/locate.py --prompts 8 --neuron-layers all   # larger

The exact sweeps dominate the run time: one IOI sweep of 8 prompts took 832 s on 2 cores
shared with three other heavy jobs (bench/patching.py: 896 s for 32 prompts on 2 idle
cores), so the default keeps 4 prompts.

Last line: ``speedup=<min over tasks, heads x pos> recall=<min over tasks, heads x pos>``.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers.utils import logging as hf_logging

from modelweave import load_model
from modelweave.engine import base_run
from modelweave.methods import patch_sweep, patch_units
from modelweave.methods.atp_star import atp_star, units_of
from modelweave.methods.locate import locate
from modelweave.metrics.scores import metric_on_last
from modelweave.tasks import make_batch


def recall_at(order, truth: set, budget: int) -> int:
    """How many of ``truth`` are among the first ``budget`` of ``order``."""
    return len(truth & set(order[:budget]))


def exact_effects(model, batch, grid, units) -> dict:
    """Exact effect (patched - base metric) of every unit: the full sweep."""
    names = sorted({f"blocks.{u.layer}.{'mlp.hook_post' if grid == 'neurons' else 'attn.hook_z'}"
                    for u in units})
    _, source = model.run_with_cache(batch.clean, names)
    _, base = base_run(model, batch.corrupt, names)
    base_m = metric_on_last("logit_diff", base.last_logits, batch).mean().item()
    raw = patch_units(model, batch, base, source, grid, units)
    return {u: raw[u] - base_m for u in units}


def compare(model, batch, grid, k, layers=None, positions=None, label="",
            calibrate="tail") -> dict:
    length = batch.clean.shape[1]
    units, _ = units_of(model, grid, length, layers, None, positions)
    start = time.perf_counter()
    if positions is None:
        sweep = patch_sweep(model, batch, grid, layers=layers)
        effects = dict(zip(units, (sweep.raw.flatten() - sweep.corrupt_metric).tolist(),
                           strict=True))
    else:
        effects = exact_effects(model, batch, grid, units)
    sweep_s = time.perf_counter() - start
    truth = set(sorted(effects, key=lambda u: -abs(effects[u]))[:k])
    start = time.perf_counter()
    plain = atp_star(model, batch, grid, layers=layers, positions=positions, qk_fix=False,
                     grad_drop=False)
    atp_s = time.perf_counter() - start
    atp_order = plain.order()
    need_atp = 1 + max(atp_order.index(u) for u in truth)
    rows = {}
    for how in dict.fromkeys([calibrate, "all" if calibrate == "tail" else "tail"]):
        start = time.perf_counter()
        found = locate(model, batch, grid, k=k, layers=layers, positions=positions,
                       calibrate=how)
        locate_s = time.perf_counter() - start
        recall = len(truth & {u for u, _ in found.top})
        star_order = found.estimate.order()
        need_star = 1 + max(star_order.index(u) for u in truth)  # ranks to verify for all k
        b = found.n_exact
        star_r, atp_r = recall_at(star_order, truth, b), recall_at(atp_order, truth, b)
        diff = max(abs(effects[u] - e) for u, e in found.exact.items())
        rows[how] = dict(label=label, units=len(units), sweep_s=sweep_s, locate_s=locate_s,
                         atp_s=atp_s, speedup=sweep_s / locate_s, recall=recall, k=k,
                         n_exact=b, stopped=found.stopped, risk=found.risk)
        print(f"{label} [margin from {how}]: {len(units)} units; sweep {sweep_s:.1f} s, locate "
              f"{locate_s:.1f} s (AtP alone {atp_s:.1f} s) -> speedup "
              f"{sweep_s / locate_s:.1f}x; recall {recall}/{k}; {b} exact patches "
              f"({b / len(units):.1%}), stopped: {found.stopped}, risk {found.risk:.2g}, "
              f"rho {found.rho:.2f}; at budget {b}: AtP* {star_r}/{k}, AtP {atp_r}/{k}; all "
              f"{k} within the first {need_star} of AtP*'s ranking, {need_atp} of AtP's; "
              f"max |locate - sweep| {diff:.1e}", flush=True)
    row = rows[calibrate]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--tasks", default="ioi,seq_digits,entity_tracking")
    parser.add_argument("--neuron-task", default="ioi")
    parser.add_argument("--neuron-layers", default="20-29",
                        help="'all', 'none' or a range a-b (neurons at the last position)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calibrate", choices=["tail", "all"], default="tail",
                        help="locate's margin: from units below the ranking's top k, or all")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    model = load_model("smollm2-135m")
    rows = []
    for task in args.tasks.split(","):
        batch = make_batch(model, task, n=3 * args.prompts, seed=0, same_length=True)
        batch = batch.select(slice(0, args.prompts))
        print(f"{task}: {len(batch)} prompts x {batch.clean.shape[1]} tokens", flush=True)
        rows.append(compare(model, batch, "heads-by-pos", args.k, label=f"{task} heads x pos",
                            calibrate=args.calibrate))
    if args.neuron_layers != "none":
        if args.neuron_layers == "all":
            layers = None
        else:
            a, b = (int(x) for x in args.neuron_layers.split("-"))
            layers = list(range(a, b + 1))
        batch = make_batch(model, args.neuron_task, n=3 * args.prompts, seed=0,
                           same_length=True).select(slice(0, args.prompts))
        last = batch.clean.shape[1] - 1
        compare(model, batch, "neurons", args.k, layers=layers, positions=[last],
                label=f"{args.neuron_task} neurons at the last position",
                calibrate=args.calibrate)
    speedup = min(r["speedup"] for r in rows)
    recall = min(r["recall"] for r in rows) / args.k
    print(f"speedup={speedup:.2f} recall={recall:.2f}")


if __name__ == "__main__":
    main()
