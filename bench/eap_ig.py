"""EAP-IG over every edge of the embedded model vs the bare passes it needs, in one run.

IOI, 32 prompts, 5 integration steps, logit difference. EAP-IG needs, per batch, two forward
passes (clean and corrupted sender outputs) and ``steps`` forward+backward passes (gradients
at every receiver). The *bare* reference runs exactly those passes on the unhooked HF model:
two ``no_grad`` forwards and ``steps`` forwards with a backward to the input embeddings (the
cheapest backward that reaches every layer). Both use the same batch size; timings alternate
and the best of ``--repeats`` is kept for each.

    .venv/bin/python bench/eap_ig.py
    .venv/bin/python bench/eap_ig.py --n 32 --steps 5 --batch-size 32 --repeats 2

Last line: ``eap_ig_seconds=<t> bare_seconds=<b> ratio=<t/b> edges=<n>``.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers.utils import logging as hf_logging

from modelweave import load_model
from modelweave.circuits import edge_attribution
from modelweave.circuits.eap import chunks
from modelweave.metrics.scores import logit_diff
from modelweave.runtime import keep_freed_memory
from modelweave.tasks import make_batch


def bare_passes(model, batch, steps: int, batch_size: int) -> None:
    """The forward and backward passes EAP-IG needs, without any hooks."""
    hf = model.hf_model
    embed = hf.get_input_embeddings()
    for part in chunks(batch, batch_size):
        with torch.no_grad():
            hf(input_ids=part.clean, attention_mask=part.mask, use_cache=False)
            hf(input_ids=part.corrupt, attention_mask=part.mask, use_cache=False)
        for _ in range(steps):
            inputs = embed(part.clean).detach().requires_grad_(True)
            logits = hf(inputs_embeds=inputs, attention_mask=part.mask, use_cache=False).logits
            value = logit_diff(logits, part).sum()
            torch.autograd.grad(value, inputs)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="ioi")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--glibc-default", action="store_true",
                        help="Leave glibc's allocator as it is (see modelweave.runtime).")
    args = parser.parse_args()
    tuned = not args.glibc_default and keep_freed_memory()
    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    model = load_model("smollm2-135m")
    batch = make_batch(model, args.task, n=args.n, seed=0)
    print(f"model {model.name}: {model.cfg.n_layers} layers x {model.cfg.n_heads} heads; "
          f"task {args.task}: {len(batch)} prompts x {batch.clean.shape[1]} tokens; "
          f"{args.steps} steps; batch size {args.batch_size}; threads "
          f"{torch.get_num_threads()}; freed memory kept: {tuned}")
    eap, bare = [], []
    circuit = None
    for _ in range(args.repeats):
        bare.append(timed(lambda: bare_passes(model, batch, args.steps, args.batch_size)))
        start = time.perf_counter()
        circuit = edge_attribution(model, batch, method="eap-ig", steps=args.steps,
                                   batch_size=args.batch_size)
        eap.append(time.perf_counter() - start)
        print(f"  bare passes {bare[-1]:.2f} s, EAP-IG {eap[-1]:.2f} s")
    t, b = min(eap), min(bare)
    print(f"edges scored: {circuit.graph.n_edges} ({circuit.graph.n_senders} senders x "
          f"{circuit.graph.n_receivers} receivers)")
    print(f"eap_ig_seconds={t:.2f} bare_seconds={b:.2f} ratio={t / b:.3f} "
          f"edges={circuit.graph.n_edges}")


if __name__ == "__main__":
    main()
