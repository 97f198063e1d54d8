"""Exact head x position patching on the embedded model: fast engine vs the naive loop.

IOI, 32 prompts of one length, every (layer, head, position) unit, denoising, logit diff.
The naive loop (one full forward pass of the 32 prompts per patch) is timed on a random
sample of units and extrapolated to the grid; on that sample the two must agree to 1e-4.
Where transformer-lens is installed (it is not a dependency), its patching utility is timed
the same way on a TransformerBridge around the same HF model.
FLOPs of the engine are counted analytically from the passes it ran; the matmul peak is
measured in the same run with a 2048 x 2048 fp32 matmul.

    .venv/bin/python bench/patching.py              # whole grid (~10 min on 2 cores)
    .venv/bin/python bench/patching.py --layers 0,10,20 --sample 12
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from transformers.utils import logging as hf_logging

from modelweave import load_model
from modelweave.engine import base_run
from modelweave.engine import suffix as suffix_module
from modelweave.methods import grid_units, naive_patch, patch_units
from modelweave.tasks import make_batch


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """Best observed fp32 matmul FLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def suffix_flops(cfg, rows: int, start_layer: int, start_pos: int, length: int) -> float:
    """Matmul FLOPs of one suffix pass (projections, attention, MLP, unembedding)."""
    s, layers = length - start_pos, cfg.n_layers - start_layer
    qo = 2 * cfg.d_model * cfg.n_heads * cfg.d_head
    kv = 2 * cfg.d_model * cfg.n_kv_heads * cfg.d_head
    mlp = 3 * cfg.d_model * cfg.d_mlp  # gated MLP: gate, up, down
    per_token = 2 * (qo + kv + mlp)
    attention = 2 * 2 * cfg.n_heads * cfg.d_head * s * (start_pos + (s + 1) / 2)
    return rows * (layers * (s * per_token + attention) + 2 * cfg.d_model * cfg.d_vocab)


def transformer_lens_per_unit(model, batch, sample) -> tuple[float, dict] | None:
    """Seconds per unit of TransformerLens's ``get_act_patch_attn_head_out_by_pos`` on the
    same weights (a TransformerBridge around the same HF model), and its raw values; None
    when transformer-lens is not installed."""
    try:
        import pandas as pd
        from transformer_lens import patching as tl_patching
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        return None
    from modelweave.metrics.scores import metric_on_last
    from modelweave.models import embedded

    bridge = TransformerBridge.boot_transformers(str(embedded.cached_dir()),
                                                 hf_model=model.hf_model,
                                                 tokenizer=model.tokenizer, device="cpu")
    _, clean_cache = bridge.run_with_cache(batch.clean)

    def metric(logits):
        return metric_on_last("logit_diff", logits[:, -1], batch).mean()

    index = pd.DataFrame({"layer": [u.layer for u in sample], "pos": [u.pos for u in sample],
                          "head": [u.index for u in sample]})
    start = time.perf_counter()
    with torch.no_grad():
        values = tl_patching.get_act_patch_attn_head_out_by_pos(
            bridge, batch.corrupt, clean_cache, metric, index_df=index, index_axis_names=None)
    per_unit = (time.perf_counter() - start) / len(sample)
    return per_unit, dict(zip(sample, values.flatten().tolist(), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--layers", default=None, help="comma-separated subset of layers")
    parser.add_argument("--sample", type=int, default=24, help="units timed in the naive loop")
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    model = load_model("smollm2-135m")
    batch = make_batch(model, "ioi", n=3 * args.prompts, seed=0, same_length=True)
    batch = batch.select(slice(0, args.prompts))
    length = batch.clean.shape[1]
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    units, _ = grid_units(model, "heads-by-pos", length, layers)
    print(f"{len(batch)} prompts x {length} tokens, {len(units)} units "
          f"(layers {'all' if layers is None else args.layers})")

    flops = 0.0
    original = suffix_module.run_suffix

    def counted(model_, base, layer, pos, groups=1, resid=None):
        nonlocal flops
        flops += suffix_flops(model_.cfg, groups * base.tokens.shape[0], layer, pos,
                              base.length)
        return original(model_, base, layer, pos, groups, resid)

    peak = matmul_peak()
    names = sorted({f"blocks.{u.layer}.attn.hook_z" for u in units})
    start = time.perf_counter()
    _, cache = model.run_with_cache(batch.clean, names)
    _, base = base_run(model, batch.corrupt, names)
    import modelweave.methods.activation_patching as patching

    patching.run_suffix = counted
    try:
        fast = patch_units(model, batch, base, cache, "heads-by-pos", units)
    finally:
        patching.run_suffix = original
    engine_s = time.perf_counter() - start

    sample = random.Random(0).sample(units, min(args.sample, len(units)))
    start = time.perf_counter()
    naive = naive_patch(model, batch, "heads-by-pos", sample)
    per_patch = (time.perf_counter() - start) / len(sample)
    naive_s = per_patch * len(units)
    diff = max(abs(fast[u] - naive[u]) for u in sample)
    achieved = flops / engine_s
    tl = transformer_lens_per_unit(model, batch, sample)
    print(f"engine: {engine_s:.1f} s for the grid ({engine_s / len(units) * 1e3:.1f} ms/unit)")
    print(f"naive:  {per_patch:.3f} s/unit on {len(sample)} units -> {naive_s:.0f} s for the "
          "grid")
    if tl is None:
        print("TransformerLens: not installed (pip install transformer-lens to compare)")
    else:
        tl_s = tl[0] * len(units)
        tl_diff = max(abs(fast[u] - tl[1][u]) for u in sample)
        print(f"TransformerLens patching: {tl[0]:.3f} s/unit -> {tl_s:.0f} s for the grid; "
              f"engine speedup over it {tl_s / engine_s:.2f}x, max abs diff {tl_diff:.2e}")
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s; engine {achieved / 1e9:.1f} GFLOP/s "
          f"({flops / 1e12:.2f} TFLOP)")
    print(f"speedup={naive_s / engine_s:.2f} max_abs_diff={diff:.2e} "
          f"peak_fraction={achieved / peak:.2f}")


if __name__ == "__main__":
    main()
