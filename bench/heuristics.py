"""Neuron attribution vs exact patching of the same neurons, in one run.

Arithmetic prompts ``"{x}+{y}="`` (operands 10..99) on the embedded model (or ``--model``),
each with a random same-length counterfactual; the quantity is the Eq. 1 effect of patching one
neuron's activation at the last position from the counterfactual into the clean prompt.
Attribution scores every neuron of the chosen layers from one forward + backward of the clean
prompts and one forward of the counterfactuals; exact patching re-runs the suffix from each
neuron's layer at the last position (the engine's fast path), many neurons per pass. Both are
timed on the same neurons; the rank correlation (Spearman) is over those neurons.

    .venv/bin/python bench/heuristics.py                    # 3 layers x 1536 neurons, 16 prompts
    .venv/bin/python bench/heuristics.py --layers all       # every neuron (about 30 min on 2 cores)

Last line: ``attribution_seconds=<a> exact_seconds=<e> speedup=<e/a> spearman=<r>
top50_overlap=<o> neurons=<n> prompts=<p>``.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers.utils import logging as hf_logging

from modelweave import load_model
from modelweave.analysis.heuristics.neurons import exact_neuron_effects, neuron_attribution
from modelweave.analysis.heuristics.prompts import arithmetic_batch


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation of two [n] tensors (ties broken by position)."""
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=16, help="prompts")
    parser.add_argument("--layers", default="14,20,26", help="comma-separated, or 'all'")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    model = load_model(args.model)
    c = model.cfg
    layers = list(range(c.n_layers)) if args.layers == "all" else [
        int(x) for x in args.layers.split(",")]
    batch = arithmetic_batch(model, "+", op_min=10, op_max=100, n=4 * args.n,
                             require_correct=False, seed=0)
    batch = batch.select(slice(0, args.n))
    neurons = [(L, n) for L in layers for n in range(c.d_mlp)]

    start = time.perf_counter()
    scores = neuron_attribution(model, batch, layers=layers).mean(0)
    attribution_seconds = time.perf_counter() - start
    start = time.perf_counter()
    exact = exact_neuron_effects(model, batch, neurons, max_rows=2048)
    exact_seconds = time.perf_counter() - start

    approx = torch.tensor([float(scores[L, n]) for L, n in neurons])
    rho = spearman(approx, exact)
    top = set(exact.topk(50).indices.tolist()) & set(approx.topk(50).indices.tolist())
    print(f"{len(batch)} prompts x {len(neurons)} neurons (layers {layers})")
    print(f"attribution: {attribution_seconds:.2f} s   exact: {exact_seconds:.2f} s")
    print(f"attribution_seconds={attribution_seconds:.3f} exact_seconds={exact_seconds:.3f} "
          f"speedup={exact_seconds / attribution_seconds:.1f} spearman={rho:.4f} "
          f"top50_overlap={len(top) / 50:.2f} neurons={len(neurons)} prompts={len(batch)}")


if __name__ == "__main__":
    main()
